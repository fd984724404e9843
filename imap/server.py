"""The IMAP listeners: asyncio streams, TLS, COMPRESS=DEFLATE, change notifications.

Implementation notes
- One coroutine per connection, no thread: thousands of idle sessions cost their
  buffers only. ORM work goes to the database thread pool (mailsuite.lib.aio.run_sync).
- `Connection` is the byte pipe under a session: line and literal reads with hard
  limits, buffered writes, STARTTLS (RFC 9051 §6.2.1: whatever the client sent after the
  command, before the handshake, is thrown away) and DEFLATE (RFC 4978) in both
  directions. Nothing above it sees raw sockets.
- The process subscribes once to the mail store's change bus; `Notifier` hands each
  change to the sessions watching that account, on the event loop. A change only wakes
  a session; the session re-reads what changed from the database (events are hints).
"""
import asyncio
import logging
import ssl
import zlib
from dataclasses import dataclass

from django.conf import settings

from imap import mailbox
from mailsuite.lib import proxyprotocol
from mailsuite.lib.aio import run_sync
from mailsuite.lib.net import listening_socket
from mailsuite.lib.tls import TLSContextProvider, ensure_certificate
from ops import metrics

log = logging.getLogger("mailsuite.imap")

READ_CHUNK = 64 * 1024


class ConnectionClosed(Exception):
    """The client went away (EOF, reset, TLS failure)."""


class LineTooLong(Exception):
    """A line longer than the limit; the rest of it has been discarded."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool):
        self.reader = reader
        self.writer = writer
        self.tls = tls
        self.peer = (writer.get_extra_info("peername") or ("?", 0))[0]
        self._buffer = bytearray()
        self._out = []
        self._out_size = 0
        self._inflate = None
        self._deflate = None

    @property
    def compressed(self):
        return self._deflate is not None

    # --- reading ---------------------------------------------------------------------

    async def _fill(self):
        chunk = b""
        while not chunk:
            try:
                raw = await self.reader.read(READ_CHUNK)
            except (ConnectionError, ssl.SSLError, OSError) as error:
                raise ConnectionClosed(str(error)) from None
            if not raw:
                raise ConnectionClosed("end of stream")
            if self._inflate is None:
                chunk = raw
            else:
                try:
                    chunk = self._inflate.decompress(raw)
                except zlib.error:
                    raise ConnectionClosed("bad deflate stream") from None
        self._buffer += chunk

    async def readline(self, limit: int) -> bytes:
        """One line with its CRLF (a bare LF is accepted); LineTooLong past `limit`."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                if end + 1 > limit:
                    del self._buffer[: end + 1]
                    raise LineTooLong()
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                if not line.endswith(b"\r\n"):
                    line = line[:-1] + b"\r\n"
                return line
            if len(self._buffer) > limit:
                await self._discard_line()
                raise LineTooLong()
            start = len(self._buffer)
            await self._fill()

    async def _discard_line(self):
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                del self._buffer[: end + 1]
                return
            self._buffer.clear()
            await self._fill()

    async def readexactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def discard(self, size: int):
        while size > 0:
            if not self._buffer:
                await self._fill()
            taken = min(size, len(self._buffer))
            del self._buffer[:taken]
            size -= taken

    # --- writing ---------------------------------------------------------------------

    def write(self, data: bytes):
        self._out.append(data)
        self._out_size += len(data)

    @property
    def pending(self) -> int:
        return self._out_size

    def _discard_output(self):
        self._out.clear()
        self._out_size = 0

    def _take_output(self) -> bytes:
        data = b"".join(self._out)
        self._discard_output()
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        return data

    async def flush(self):
        if not self._out:
            return
        # A closing transport drops what it is given; asyncio's TLS transport, once closed
        # twice, even raises AttributeError. Either way the client is gone for us.
        if self.writer.transport.is_closing():
            self._discard_output()
            raise ConnectionClosed("connection closed")
        data = self._take_output()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError, OSError, RuntimeError) as error:
            raise ConnectionClosed(str(error)) from None

    # --- layers ----------------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext):
        self._buffer.clear()  # RFC 9051 §6.2.1: nothing sent before the handshake counts
        try:
            await self.writer.start_tls(context)
        except (ConnectionError, ssl.SSLError, OSError) as error:
            raise ConnectionClosed(f"TLS handshake failed: {error}") from None
        self.tls = True

    def start_compress(self):
        """RFC 4978 §3: raw DEFLATE (no zlib header) both ways from the next octet on."""
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        # Octets already buffered arrived compressed.
        if self._buffer:
            pending = bytes(self._buffer)
            self._buffer.clear()
            try:
                self._buffer += self._inflate.decompress(pending)
            except zlib.error:
                raise ConnectionClosed("bad deflate stream") from None

    def close(self, farewell: bytes = b""):
        """Close once (closing asyncio's TLS transport a second time breaks it). Output not
        yet flushed may end mid-response and is dropped; `farewell` (a BYE) is sent, as the
        transport sends its buffer before it closes."""
        if self.writer.transport.is_closing():
            return
        self._discard_output()
        try:
            if farewell:
                self.write(farewell)
                self.writer.write(self._take_output())
            self.writer.close()
        except Exception:  # already gone
            pass


