"""The PROXY protocol (HAProxy's "PROXY protocol" spec, versions 1 and 2): a load balancer
in TCP mode says, before the client's first byte, which address the client connected from.

MAILSUITE_PROXY_PROTOCOL_FROM lists the balancers' networks (empty: off, the default). Every
listener (SMTP, submission, SMTPS, IMAP, IMAPS, POP3, POP3S, ManageSieve) then accepts its
connections through serve() here:
- from a listed network, the header is required (the spec: a receiver must never guess
  whether one is present); a malformed, oversized or late header closes the connection.
  The client address it names is what the server sees as the peer (`peername`), so SPF,
  block lists, greylisting, login throttling, connection caps and logs judge the client,
  not the balancer. A LOCAL (v2) or UNKNOWN (v1) header, the balancer's own health check,
  keeps the balancer's address.
- from anywhere else, a connection whose first bytes are a PROXY header is closed: nobody
  but a listed balancer may claim another address. Other connections are served as usual.

Implementation notes:
- parse() is a pure function over bytes; the I/O side peeks at the socket (MSG_PEEK) and
  then takes exactly the header's bytes, so what follows it (a TLS ClientHello, a pipelined
  command) stays in the socket for the server.
- The header comes before TLS, so implicit-TLS ports read it first and then hand the socket
  to asyncio with the TLS context (loop.connect_accepted_socket).
"""
import asyncio
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/protocol, length
V2_MAX = 4096  # addresses plus TLVs we are willing to read (haproxy sends far less)
HEADER_SECONDS = 10.0  # a balancer sends its header at once


class ProxyProtocolError(Exception):
    """A malformed header: the connection is closed."""


@dataclass(frozen=True)
class Header:
    length: int  # octets the header took
    source: tuple | None  # (ip, port) of the client, or None: keep the connection's own address
    destination: tuple | None = None


def _address(text, family):
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(f"bad address {text[:45]!r}") from None
    if address.version != family:
        raise ProxyProtocolError(f"{address} is not an IPv{family} address")
    return str(address)


def _port(text):
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text.startswith(b"0")) or int(text) > 65535:
        raise ProxyProtocolError(f"bad port {text[:6]!r}")
    return int(text)


def _parse_v1(buf):
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX or b"\n" in buf[:V1_MAX]:
            raise ProxyProtocolError("v1 header without CRLF within 107 octets")
        return None
    parts = buf[:end].split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        return Header(length=end + 2, source=None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("v1 header is not PROXY TCP4|TCP6 SRC DST SPORT DPORT")
    family = 4 if parts[1] == b"TCP4" else 6
    source = (_address(parts[2], family), _port(parts[4]))
    destination = (_address(parts[3], family), _port(parts[5]))
    return Header(length=end + 2, source=source, destination=destination)


def _parse_v2(buf):
    if len(buf) < V2_FIXED:
        return None
    version_command, family_protocol, length = buf[12], buf[13], struct.unpack_from(">H", buf, 14)[0]
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"v2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"v2 header with command {command}")
    if length > V2_MAX:
        raise ProxyProtocolError(f"v2 header of {length} octets")
    if len(buf) < V2_FIXED + length:
        return None
    total = V2_FIXED + length
    body = buf[V2_FIXED:total]
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return Header(length=total, source=None)
    family, transport = family_protocol >> 4, family_protocol & 0x0F
    if transport != 1 or family not in (1, 2):  # not TCP over IPv4/IPv6: the spec says use the real address
        return Header(length=total, source=None)
    size = 4 if family == 1 else 16
    if len(body) < 2 * size + 4:
        raise ProxyProtocolError("v2 header too short for its addresses")
    source_ip = ipaddress.ip_address(body[:size])
    destination_ip = ipaddress.ip_address(body[size : 2 * size])
    source_port, destination_port = struct.unpack_from(">HH", body, 2 * size)
    return Header(length=total, source=(str(source_ip), source_port),
                  destination=(str(destination_ip), destination_port))


def parse(buf):
    """The header at the start of `buf` (bytes), None if more octets are needed;
    ProxyProtocolError if `buf` does not start with a valid header."""
    buf = bytes(buf)
    if len(buf) < len(V2_SIGNATURE) and V2_SIGNATURE.startswith(buf):
        return None
    if buf.startswith(V2_SIGNATURE):
        return _parse_v2(buf)
    if len(buf) < len(V1_PREFIX) and V1_PREFIX.startswith(buf):
        return None
    if buf.startswith(V1_PREFIX):
        return _parse_v1(buf)
    raise ProxyProtocolError("no PROXY protocol header")


def looks_like_header(first_bytes):
    """True when a connection's first bytes are (the start of) a PROXY header."""
    return bool(first_bytes) and (first_bytes.startswith(V1_PREFIX) or first_bytes.startswith(V2_SIGNATURE[:8]))


# The I/O side --------------------------------------------------------------------------


class ProxiedSocket(socket.socket):
    """An accepted connection as the server should see it: `peer` is the client the balancer
    spoke for (getpeername(), so every transport's `peername` is it); and for a connection
    not from a balancer, a PROXY header as its first bytes ends it."""

    _peer = None
    _guard = False

    def _setup(self, peer, guard):
        self._peer = peer
        self._guard = guard

    @classmethod
    def adopt(cls, sock, *, peer=None, guard=False):
        adopted = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        adopted.setblocking(False)
        adopted._setup(peer, guard)
        return adopted

    def getpeername(self):
        return self._peer if self._peer is not None else super().getpeername()

    def _check(self, data):
        if self._guard and data:
            self._guard = False
            if looks_like_header(bytes(data[:12])):
                log.info("PROXY header from %s, not a trusted proxy: connection closed", super().getpeername()[0])
                raise ConnectionResetError("PROXY header from an untrusted address")
        return data

    def recv(self, *args, **kwargs):
        return self._check(super().recv(*args, **kwargs))

    def recv_into(self, buffer, *args, **kwargs):
        count = super().recv_into(buffer, *args, **kwargs)
        if self._guard and count:
            self._check(bytes(memoryview(buffer)[: min(count, 12)]))
        return count


def is_trusted(ip, networks):
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return any((mapped or address) in network for network in networks)


async def _readable(loop, sock):
    waiter = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: waiter.done() or waiter.set_result(None))
    try:
        await waiter
    finally:
        loop.remove_reader(sock.fileno())


