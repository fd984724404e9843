"""The SMTP server: aiosmtpd for the wire, our policy and delivery behind its handler seam.

Implementation notes:
- InboundHandler (MX port) and SubmissionHandler (submission and SMTPS ports) hooks
  are thin async adapters; recipient policy (mta.recipients), submission policy
  (mta.submission) and delivery (mta.inbound) are synchronous functions run in the
  database thread pool. The sender checks (antispam.checks.off_loop) run on the event
  loop itself when all they need is in memory, as it usually is: a trip to a thread cost
  more than the checks of a small message.
- No password, AUTH payload or SASL message is ever logged.
- The 250 after DATA is written only after every copy of the message is committed
  (mta.inbound). A client that disconnects while delivery runs cancels only the waiting coroutine:
  the delivery thread finishes and commits or rolls back on its own.
- No database transaction is open while the event loop writes to a socket.
- Every reply after the greeting carries an RFC 3463 enhanced status code (RFC 2034).
- Connection-level anti-spam on the MX port, for clients that may not relay: the
  greeting waits MAILSUITE_SMTP_GREETING_DELAY and early talkers are refused (MailSMTP);
  reverse DNS and HELO are checked at the first MAIL FROM and only score, reverse DNS
  also reported as iprev (antispam.connection); greylisting answers at RCPT TO (antispam.greylist).
"""
import asyncio
import base64
import binascii
import collections
import functools
import ipaddress
import logging
import re
import warnings
from dataclasses import dataclass

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, syntax
from django.conf import settings

from accounts.auth import ScramExchange
from accounts.errors import LoginThrottled
from accounts.identities import may_send_as
from antispam import checks as sender_checks
from antispam import attachments, connection, dnsbl, greylist, inbound_policy
from mailsuite.lib import logs, proxyprotocol, sasl
from mailsuite.lib.addresses import AddressError, split_address
from mailsuite.lib.aio import GroupCommit, run_sync, run_write
from mailsuite.lib.net import is_loopback, listening_socket
from mailstore.actions import queue_id
from mailstore.storage import new_blob_name
from mta import dsn_params, inbound, submission
from mta.headers import count_fields, received_field, remove_fields
from mta.recipients import Client, ResolutionCache, check_recipient, decide
from ops import metrics

log = logging.getLogger(__name__)
# aiosmtpd warns when AUTH does not require STARTTLS; on the SMTPS port the whole
# connection is TLS, so the warning is wrong there (and SMTPS is the only such case).
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS", module="aiosmtpd")

# Commands per connection (aiosmtpd's command_call_limit): generous for the commands
# that carry mail, tight for those that only probe or guess.
COMMAND_LIMITS = {"AUTH": 5, "VRFY": 10, "EXPN": 10, "HELP": 10, "NOOP": 100, "*": 10000}

# Early talkers (MailSMTP): what a refused client may still say before it is dropped.
EARLY_TALKER_COMMANDS = 10
EARLY_TALKER_WAIT = 10.0  # seconds per command
DELAY_LOOPBACK_GREETING = False  # a test seam: loopback clients get the greeting delay too

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


class ConnectionGate:
    """Open connections per client IP, shared by a process's listeners; refuses past a cap."""

    def __init__(self, per_ip):
        self.per_ip = per_ip
        self.open = collections.Counter()

    def admit(self, ip):
        if self.open[ip] >= self.per_ip:
            return False
        self.open[ip] += 1
        return True

    def leave(self, ip):
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]


@functools.cache
def _command_names(cls):
    """What aiosmtpd looks up by name on a session or a handler: commands, AUTH
    mechanisms and hooks."""
    return [name for name in dir(cls) if name.startswith(("smtp_", "auth_", "handle_"))]


# A path of dot-atoms (RFC 5321 §4.1.2 Dot-string @ Domain), ASCII only; the blanks after
# ">" are taken possessively so that a comment after them is never mistaken for parameters.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"\s*<((?:{_ATOM}\.)*{_ATOM}@(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+)>[ \t]*+(?!\()")


def plain_path(arg):
    """(address, rest of the argument) for a plain `<local@domain>` path, else None."""
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    return match.group(1), arg[match.end():]