class Notifier:
    """Wakes the sessions of an account when the mail store reports a change."""

    def __init__(self, loop):
        self.loop = loop
        self.watchers = {}  # account id -> set of sessions
        self.prewarming = set()  # folder ids being read ahead (imap.mailbox.prewarm)
        self._unsubscribe = None

    def start(self):
        from mailstore import events

        self._unsubscribe = events.subscribe(self._from_bus)

    def stop(self):
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None

    def _from_bus(self, change):  # runs on the bus's thread
        if change.kind == "opened":  # another worker read a large folder: read it too
            self.loop.call_soon_threadsafe(self._prewarm, change.folder_id)
        elif change.account_id in self.watchers:
            self.loop.call_soon_threadsafe(self._dispatch, change)

    def _prewarm(self, folder_id):
        if folder_id in self.prewarming:
            return
        self.prewarming.add(folder_id)
        task = asyncio.ensure_future(run_sync(mailbox.prewarm, folder_id))
        task.add_done_callback(lambda done: self._prewarmed(folder_id, done))

    def _prewarmed(self, folder_id, task):
        self.prewarming.discard(folder_id)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not read folder %s ahead of its opening", folder_id, exc_info=task.exception())

    def _dispatch(self, change):
        for session in list(self.watchers.get(change.account_id, ())):
            session.notify(change)

    def watch(self, account_id, session):
        self.watchers.setdefault(account_id, set()).add(session)

    def unwatch(self, account_id, session):
        sessions = self.watchers.get(account_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.watchers[account_id]


@dataclass
class Listener:
    host: str
    port: int
    name: str = "imap"
    implicit_tls: bool = False
    reuse_port: bool = False


class IMAPService:
    """The IMAP and IMAPS listeners of one process and their sessions."""

    def __init__(self, *, tls: TLSContextProvider | None = None, max_connections=None):
        if tls is None:
            ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
            tls = TLSContextProvider(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY)
        self.tls = tls
        self.max_connections = max_connections or settings.MAILSUITE_IMAP_MAX_CONNECTIONS
        self.sessions = set()
        self.servers = []
        self.notifier = None

    async def listen(self, listener: Listener) -> int:
        loop = asyncio.get_running_loop()
        if self.notifier is None:
            self.notifier = Notifier(loop)
            self.notifier.start()
        sock = listening_socket(listener.host, listener.port, reuse_port=listener.reuse_port)
        context = self.tls.listener_context() if listener.implicit_tls else None

        async def accept(reader, writer):
            metrics.connection("imaps" if listener.implicit_tls else "imap")
            await self._serve(reader, writer, implicit_tls=listener.implicit_tls)

        def streams():  # what asyncio.start_server makes per connection
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=READ_CHUNK, loop=loop), accept, loop=loop)

        server = await proxyprotocol.serve(streams, sock, ssl=context)
        self.servers.append(server)
        port = sock.getsockname()[1]
        log.info("%s listening on %s:%d", listener.name, listener.host, port)
        return port

    async def _serve(self, reader, writer, *, implicit_tls):
        from imap.session import Session

        connection = Connection(reader, writer, tls=implicit_tls)
        if len(self.sessions) >= self.max_connections:
            connection.write(b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
            try:
                await connection.flush()
            except ConnectionClosed:
                pass
            connection.close()
            return
        session = Session(connection, service=self)
        session.task = asyncio.current_task()
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            connection.close()

    async def close(self):
        for server in self.servers:
            server.close()
        sessions = list(self.sessions)
        for session in sessions:
            session.shutdown()
        tasks = [s.task for s in sessions if s.task is not None]
        if tasks:
            # Each session says BYE at its next step; the stragglers are cancelled.
            done, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()
        if self.notifier is not None:
            self.notifier.stop()
