"""The SMTP server: aiosmtpd for the wire, our policy and delivery behind its handler seam.

Implementation notes:
- InboundHandler's hooks are thin async adapters; recipient policy (mta.recipients)
  and delivery (mta.inbound) are synchronous functions run in the database thread pool.
- The 250 after DATA is written only after accept_message() has committed every copy.
  A client that disconnects while delivery runs cancels only the waiting coroutine:
  the delivery thread finishes and commits or rolls back on its own.
- No database transaction is open while the event loop writes to a socket.
- Every reply after the greeting carries an RFC 3463 enhanced status code (RFC 2034).
"""
import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP
from django.conf import settings

from mailsuite.lib.addresses import AddressError, split_address
from mailsuite.lib.aio import GroupCommit, run_sync
from mailstore.actions import queue_id
from mailstore.storage import new_blob_name
from mta.headers import received_field, remove_fields
from mta import inbound
from mta.recipients import Client, ResolutionCache, check_recipient, decide

log = logging.getLogger(__name__)

_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}( |$)")
# Enhanced codes for the replies aiosmtpd writes itself (RFC 3463 §3).
_DEFAULT_DETAIL = {
    "220": "2.0.0", "221": "2.0.0", "235": "2.7.0", "250": "2.0.0", "251": "2.1.5", "252": "2.5.0",
    "421": "4.3.2", "432": "4.7.12", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0", "455": "4.5.4",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4", "530": "5.7.0",
    "534": "5.7.9", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "552": "5.3.4", "553": "5.1.3",
    "554": "5.0.0", "555": "5.5.4",
}


def with_enhanced_code(line, *, hostname):
    """Add an enhanced status code to a final reply line that lacks one.

    Multi-line continuations, 3xx intermediate replies and the EHLO/HELO replies
    are left alone (RFC 2034 §3 exempts the greeting, HELO and EHLO).
    """
    if len(line) < 4 or not line[:3].isdigit() or line[3] != " " or line[0] not in "245":
        return line
    rest = line[4:]
    if _ENHANCED.match(rest) or rest in (hostname, "HELP"):
        return line
    detail = _DEFAULT_DETAIL.get(line[:3], f"{line[0]}.0.0")
    return f"{line[:3]} {detail} {rest}"


