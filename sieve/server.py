"""The ManageSieve server (RFC 5804): asyncio transports, line and literal framing, STARTTLS.

Implementation notes
--------------------
- One `Connection` (an asyncio.Protocol) per client gives its Session (sieve.session)
  lines and literals and writes its replies. Lines are bounded: a longer one is
  answered NO and discarded up to its line end. Reading pauses while more than
  MAX_BUFFERED_OCTETS wait unread, and a session waits for the client to take its
  replies before reading more.
- STARTTLS (RFC 5804 §2.2): the OK is written and the handshake started with no
  command read in between, and whatever the client sent after STARTTLS in plaintext
  is discarded, so nothing sent before TLS can pass for a command sent inside it.
  The certificate is the current one of mailsuite.lib.tls.TLSContextProvider.
- Bounded: connections per process and per client IP, handshake time, idle time (the
  session's timers), time a client may take to read our replies.
- close() stops listening and ends every session.
"""
import asyncio
import collections
import logging
import socket
from dataclasses import dataclass

from mailsuite.lib.net import is_loopback
from sieve.protocol import bye
from sieve.session import ConnectionClosed, IdleTimeout, LineTooLong, Options, Session

log = logging.getLogger(__name__)

MAX_BUFFERED_OCTETS = 512 * 1024
TLS_HANDSHAKE_SECONDS = 30.0


class Connection(asyncio.Protocol):
    """The channel a Session talks through (see Session's docstring)."""

    def __init__(self, service):
        self.service = service
        self.transport = None
        self.peer_ip = "unknown"
        self.is_tls = False
        self._buffer = bytearray()
        self._discarding = False
        self._data = asyncio.Event()
        self._closed = False
        self._paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.task = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if isinstance(peer, tuple) else "unknown"
        self.is_tls = transport.get_extra_info("ssl_object") is not None
        refusal = self.service.admit(self)
        if refusal:
            transport.write(bye(refusal, "TRYLATER"))
            transport.close()
            self._closed = True
            return
        self.task = asyncio.ensure_future(self._serve())

    def data_received(self, data):
        self._buffer += data
        if len(self._buffer) > MAX_BUFFERED_OCTETS and not self._paused:
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

    # --- The channel --------------------------------------------------------------------------

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
            if len(self._buffer) > MAX_BUFFERED_OCTETS // 2 and self._paused:
                self._paused = False
                self.transport.resume_reading()
            await self._wait(deadline)
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._resume()
        return data

    def _resume(self):
        if self._paused and len(self._buffer) <= MAX_BUFFERED_OCTETS // 2 and not self._closed:
            self._paused = False
            self.transport.resume_reading()

    def write(self, data):
        if not self._closed:
            self.transport.write(data)

    async def drain(self, timeout):
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
        """Upgrade to TLS (RFC 5804 §2.2) after the OK already written."""
        self._buffer.clear()  # plaintext sent after STARTTLS must not count as commands inside TLS
        self._discarding = False
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport, self, self.service.tls.current(), server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS,
            )
        except (OSError, ConnectionError, asyncio.TimeoutError) as error:
            log.info("managesieve STARTTLS handshake failed ip=%s: %s", self.peer_ip, error.__class__.__name__)
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
            await Session(self, self.service.options).run()
        except Exception:
            log.exception("managesieve session failed ip=%s", self.peer_ip)
        finally:
            self.close()
            self.service.leave(self)


@dataclass
class Listener:
    host: str
    port: int
    name: str = "managesieve"
    reuse_port: bool = False


class ManageSieveService:
    """The listening socket(s) of the ManageSieve port. `tls` is a TLSContextProvider
    (STARTTLS), or None for a server without TLS (logins then only from loopback clients
    when `plaintext_loopback` is on)."""

    def __init__(self, *, hostname, tls=None, plaintext_loopback=False, max_connections=1000,
                 max_connections_per_ip=20, autologout=30 * 60.0, preauth_timeout=120.0):
        self.tls = tls
        self.options = Options(
            hostname=hostname, autologout=autologout, preauth_timeout=preauth_timeout,
            plaintext_loopback=plaintext_loopback,
        )
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.open_per_ip = collections.Counter()
        self.connections = set()
        self.servers = []

    def admit(self, connection):
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
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
        # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if listener.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.host, listener.port))
        sock.setblocking(False)
        server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=256)
        self.servers.append(server)
        port = sock.getsockname()[1]
        log.info("%s listening on %s:%d", listener.name, listener.host, port)
        return port

    async def close(self):
        for server in self.servers:
            server.close()
        tasks = [c.task for c in list(self.connections) if c.task is not None]
        for connection in list(self.connections):
            connection.write(bye("Server shutting down", "TRYLATER"))
            connection.close()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for server in self.servers:
            await server.wait_closed()
