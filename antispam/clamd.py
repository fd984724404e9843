"""A ClamAV daemon client: scans a message over clamd's INSTREAM command.

The protocol (ClamAV's clamd(8)): the command `zINSTREAM` ending in NUL, then the bytes in
chunks, each a 4-octet big-endian length and that many octets, then a zero length; clamd
answers one NUL-terminated line: `stream: OK`, `stream: NAME FOUND`, or `… ERROR` (e.g.
`INSTREAM size limit exceeded. ERROR` past its StreamMaxLength).

MAILSUITE_CLAMD is `host:port` ([v6]:port for IPv6) or a UNIX socket path (anything with a
slash). Synchronous, bounded by MAILSUITE_CLAMD_TIMEOUT per socket operation; mta.smtpd
runs it off the event loop. Every failure to get a verdict raises ScannerUnavailable:
the caller must then not deliver (antispam.attachments answers 451).
"""
import re
import socket
import struct
from dataclasses import dataclass

from mailsuite.lib import inline

CHUNK = 64 * 1024
MAX_REPLY = 4096  # a verdict is one short line; a longer reply is not clamd's


class ScannerUnavailable(Exception):
    """No verdict: clamd is down, slow, or answered something we do not understand."""


class TooLarge(Exception):
    """The message is past clamd's StreamMaxLength: it can never be scanned as it is."""


@dataclass(frozen=True)
class Verdict:
    infected: bool
    signature: str = ""


CLEAN = Verdict(False)
_FOUND = re.compile(r"stream: (.+) FOUND\Z")


def parse_address(text):
    """("unix", path) or ("tcp", (host, port)) for a MAILSUITE_CLAMD value; ValueError if neither."""
    text = text.strip()
    if "/" in text:
        return "unix", text
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected host:port or a UNIX socket path")
    return "tcp", (host, int(port))


def _connect(address, timeout):
    inline.must_wait("clamd")
    kind, where = parse_address(address)
    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(where)
            return sock
        return socket.create_connection(where, timeout=timeout)
    except OSError as error:
        raise ScannerUnavailable(f"clamd at {address}: {error}") from None


def parse_reply(reply):
    """The Verdict in clamd's answer to INSTREAM; raises TooLarge or ScannerUnavailable."""
    text = reply.rstrip(b"\0\n").decode("utf-8", "replace").strip()
    if text == "stream: OK":
        return CLEAN
    if found := _FOUND.match(text):
        return Verdict(True, found.group(1))
    if "size limit exceeded" in text:
        raise TooLarge(text)
    raise ScannerUnavailable(f"clamd answered {text[:200]!r}")


def scan(data, *, address, timeout=30.0):
    """Scan `data` (bytes) with the clamd at `address`: a Verdict."""
    with _connect(address, timeout) as sock:
        try:
            sock.sendall(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                chunk = view[start:start + CHUNK]
                sock.sendall(struct.pack("!I", len(chunk)) + chunk)
            sock.sendall(struct.pack("!I", 0))
        except OSError as error:
            # clamd stops reading when a stream passes its size limit, answers, and closes:
            # its reply may be waiting all the same.
            reply = _leftover(sock)
            if not reply:
                raise ScannerUnavailable(f"clamd at {address}: {error}") from None
        else:
            reply = _reply(sock, address)
    if not reply:
        raise ScannerUnavailable(f"clamd at {address} closed without a verdict")
    return parse_reply(reply)


def _reply(sock, address):
    reply = b""
    try:
        while not reply.endswith((b"\0", b"\n")) and len(reply) < MAX_REPLY:
            more = sock.recv(MAX_REPLY)
            if not more:
                break
            reply += more
    except OSError as error:
        raise ScannerUnavailable(f"clamd at {address}: {error}") from None
    return reply


def _leftover(sock):
    try:
        sock.settimeout(1.0)
        return sock.recv(MAX_REPLY)
    except OSError:
        return b""


def ping(*, address, timeout=5.0):
    """True if clamd answers PONG."""
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(b"zPING\0")
            return sock.recv(64).rstrip(b"\0\n") == b"PONG"
    except (OSError, ScannerUnavailable):
        return False
