"""The transport under line-based protocol servers (POP3, ManageSieve): asyncio
protocols that frame lines and literals for a session, STARTTLS, and the listening
sockets with their connection caps.

Implementation notes
- One `LineConnection` (an asyncio.Protocol) per client gives its session lines and
  literals and writes its replies. Lines are bounded: a longer one raises LineTooLong and
  is discarded up to its line end. Reading pauses while more than `max_buffered` octets
  wait unread (a client pipelining without reading replies), and a session waits for the
  client to take its replies before reading more.
- STARTTLS/STLS: the protocol writes its OK, then calls start_tls() with no read in
  between; whatever the client sent after the command in plaintext is discarded, so
  nothing sent before TLS can pass for a command sent inside it. The certificate is the
  current one of mailsuite.lib.tls.TLSContextProvider: a renewed one needs no restart.
- Bounded: connections per process and per client IP, handshake time, idle time (the
  session's timers), time a client may take to read our replies.
"""
import asyncio
import collections
import logging
from dataclasses import dataclass

from mailsuite.lib import proxyprotocol
from mailsuite.lib.net import is_loopback, listening_socket
from ops import metrics

log = logging.getLogger(__name__)

TLS_HANDSHAKE_SECONDS = 30.0


class ConnectionClosed(Exception):
    """The client went away (or we closed the connection)."""


class IdleTimeout(Exception):
    """A session timer expired while waiting for the client."""


class LineTooLong(Exception):
    """A line longer than allowed; the connection has discarded it."""


class LineConnection(asyncio.Protocol):
    """The channel a session talks through. Subclasses say how a refused connection is
    answered (`refusal`); the service makes the session (`session_for`)."""

    max_buffered = 64 * 1024

    def __init__(self, service):
        self.service = service
        self.transport = None
        self.peer_ip = "unknown"
        self.is_tls = False
        self._buffer = bytearray()
        self._discarding = False  # inside a line that was too long
        self._data = asyncio.Event()
        self._closed = False
        self._paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.task = None

    def refusal(self, reason) -> bytes:
        raise NotImplementedError

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else "unknown"
        self.is_tls = transport.get_extra_info("ssl_object") is not None
        metrics.connection(self.service.protocol)  # pop3 or managesieve
        reason = self.service.admit(self)
        if reason:
            transport.write(self.refusal(reason))
            transport.close()
            self._closed = True
            return
        self.task = asyncio.ensure_future(self._serve())

    def data_received(self, data):
        self._buffer += data
        if len(self._buffer) > self.max_buffered and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._data.set()

    def eof_received(self):
        self._closed = True
        self._data.set()
        return False

    def connection_lost(self, error):
        self._closed = True
        self._data.set()
        self._can_write.set()

    def pause_writing(self):
        self._can_write.clear()

    def resume_writing(self):
        self._can_write.set()

    # --- The channel --------------------------------------------------------------------

    @property
    def is_loopback(self):
        return is_loopback(self.peer_ip)

    @property
    def tls_available(self):
        return self.service.tls is not None

    async def _wait(self, deadline):
        loop = asyncio.get_running_loop()
        self._resume()
        if self._closed:
            raise ConnectionClosed()
        self._data.clear()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise IdleTimeout()
        try:
            await asyncio.wait_for(self._data.wait(), remaining)
        except asyncio.TimeoutError:
            raise IdleTimeout() from None

    async def read_line(self, limit, timeout):
        """The next line, CRLF included; raises LineTooLong, IdleTimeout or ConnectionClosed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            end = self._buffer.find(b"\n")
            if self._discarding:
                if end < 0:
                    self._buffer.clear()
                else:
                    del self._buffer[: end + 1]
                    self._discarding = False
                    continue
            elif end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                self._resume()
                if len(line) > limit:
                    raise LineTooLong()
                return line
            elif len(self._buffer) >= limit:
                self._buffer.clear()
                self._discarding = True
                self._resume()
                raise LineTooLong()
            await self._wait(deadline)

    async def read_exact(self, count, timeout):
        """The next `count` octets (a literal's content)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self._buffer) < count:
            if len(self._buffer) > self.max_buffered // 2 and self._paused:
                self._paused = False
                self.transport.resume_reading()
            await self._wait(deadline)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._resume()
        return data

    def _resume(self):
        if self._paused and len(self._buffer) <= self.max_buffered // 2 and not self._closed:
            self._paused = False
            self.transport.resume_reading()

    def write(self, data):
        if not self._closed:
            self.transport.write(data)

    async def drain(self, timeout):
        """Wait until the client takes our replies (flow control); IdleTimeout if it never does."""
        if self._closed:
            raise ConnectionClosed()
        if self._can_write.is_set():
            return
        try:
            await asyncio.wait_for(self._can_write.wait(), timeout)
        except asyncio.TimeoutError:
            raise IdleTimeout() from None
        if self._closed:
            raise ConnectionClosed()

    async def start_tls(self):
        """Upgrade to TLS after the protocol's OK already written."""
        self._buffer.clear()  # plaintext sent after the command must not count as sent inside TLS
        self._discarding = False
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport, self, self.service.tls.current(), server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS,
            )
        except (OSError, ConnectionError, asyncio.TimeoutError) as error:
            log.info("%s TLS handshake failed ip=%s: %s", self.service.protocol, self.peer_ip, error.__class__.__name__)
            self._closed = True
            self.transport.abort()
            raise ConnectionClosed() from None
        if transport is None:
            raise ConnectionClosed()
        self.transport = transport
        self.is_tls = True

    def close(self):
        self._closed = True
        self._data.set()
        self._can_write.set()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _serve(self):
        try:
            await self.service.session_for(self).run()
        except Exception:
            log.exception("%s session failed ip=%s", self.service.protocol, self.peer_ip)
        finally:
            self.close()
            self.service.leave(self)