async def read_header(loop, sock):
    """Take the PROXY header off `sock` (non-blocking, just accepted); returns the Header.
    Raises ProxyProtocolError (malformed, closed early) or asyncio.TimeoutError."""
    while True:
        try:
            peeked = sock.recv(V2_FIXED + V2_MAX, socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        if not peeked:
            raise ProxyProtocolError("closed before the PROXY header ended")
        header = parse(peeked)
        if header is not None:
            taken = b""
            while len(taken) < header.length:  # all in the socket already: we peeked at it
                taken += sock.recv(header.length - len(taken))
            return header
        # Part of a header: the socket stays readable with it unread, so wait a little for the rest.
        await asyncio.sleep(0.02)


class ProxyServer:
    """What asyncio's Server offers the services here (close, wait_closed), for a listener
    whose connections may come through a balancer speaking the PROXY protocol."""

    def __init__(self, loop, factory, sock, *, trusted, ssl=None, ssl_handshake_timeout=None, backlog=1024):
        self.loop = loop
        self.factory = factory
        self.sock = sock
        self.trusted = trusted
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.pending = set()
        sock.listen(backlog)
        self.task = loop.create_task(self._accept())

    async def _accept(self):
        while True:
            try:
                conn, address = await self.loop.sock_accept(self.sock)
            except (OSError, asyncio.CancelledError) as error:
                if isinstance(error, asyncio.CancelledError) or self.sock.fileno() < 0:
                    return
                log.warning("accept failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            task = self.loop.create_task(self._start(conn, address))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _start(self, conn, address):
        conn.setblocking(False)
        ip = address[0] if isinstance(address, tuple) else ""
        try:
            if is_trusted(ip, self.trusted):
                header = await asyncio.wait_for(read_header(self.loop, conn), HEADER_SECONDS)
                sock = ProxiedSocket.adopt(conn, peer=header.source)
            else:
                sock = ProxiedSocket.adopt(conn, guard=True)
        except (ProxyProtocolError, asyncio.TimeoutError, OSError) as error:
            log.info("PROXY protocol: connection from %s closed: %s", ip, error or error.__class__.__name__)
            conn.close()
            return
        try:
            await self.loop.connect_accepted_socket(
                self.factory, sock, ssl=self.ssl, ssl_handshake_timeout=self.ssl_handshake_timeout if self.ssl else None,
            )
        except (OSError, asyncio.TimeoutError, ConnectionError) as error:
            log.info("connection from %s failed before the session: %s", ip, error.__class__.__name__)
            sock.close()

    def close(self):
        self.task.cancel()
        for task in list(self.pending):
            task.cancel()
        self.sock.close()

    async def wait_closed(self):
        await asyncio.gather(self.task, *self.pending, return_exceptions=True)


async def serve(factory, sock, *, ssl=None, ssl_handshake_timeout=None, backlog=1024, trusted=None):
    """loop.create_server(factory, sock=sock, …), or a ProxyServer when PROXY protocol
    networks are configured (MAILSUITE_PROXY_PROTOCOL_FROM, or `trusted`)."""
    loop = asyncio.get_running_loop()
    if trusted is None:
        from django.conf import settings

        trusted = getattr(settings, "MAILSUITE_PROXY_PROTOCOL_FROM", ())
    if not trusted:
        return await loop.create_server(
            factory, sock=sock, backlog=backlog, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout if ssl else None,
        )
    return ProxyServer(loop, factory, sock, trusted=trusted, ssl=ssl, ssl_handshake_timeout=ssl_handshake_timeout,
                       backlog=backlog)
