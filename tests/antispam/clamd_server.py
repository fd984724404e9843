"""A loopback server speaking clamd's INSTREAM protocol, for tests of antispam.clamd.

It reads `zINSTREAM\\0` (or `nINSTREAM\\n`), then length-prefixed chunks up to a zero length,
as clamd does, and answers `stream: OK`, `stream: NAME FOUND` when the stream contains one of
`signatures` (bytes → name), or `INSTREAM size limit exceeded. ERROR` past `max_stream`.
`delay` holds each verdict back (a slow scanner); `streams` keeps what was scanned.
Over TCP on a free loopback port, or on a UNIX socket path.
"""
import os
import socket
import socketserver
import struct
import threading
import time

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server.owner
        sock = self.request
        sock.settimeout(10)
        command = b""
        while not command.endswith((b"\0", b"\n")):
            more = sock.recv(1)
            if not more:
                return
            command += more
        end = command[-1:]
        name = command[1:-1]
        if name == b"PING":
            sock.sendall(b"PONG" + end)
            return
        if name != b"INSTREAM":
            sock.sendall(b"UNKNOWN COMMAND" + end)
            return
        stream = b""
        while True:
            length = struct.unpack("!I", self._exactly(4))[0]
            if length == 0:
                break
            stream += self._exactly(length)
            if len(stream) > server.max_stream:
                sock.sendall(b"INSTREAM size limit exceeded. ERROR" + end)
                self._drain()  # closing with unread input would reset the connection under the reply
                return
        server.streams.append(stream)
        time.sleep(server.delay)
        for signature, found in server.signatures.items():
            if signature in stream:
                sock.sendall(b"stream: " + found.encode() + b" FOUND" + end)
                return
        sock.sendall(b"stream: OK" + end)

    def _drain(self):
        self.request.shutdown(socket.SHUT_WR)
        self.request.settimeout(2)
        try:
            while self.request.recv(65536):
                pass
        except OSError:
            pass

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            more = self.request.recv(n - len(data))
            if not more:
                raise ConnectionError("stream ended")
            data += more
        return data


class _TCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Unix(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class FakeClamd:
    def __init__(self, *, unix_path=None, signatures=None, max_stream=25 * 1024 * 1024, delay=0.0):
        self.signatures = {EICAR: "Win.Test.EICAR_HDB-1"} if signatures is None else signatures
        self.max_stream = max_stream
        self.delay = delay
        self.streams = []
        if unix_path:
            self._server = _Unix(unix_path, _Handler)
            self.address = unix_path
        else:
            self._server = _TCP(("127.0.0.1", 0), _Handler)
            self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        if isinstance(self._server, _Unix):
            os.unlink(self.address)


def closed_port():
    """A loopback address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"