@dataclass
class Listener:
    host: str
    port: int
    name: str = ""
    reuse_port: bool = False


class LineService:
    """The listening sockets of one port and the connections on them. Subclasses set
    `protocol` (for logs) and `connection_class`, and make sessions (`session_for`)."""

    protocol = ""
    connection_class = LineConnection

    def __init__(self, *, tls=None, max_connections=1000, max_connections_per_ip=50, open_per_ip=None):
        self.tls = tls
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        # May be shared by the services of one process, so the per-IP cap counts every port.
        self.open_per_ip = open_per_ip if open_per_ip is not None else collections.Counter()
        self.connections = set()
        self.servers = []

    def session_for(self, connection):
        raise NotImplementedError

    def listener_ssl(self):
        """The SSL context of an implicit-TLS port, or None."""
        return None

    def farewell(self):
        """What a session still open hears when the server stops, or None."""
        return None

    def admit(self, connection):
        """None if the connection may proceed, else the reason it is refused."""
        if len(self.connections) >= self.max_connections:
            return "Too many connections; try again later"
        if self.open_per_ip[connection.peer_ip] >= self.max_connections_per_ip:
            return "Too many connections from your address"
        self.connections.add(connection)
        self.open_per_ip[connection.peer_ip] += 1
        return None

    def leave(self, connection):
        if connection in self.connections:
            self.connections.discard(connection)
            self.open_per_ip[connection.peer_ip] -= 1
            if self.open_per_ip[connection.peer_ip] <= 0:
                del self.open_per_ip[connection.peer_ip]

    async def listen(self, listener):
        sock = listening_socket(listener.host, listener.port, reuse_port=listener.reuse_port)
        ssl_context = self.listener_ssl()
        server = await proxyprotocol.serve(
            lambda: self.connection_class(self), sock, ssl=ssl_context, ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS,
        )
        self.servers.append(server)
        port = sock.getsockname()[1]
        log.info("%s listening on %s:%d", listener.name, listener.host, port)
        return port

    async def close(self):
        """Stop listening and end the sessions still open."""
        for server in self.servers:
            server.close()
        tasks = [connection.task for connection in list(self.connections) if connection.task is not None]
        farewell = self.farewell()
        for connection in list(self.connections):
            if farewell:
                connection.write(farewell)
            connection.close()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for server in self.servers:
            await server.wait_closed()