class MailSMTP(SMTP):
    """aiosmtpd's SMTP with the few things its handler seam cannot reach.

    - push(): aiosmtpd offers no hook for its own replies ("503 Error: need MAIL
      command"), and ENHANCEDSTATUSCODES promises a code on all of them; the lines of
      a multi-line reply go out in one write.
    - connection_made()/connection_lost(): the per-IP connection cap, and plaintext AUTH
      for loopback clients when the operator allows it (aiosmtpd decides TLS-before-AUTH
      per server, not per client).
    - the greeting delay and early talkers: aiosmtpd writes its greeting itself, so the
      wait happens in push() and data_received() notes bytes that came before it.
    - speed, where aiosmtpd's own per-connection and per-command work was a large share
      of a worker's time: __dir__() and _getaddr() (see each).
    Everything else stays in the handler.
    """

    def __init__(self, *args, on_close=None, gate=None, plaintext_loopback=False, greeting_delay=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._greeted = False
        self._greeting_delay = greeting_delay  # client IP -> seconds to wait before the greeting
        self._delay = 0
        self._talked_early = False
        self._on_close = on_close
        self._continued = []
        self._gate = gate
        self._client_ip = None
        self._refused = False
        self._plaintext_loopback = plaintext_loopback
        self.raw_argument = ""

    async def push(self, status):
        if isinstance(status, bytes):
            status = status.decode("utf-8", "replace")
        if not self._greeted and self._delay:
            await asyncio.sleep(self._delay)
            if self._talked_early:
                self._greeted = True
                await self._refuse_early_talker()
                return
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

    # RFC 3461 parameters: aiosmtpd answers 555 to MAIL/RCPT parameters it does not know
    # before any handler hook runs, and upper-cases the ones it passes on (ENVID and ORCPT
    # are case-sensitive). So they are let through here, and the handler reads them from
    # the command as the client wrote it (raw_argument).
    DSN_PARAMETERS = ("RET", "ENVID", "NOTIFY", "ORCPT")

    def _getparams(self, params):
        result = super()._getparams(params)
        if result is not None:
            for name in self.DSN_PARAMETERS:
                result.pop(name, None)
        return result

    def __dir__(self):
        # aiosmtpd builds its command and AUTH tables from dir(self) and
        # inspect.getmembers(self) on every connection, reading each of the class's ~140
        # attributes (a fifth of a worker's event-loop time with a connection per
        # message). Those tables are all it uses dir() for: list just their names.
        return _command_names(type(self))

    def _getaddr(self, arg):
        # aiosmtpd parses each MAIL FROM and RCPT TO path with the email package's
        # RFC 5322 parser (and creates a class per call). A plain <local@domain> path is
        # read here with the same result; anything else (quoted local parts, address
        # literals, UTF-8, comments, no angle brackets) still goes to aiosmtpd.
        plain = plain_path(arg)
        if plain is None:
            return super()._getaddr(arg)
        address, rest = plain
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg):
        self.raw_argument = arg or ""
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg):
        self.raw_argument = arg or ""
        await super().smtp_RCPT(arg)

    def connection_made(self, transport):
        if self._client_ip is None:  # first call; STARTTLS calls again with the TLS transport
            peer = transport.get_extra_info("peername")
            self._client_ip = peer[0] if isinstance(peer, tuple) else "unknown"
            if self._gate is not None and not self._gate.admit(self._client_ip):
                self._refused = True
                transport.write(b"421 4.7.0 Too many connections from your address\r\n")
                transport.close()
                return
            if self._plaintext_loopback and is_loopback(self._client_ip):
                self._auth_require_tls = False
            if self._greeting_delay is not None:
                self._delay = self._greeting_delay(self._client_ip)
        super().connection_made(transport)
        self.session.sockname = transport.get_extra_info("sockname")  # our address, for HELO checks

    def data_received(self, data):
        if not self._greeted:
            self._talked_early = True
        super().data_received(data)

    async def _refuse_early_talker(self):
        """A client that talks before the greeting does not wait for replies: a spam
        engine, not an MTA (RFC 5321 §4.3.1: the client waits for the 220). It gets 554
        instead of the greeting, then, as RFC 5321 §3.1 asks, 503 to every command until
        its QUIT (a few, for a little while), and the connection is closed."""
        log.info("early talker refused ip=%s", self._client_ip)
        await SMTP.push(self, "554 5.5.0 You talked before the greeting: no service")
        try:
            for _ in range(EARLY_TALKER_COMMANDS):
                line = await asyncio.wait_for(self._reader.readline(), EARLY_TALKER_WAIT)
                if not line:
                    break
                if line.strip().upper() == b"QUIT":
                    await SMTP.push(self, "221 2.0.0 Bye")
                    break
                await SMTP.push(self, "503 5.5.1 Bad sequence of commands: no service")
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # silent, gone, or a line past the reader's limit: close either way
        finally:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, error):
        if self._refused:
            return
        try:
            super().connection_lost(error)
        finally:
            if self._gate is not None:
                self._gate.leave(self._client_ip)
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