class MailSMTP(SMTP):
    """aiosmtpd's SMTP plus enhanced status codes on the replies it writes itself.

    The one override is push(): aiosmtpd offers no hook for its own replies
    ("503 Error: need MAIL command"), and ENHANCEDSTATUSCODES promises a code on all
    of them. Everything else stays in the handler.
    """

    def __init__(self, *args, on_close=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._greeted = False
        self._on_close = on_close
        self._continued = []

    async def push(self, status):
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")
        if self._greeted:
            status = with_enhanced_code(status, hostname=self.hostname)
        self._greeted = True
        if status[3:4] == "-":
            # Hold the lines of a multi-line reply (EHLO) and send them in one write.
            self._continued.append(status)
            return
        if self._continued:
            status = "\r\n".join([*self._continued, status])
            self._continued = []
        await super().push(status)

    def connection_lost(self, error):
        try:
            super().connection_lost(error)
        finally:
            if self._on_close:
                self._on_close()


class _Refuse(asyncio.Protocol):
    """Answers a connection over the limit with 421 and closes it (RFC 5321 §3.8)."""

    def connection_made(self, transport):
        transport.write(b"421 4.3.2 Too many connections, try again later\r\n")
        transport.close()


def _declared_size(mail_options):
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def _needs_smtputf8(address):
    return not address.isascii()


class InboundHandler:
    """Handler hooks for the MX port: mail for our domains, or relaying by trusted clients."""

    def __init__(self, *, trusted_networks=(), max_recipients=100, committer=None, resolution_ttl=2.0):
        self.trusted_networks = trusted_networks
        self.max_recipients = max_recipients
        self.resolutions = ResolutionCache(resolution_ttl)
        # In-process group commit, or the commit service shared by several workers.
        self.committer = committer or GroupCommit(inbound.accept)

    def client(self, session):
        ip = session.peer[0] if isinstance(session.peer, tuple) else "unknown"
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return Client(ip=ip)
        return Client(ip=ip, trusted=any(address in network for network in self.trusted_networks))

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        # No AUTH on the MX port; PIPELINING (RFC 2920) and ENHANCEDSTATUSCODES (RFC 2034).
        lines = [line for line in responses[:-1] if not line.startswith("250-AUTH")]
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        return lines

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # The null reverse-path of bounces (RFC 5321 §4.5.5) stays "<>" in the envelope:
        # aiosmtpd takes an empty mail_from to mean "no MAIL command yet".
        if address != "<>":
            if _needs_smtputf8(address) and not envelope.smtp_utf8:
                return "553 5.6.7 Non-ASCII sender address needs SMTPUTF8"
            try:
                split_address(address)
            except AddressError:
                return "553 5.1.7 Bad sender address syntax"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.resolutions = []
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if _needs_smtputf8(address) and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        declared_size = _declared_size(envelope.mail_options)
        resolution = self.resolutions.get(address)
        if resolution is not None:
            decision = decide(address, resolution, declared_size)
        else:
            decision = await run_sync(
                check_recipient,
                address,
                client=self.client(session),
                declared_size=declared_size,
                cache=self.resolutions,
            )
        if decision.accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            envelope.resolutions.append(decision.resolution)
        return decision.reply

    async def handle_DATA(self, server, session, envelope):
        client = self.client(session)
        blob_name = new_blob_name()
        protocol = ("UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP") + (
            "S" if session.ssl else ""
        )
        trace = received_field(
            helo=session.host_name,
            client_ip=client.ip,
            hostname=server.hostname,
            protocol=protocol,
            queue_id=queue_id(blob_name),
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
        )
        # Bcc must not reach recipients (RFC 5322 §3.6.3); some clients leave it in.
        raw = trace + remove_fields(envelope.original_content, ["Bcc"])
        request = {
            "raw": raw,
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "resolutions": envelope.resolutions,
            "client_ip": client.ip,
            "smtputf8": envelope.smtp_utf8,
            "blob_name": blob_name,
        }
        return await self.committer.submit(request)

    async def close(self):
        close = getattr(self.committer, "close", None)
        if close is not None:
            await close()

    async def handle_exception(self, error):
        log.exception("SMTP session failed")
        return "451 4.3.0 Internal error; try again later"


@dataclass
class Listener:
    host: str
    port: int
    name: str = "smtp"
    reuse_port: bool = False


class SMTPService:
    """One or more listening sockets sharing a connection limit."""

    def __init__(self, handler, *, hostname, tls_context=None, max_connections=1000):
        self.handler = handler
        self.hostname = hostname
        self.tls_context = tls_context
        self.max_connections = max_connections
        self.sessions = set()
        self.servers = []

    def _protocol(self):
        if len(self.sessions) >= self.max_connections:
            return _Refuse()
        session = MailSMTP(
            self.handler,
            hostname=self.hostname,
            data_size_limit=settings.MAILSUITE_MESSAGE_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            tls_context=self.tls_context,
            timeout=settings.MAILSUITE_SMTP_TIMEOUT,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            on_close=lambda: self.sessions.discard(session),
        )
        self.sessions.add(session)
        return session

    async def listen(self, listener):
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
        # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do,
        # and with Nagle on, a multi-line reply stalls on the client's delayed ACK (~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if listener.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listener.host, listener.port))
        sock.setblocking(False)
        server = await loop.create_server(self._protocol, sock=sock, backlog=1024)
        self.servers.append(server)
        port = sock.getsockname()[1]
        log.info("%s listening on %s:%d", listener.name, listener.host, port)
        return port

    async def close(self):
        """Stop listening and drop the sessions still open (their clients will retry)."""
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        await self.handler.close()
        await asyncio.sleep(0)
