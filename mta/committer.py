"""The commit service: one process that stores what every SMTP worker process accepts.

SMTP worker processes (runsmtp --workers N) speak SMTP and check recipients; each
message they receive comes here over a Unix socket with its envelope. This process
writes the bytes durably and stores the rows with mta.inbound.accept(), as many
messages per transaction as are waiting, and answers each with its SMTP reply.

Why a process of its own: with every worker committing for itself, the thread that
held the database's write lock (or the PostgreSQL row locks of a busy mailbox) had
to win the GIL back from its own event loop at every step, which stretched each
transaction several times over while the other workers waited. Here one thread
does nothing but commit, so the lock is held for as short a time as the work takes,
and batches are as large as all workers together make them.

Implementation notes:
- Frames are a 4-byte big-endian length and a pickle of (request id, payload). Both
  ends are this program, talking over a socket in the data dir that only its user
  may open; nothing else is ever unpickled.
- A worker whose committer is unreachable answers 451 (try again later): nothing
  is acknowledged that was not committed.
"""
import asyncio
import logging
import os
import pickle
import selectors
import signal
import socket
import struct

from django.db import close_old_connections

from mta import inbound

log = logging.getLogger(__name__)
_LENGTH = struct.Struct(">I")
MAX_BATCH = 256
MAX_FRAME = 256 * 1024 * 1024


def encode(request_id, payload):
    body = pickle.dumps((request_id, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def _frames(buffer):
    """Complete frames at the front of `buffer` (a bytearray), removed from it."""
    while len(buffer) >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(buffer)
        if length > MAX_FRAME:
            raise ValueError(f"frame of {length} bytes")
        if len(buffer) < _LENGTH.size + length:
            return
        body = bytes(buffer[_LENGTH.size : _LENGTH.size + length])
        del buffer[: _LENGTH.size + length]
        yield pickle.loads(body)


class CommitServer:
    def __init__(self, path):
        self.path = path
        self.selector = selectors.DefaultSelector()
        self.buffers = {}
        self.stopping = False

    def _listen(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        self.selector.register(listener, selectors.EVENT_READ, None)
        log.info("commit service listening on %s", self.path)

    def _drop(self, conn):
        self.selector.unregister(conn)
        self.buffers.pop(conn, None)
        conn.close()

    def _read(self, conn, requests):
        try:
            data = conn.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buffer = self.buffers[conn]
        buffer += data
        try:
            for request_id, request in _frames(buffer):
                requests.append((conn, request_id, request))
        except Exception:
            log.exception("unreadable request from an SMTP worker; dropping its connection")
            self._drop(conn)

    def serve_forever(self, *, handle_signals=True):
        self._listen()
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: setattr(self, "stopping", True))
        while not self.stopping:
            requests = []
            # Gather everything that is ready now: that is the next batch.
            for key, _ in self.selector.select(timeout=0.5):
                if key.data is None:
                    conn, _ = key.fileobj.accept()
                    conn.settimeout(30)
                    self.buffers[conn] = bytearray()
                    self.selector.register(conn, selectors.EVENT_READ, "worker")
                else:
                    self._read(key.fileobj, requests)
            for start in range(0, len(requests), MAX_BATCH):
                self._commit(requests[start : start + MAX_BATCH])
        self.selector.close()
        log.info("commit service stopped")

    def _commit(self, requests):
        close_old_connections()
        try:
            replies = inbound.accept([request for _, _, request in requests])
        except Exception:
            log.exception("commit of %d messages failed", len(requests))
            replies = ["451 4.3.0 Local error in processing; try again later"] * len(requests)
        for (conn, request_id, _), reply in zip(requests, replies):
            try:
                conn.sendall(encode(request_id, reply))
            except OSError:
                log.warning("an SMTP worker went away before its reply")
                if conn in self.buffers:
                    self._drop(conn)


class RemoteCommitter:
    """A worker's side: submit(request) returns the reply, like aio.GroupCommit."""

    UNAVAILABLE = "451 4.3.0 Service not available; try again later"

    def __init__(self, path, *, retry_delays=(0.1, 0.2, 0.5, 1, 2, 2)):
        self.path = path
        self.retry_delays = retry_delays  # how long to wait for a (re)starting service
        self.writer = None
        self.waiting = {}
        self.next_id = 0
        self.connecting = None

    async def _connection(self):
        if self.writer is not None and not self.writer.is_closing():
            return self.writer
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(asyncio.open_unix_connection(self.path))
        try:
            reader, writer = await asyncio.shield(self.connecting)
        finally:
            self.connecting = None
        if self.writer is None or self.writer.is_closing():
            self.writer = writer
            asyncio.ensure_future(self._read_replies(reader, writer))
        return self.writer

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            await asyncio.sleep(0)  # let the reply reader see the end and clean up

    async def _read_replies(self, reader, writer):
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                buffer += data
                for request_id, reply in _frames(buffer):
                    future = self.waiting.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)
        except (OSError, ValueError):
            log.warning("connection to the commit service failed", exc_info=True)
        finally:
            writer.close()
            if self.writer is writer:
                self.writer = None
            # Whatever was in flight on this connection may or may not be stored:
            # the client is told to try again (a duplicate beats a loss).
            for future in self.waiting.values():
                if not future.done():
                    future.set_result(self.UNAVAILABLE)
            self.waiting.clear()

    async def submit(self, request):
        for delay in (*self.retry_delays, 0):
            try:
                writer = await self._connection()
                break
            except OSError:
                if not delay:
                    log.error("commit service at %s is not reachable", self.path)
                    return self.UNAVAILABLE
                await asyncio.sleep(delay)
        self.next_id += 1
        request_id = self.next_id
        future = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        writer.write(encode(request_id, request))
        await writer.drain()
        return await future


def socket_path(data_dir, port):
    """Where the commit service of the SMTP listener on `port` listens.

    Under the data dir when the path fits a Unix socket address (108 bytes), else in
    a private directory under /tmp named after the data dir.
    """
    path = os.path.join(data_dir, "run", f"smtp-commit-{port}.sock")
    if len(path.encode()) < 100:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    directory = os.path.join(tempfile.gettempdir(), f"mailsuite-{os.getuid()}-{digest}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"smtp-commit-{port}.sock")