def _uses_tls(server):
    return server.transport is not None and server.transport.get_extra_info("ssl_object") is not None


class InboundHandler:
    """Handler hooks for the MX port: mail for our domains, or relaying by trusted clients."""

    offers_auth = False

    def __dir__(self):
        # aiosmtpd reads the handler's hooks and AUTH mechanisms through dir() and
        # inspect.getmembers() for every connection, like the session's (MailSMTP.__dir__).
        return _command_names(type(self))

    def __init__(self, *, trusted_networks=(), max_recipients=100, committer=None, resolution_ttl=2.0):
        self.trusted_networks = trusted_networks
        self.max_recipients = max_recipients
        self.resolutions = ResolutionCache(resolution_ttl)
        # In-process group commit, or the commit service shared by several workers.
        self.committer = committer or GroupCommit(inbound.accept)

    def client(self, session):
        ip = session.peer[0] if isinstance(session.peer, tuple) else "unknown"
        login = session.auth_data if session.authenticated else None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return Client(ip=ip)
        return Client(
            ip=ip,
            authenticated=login.address if login else None,
            trusted=any(address in network for network in self.trusted_networks),
        )

    def greeting_delay(self, ip):
        """Seconds to hold the greeting for a client at `ip` (MAILSUITE_SMTP_GREETING_DELAY):
        an early talker shows itself meanwhile. Not for trusted clients, nor loopback
        ones (a local process) unless tests ask (DELAY_LOOPBACK_GREETING)."""
        delay = settings.MAILSUITE_SMTP_GREETING_DELAY
        if not delay or (is_loopback(ip) and not DELAY_LOOPBACK_GREETING):
            return 0
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return delay
        return 0 if any(address in network for network in self.trusted_networks) else delay

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        lines = responses[:-1]
        if not self.offers_auth:
            lines = [line for line in lines if not line.startswith("250-AUTH")]
        # PIPELINING (RFC 2920), ENHANCEDSTATUSCODES (RFC 2034), DSN (RFC 3461).
        return [*lines, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-DSN", "250 HELP"]

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
        refusal = await self.check_sender(session, address)
        if refusal:
            return refusal
        try:
            envelope.dsn = dsn_params.mail_parameters(server.raw_argument)
        except ValueError as error:
            return f"501 5.5.4 {error}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.resolutions = []
        # The message's name, and so its queue id, from MAIL FROM on: one id follows it
        # through the session's log lines, DATA, the queue and delivery.
        envelope.blob_name = new_blob_name()
        log.info("mail from=<%s> id=%s", "" if address == "<>" else address, queue_id(envelope.blob_name),
                 extra=self.log_fields(session, envelope))
        return "250 2.1.0 Ok"

    def log_fields(self, session, envelope=None):
        """The structured fields of this session's log lines (mailsuite.lib.logs)."""
        blob_name = getattr(envelope, "blob_name", None)
        login = session.auth_data if session.authenticated else None
        return logs.fields(
            queue_id=queue_id(blob_name) if blob_name else None,
            protocol="submission" if self.offers_auth else "smtp",
            peer=self.client(session).ip,
            account=getattr(login, "address", None),
        )

    async def check_sender(self, session, address):
        """A reply refusing this MAIL FROM, or None: DNS block lists (antispam.dnsbl).

        The client's reverse DNS and HELO name are checked here too, once per session
        and HELO (antispam.connection): they only score, at DATA."""
        client = self.client(session)
        session.listings = []
        if client.may_relay:
            session.connection_rules, session.iprev = [], None
            return None
        if getattr(session, "connection_rules_for", None) != session.host_name:
            helo = session.host_name or ""
            helo_is_ours = connection.known_local_domain(helo)
            if helo_is_ours is None:
                helo_is_ours = await run_sync(connection.is_local_domain, helo)
            session.connection_rules, session.iprev = await sender_checks.off_loop(
                connection.assess, client.ip, helo,
                our_hostname=settings.MAILSUITE_HOSTNAME, our_addresses=self.local_addresses(session),
                helo_is_ours=helo_is_ours,
            )
            session.connection_rules_for = session.host_name
        if not dnsbl.enabled():
            return None  # no trip to the checks' threads for nothing
        refusal, session.listings = await sender_checks.off_loop(
            dnsbl.check_sender, client.ip, "" if address == "<>" else address
        )
        return refusal

    def local_addresses(self, session):
        """Our own addresses a client could claim: the one it connected to."""
        sockname = getattr(session, "sockname", None)
        return (sockname[0],) if isinstance(sockname, tuple) else ()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if _needs_smtputf8(address) and not envelope.smtp_utf8:
            return "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            notify, orcpt = dsn_params.rcpt_parameters(server.raw_argument)
        except ValueError as error:
            return f"501 5.5.4 {error}"
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
            refusal = await self.greylist(session, envelope, decision.resolution)
            if refusal:
                return refusal
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            envelope.resolutions.append(decision.resolution)
            envelope.dsn["notify"][decision.resolution.address] = notify
            envelope.dsn["orcpt"][decision.resolution.address] = orcpt
        log.info("rcpt to=<%s> id=%s %s", address, queue_id(getattr(envelope, "blob_name", "") or "-"),
                 decision.reply, extra=self.log_fields(session, envelope))
        return decision.reply

    async def greylist(self, session, envelope, resolution):
        """A 451 refusal of this recipient while greylisted (antispam.greylist), or None.

        Only local recipients of domains that turned greylisting on; never for clients
        that may relay (authenticated or trusted). The domain's policy is usually in
        memory; greylist.evaluate() is one short write off the loop."""
        client = self.client(session)
        if client.may_relay or resolution.relayed:
            return None
        domain = resolution.address.rpartition("@")[2]
        policy = inbound_policy.cached(domain) or await run_sync(inbound_policy.get, domain)
        if not policy.greylisting:
            return None
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        accounts = [(account.pk, account.domain_id) for account in resolution.accounts.values()]
        outcome = await run_write(greylist.evaluate, client.ip, sender, resolution.address, accounts=accounts)
        if outcome is greylist.VERIFY_SENDER:
            verified = await sender_checks.off_loop(greylist.sender_spf_passes, client.ip, sender, session.host_name)
            outcome = await run_write(
                greylist.evaluate, client.ip, sender, resolution.address, accounts=accounts, sender_verified=verified,
            )
        return outcome.reply

    async def handle_DATA(self, server, session, envelope):
        client = self.client(session)
        if count_fields(envelope.original_content, "Received") >= settings.MAILSUITE_MAX_HOPS:
            return "554 5.4.6 Too many hops: this message is looping"  # RFC 5321 §6.3
        # Bcc must not reach recipients (RFC 5322 §3.6.3); some clients leave it in.
        content = remove_fields(envelope.original_content, ["Bcc"])
        content, refusal = await self.check_message(server, session, envelope, content)
        if refusal:
            return refusal
        blob_name = getattr(envelope, "blob_name", None) or new_blob_name()
        # RFC 3848 protocol names: ESMTP, then S for TLS and A for AUTH.
        protocol = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP"
        protocol += ("S" if _uses_tls(server) else "") + ("A" if session.authenticated else "")
        trace = received_field(
            helo=session.host_name,
            client_ip=client.ip,
            hostname=server.hostname,
            protocol=protocol,
            queue_id=queue_id(blob_name),
            recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
        )
        request = {
            "raw": trace + content,
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "resolutions": envelope.resolutions,
            "client_ip": client.ip,
            "smtputf8": envelope.smtp_utf8,
            "blob_name": blob_name,
            "dsn": envelope.dsn,
            **getattr(envelope, "verdict", {}),
        }
        return await self.committer.submit(request)

    async def check_message(self, server, session, envelope, content):
        """(the content to store, a reply refusing it or None).

        Dangerous attachments and viruses first (antispam.attachments: refused, or
        filed into Junk, as the recipients' domains ask), then sender authentication
        (antispam.checks): SPF, DKIM, ARC, DMARC; our Authentication-Results on top;
        DMARC reject refuses, quarantine files into Junk."""
        client = self.client(session)
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        # Trusted networks send mail out through us: checked as outgoing (antispam.attachments).
        outgoing = client.may_relay
        actions = await self.attachment_actions(envelope, sender_domain=sender.rpartition("@")[2] if outgoing else "")
        decision, outcome = await sender_checks.check_incoming_off_loop(
            content, attachment_actions=actions, outgoing=outgoing,
            client_ip=client.ip, helo=session.host_name, mail_from=sender, skip=outgoing,
            listings=getattr(session, "listings", ()), connection_rules=getattr(session, "connection_rules", ()),
            iprev=getattr(session, "iprev", None),
        )
        if decision.refusal:
            return content, decision.refusal
        envelope.verdict = outcome.for_delivery()
        if decision.junk:
            envelope.verdict["junk"] = True
        return outcome.content, outcome.refusal

    async def check_attachments(self, envelope, content, *, outgoing, sender):
        """antispam.attachments' Decision on dangerous attachments and viruses (clamd)."""
        actions = await self.attachment_actions(envelope, sender_domain=sender.rpartition("@")[2] if outgoing else "")
        return await sender_checks.off_loop(
            attachments.check, content, actions=actions, outgoing=outgoing,
            inline_first=len(content) <= sender_checks.INLINE_LIMIT,
        )

    async def attachment_actions(self, envelope, *, sender_domain=""):
        """What each recipient's domain does with dangerous attachments (InboundPolicy);
        for a recipient elsewhere, what the sender's domain does (outgoing mail), else the
        server's default."""
        actions = set()
        for resolution in envelope.resolutions:
            if resolution.relayed and not sender_domain:
                actions.add(settings.MAILSUITE_ATTACHMENT_POLICY)
                continue
            domain = sender_domain.lower() if resolution.relayed else resolution.address.rpartition("@")[2]
            policy = inbound_policy.cached(domain) or await run_sync(inbound_policy.get, domain)
            actions.add(policy.attachment_action)
        return actions

    async def close(self):
        close = getattr(self.committer, "close", None)
        if close is not None:
            await close()

    async def handle_exception(self, error):
        log.exception("SMTP session failed")
        return "451 4.3.0 Internal error; try again later"


class SubmissionHandler(InboundHandler):
    """Submission (RFC 6409) on the submission and SMTPS ports: AUTH first, then the
    user may send to anyone, as one of their own addresses, within their limits."""

    offers_auth = True

    def greeting_delay(self, ip):
        return 0  # users' own clients: no early-talker test

    async def check_sender(self, session, address):
        login = session.auth_data
        if address == "<>" or await run_sync(may_send_as_login, login, address):
            return None
        return f"553 5.7.1 <{address}>: not an address you may send as"

    async def check_message(self, server, session, envelope, content):
        # What our users send is checked for programs and viruses like what comes in.
        decision = await self.check_attachments(envelope, content, outgoing=True, sender=session.auth_data.address)
        if decision.refusal:
            return None, decision.refusal
        return await run_sync(
            submission.check_submission,
            content,
            login=session.auth_data,
            mail_from=envelope.mail_from,
            recipient_count=len(envelope.rcpt_tos),
            hostname=server.hostname,
        )

    # AUTH mechanisms (RFC 4954), each accepting an initial response (SASL-IR).

    async def auth_PLAIN(self, server, args):
        response = await _initial_response(server, args, b"")
        if response is None:
            return AuthResult(success=False, handled=True)
        try:
            authzid, username, password = sasl.decode_plain(response)
        except sasl.SaslError:
            await server.push("501 5.5.2 Malformed PLAIN response")
            return AuthResult(success=False, handled=True)
        if authzid and authzid != username:
            return AuthResult(success=False, handled=False, message="535 5.7.8 Acting as another user is not supported")
        return await self._password_login(server, username, password)

    async def auth_LOGIN(self, server, args):
        username_prompt, password_prompt = sasl.login_challenges()
        username = await _initial_response(server, args, username_prompt)
        if username is None:
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(password_prompt)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            return await self._password_login(server, username.decode(), password.decode())
        except UnicodeDecodeError:
            await server.push("501 5.5.2 Malformed LOGIN response")
            return AuthResult(success=False, handled=True)

    async def auth_SCRAM__SHA__256(self, server, args):
        exchange = ScramExchange(remote_ip=server._client_ip, service="smtp")
        message = await _initial_response(server, args, b"")
        try:
            # RFC 4954 §4: the server-final data goes out as one more challenge, which
            # the client answers with an empty line; step() then returns None.
            while message is not None and (reply := await run_sync(exchange.step, message)) is not None:
                message = await server.challenge_auth(reply)
                if message is MISSING:
                    message = None
        except LoginThrottled:
            return AuthResult(success=False, handled=False, message=submission.THROTTLED)
        except sasl.SaslError:
            return AuthResult(success=False, handled=False, message=submission.INVALID)
        if message is None:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=True, auth_data=await run_sync(submission.scram_login, exchange))

    async def _password_login(self, server, username, password):
        login, refusal = await run_sync(submission.password_login, username, password, remote_ip=server._client_ip)
        if login is None:
            return AuthResult(success=False, handled=False, message=refusal)
        return AuthResult(success=True, auth_data=login)


async def _initial_response(server, args, challenge):
    """The client's first SASL message: the initial response (RFC 4954 SASL-IR, "=" for
    empty) or the answer to `challenge`. None when the client aborted or sent bad base64
    (aiosmtpd has already replied)."""
    if len(args) > 1:
        if args[1] == "=":
            return b""
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await server.push("501 5.5.2 Can't decode base64")
            return None
    response = await server.challenge_auth(challenge)
    return None if response is MISSING else response


def may_send_as_login(login, address):
    from accounts.models import Account

    return may_send_as(Account.objects.select_related("domain").get(pk=login.account_id), address)


@dataclass
class Listener:
    host: str
    port: int
    name: str = "smtp"
    reuse_port: bool = False


class SMTPService:
    """The listening sockets of one kind of SMTP port (MX, submission or SMTPS).

    `tls` is a TLSContextProvider: STARTTLS uses its current context for each new
    session; an implicit-TLS listener picks the current one at each handshake.
    """

    def __init__(
        self, handler, *, hostname, tls=None, implicit_tls=False, require_auth=False,
        max_connections=1000, gate=None,
    ):
        self.handler = handler
        self.hostname = hostname
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.require_auth = require_auth
        self.max_connections = max_connections
        self.gate = gate
        self.sessions = set()
        self.servers = []

    def _protocol(self):
        metrics.connection("smtps" if self.implicit_tls else "submission" if self.require_auth else "smtp")
        if len(self.sessions) >= self.max_connections:
            return _Refuse()
        session = MailSMTP(
            self.handler,
            hostname=self.hostname,
            data_size_limit=settings.MAILSUITE_MESSAGE_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            tls_context=None if self.implicit_tls or self.tls is None else self.tls.current(),
            timeout=settings.MAILSUITE_SMTP_TIMEOUT,
            auth_required=self.require_auth,
            # On an implicit-TLS port the whole session is encrypted already.
            auth_require_tls=not self.implicit_tls,
            auth_exclude_mechanism=[] if self.handler.offers_auth else ["LOGIN", "PLAIN"],
            command_call_limit=COMMAND_LIMITS,
            gate=self.gate,
            plaintext_loopback=self.require_auth and settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK,
            greeting_delay=getattr(self.handler, "greeting_delay", None),
            on_close=lambda: self.sessions.discard(session),
        )
        self.sessions.add(session)
        return session

    async def listen(self, listener):
        sock = listening_socket(listener.host, listener.port, reuse_port=listener.reuse_port)
        ssl_context = self.tls.listener_context() if self.implicit_tls else None
        server = await proxyprotocol.serve(self._protocol, sock, ssl=ssl_context)
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
