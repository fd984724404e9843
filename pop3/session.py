"""The POP3 session: an explicit state machine over one connection.

States and commands: RFC 1939 §3-§7 (AUTHORIZATION → TRANSACTION → UPDATE), with CAPA
(RFC 2449), STLS (RFC 2595), AUTH (RFC 5034), UTF8 (RFC 6856) and the response codes of
RFC 2449 §8 and RFC 3206.

Implementation notes
--------------------
- One table (ALLOWED) says which command is valid in which state and one dict
  (HANDLERS, built once) dispatches; a command outside its states gets -ERR and counts
  as a bad command. Nothing is valid in UPDATE: the session ends there.
- Typed errors are mapped to replies in one place (`Session.execute`): ParseError and
  Refusal are the client's doing, MaildropError carries its RFC 2449 response code,
  LoginThrottled is [SYS/TEMP], anything else is a server fault: logged with its
  traceback, answered "-ERR [SYS/TEMP]". Exception text never reaches the wire.
- ORM work runs in the database thread pool (run_sync) and message bytes are read in
  a worker thread: never on the event loop. No transaction is open while we write.
- The maildrop is locked from login to the end of the session (pop3.maildrop): the
  session renews its lease while it lives and gives it up however it ends, before the
  QUIT reply (a client that logs in again at once finds it free). Deletions happen only
  at QUIT, in one transaction with the \\Seen flag on every unseen message RETR sent
  whole (as Dovecot does; TOP marks nothing, RSET forgets both); a dropped connection or
  the autologout timer (RFC 1939 §3: no reply, no UPDATE state) changes nothing.
- Passwords (USER/PASS, AUTH PLAIN/LOGIN) are taken only over TLS, or from loopback
  clients when MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK is on (RFC 2595 §2.3, RFC 8314 §3).
  APOP and SCRAM-SHA-256 never send the password and are taken before TLS too.
- Bounded: command lines (parser.MAX_COMMAND_OCTETS), SASL lines, bad commands in a row
  (MAX_BAD_COMMANDS, then -ERR and disconnect), failed logins per connection
  (MAX_AUTH_FAILURES), commands per session (MAX_COMMANDS), idle time (autologout).
- Nothing secret is logged: no password, APOP digest or SASL payload.
"""
import asyncio
import base64
import enum
import logging
import os
import secrets
from dataclasses import dataclass

from accounts.auth import ScramExchange
from accounts.errors import LoginThrottled
from mailsuite.lib import sasl
from mailsuite.lib.aio import run_sync
from mailsuite.lib.lineserver import ConnectionClosed, IdleTimeout, LineTooLong
from pop3 import maildrop, responses
from pop3.parser import CANCELLED, MAX_COMMAND_OCTETS, MAX_SASL_LINE_OCTETS, ParseError, parse_command, parse_sasl_line
from pop3.responses import err, ok

log = logging.getLogger(__name__)

MAX_BAD_COMMANDS = 10  # in a row: then -ERR and disconnect
MAX_AUTH_FAILURES = 3  # per connection: then -ERR and disconnect (the throttle counts across them)
MAX_COMMANDS = 100_000  # per session
# Seam (tests set it to 0): a failed login is answered after this pause.
FAILURE_DELAY_SECONDS = 1.0
IMPLEMENTATION = "mailsuite"


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"  # RFC 1939 §3
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


A, T = State.AUTHORIZATION, State.TRANSACTION

# Command → states it is valid in.
ALLOWED = {
    "CAPA": {A, T},  # RFC 2449 §5
    "QUIT": {A, T},  # RFC 1939 §4 (AUTHORIZATION), §6 (TRANSACTION → UPDATE)
    "USER": {A},  # RFC 1939 §7
    "PASS": {A},  # RFC 1939 §7
    "APOP": {A},  # RFC 1939 §7
    "AUTH": {A},  # RFC 5034 §4
    "STLS": {A},  # RFC 2595 §4
    "UTF8": {A},  # RFC 6856 §2
    "STAT": {T},  # RFC 1939 §5
    "LIST": {T},  # RFC 1939 §5
    "RETR": {T},  # RFC 1939 §5
    "DELE": {T},  # RFC 1939 §5
    "NOOP": {T},  # RFC 1939 §5
    "RSET": {T},  # RFC 1939 §5
    "TOP": {T},  # RFC 1939 §7
    "UIDL": {T},  # RFC 1939 §7
}

MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")  # RFC 4616, draft-murchison-sasl-login, RFC 7677
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")  # send the password itself: TLS only


# --- What the I/O layer raises and the errors we map --------------------------------------


class Refusal(Exception):
    """A command refused: "-ERR [code] text". `text` is a constant fit for the wire."""

    def __init__(self, text, code=None):
        super().__init__(text)
        self.text = text
        self.code = code


class WrongState(Refusal):
    def __init__(self):
        super().__init__("Command not valid in this state")


class Hangup(Exception):
    """Send `reply` and close the connection."""

    def __init__(self, reply):
        super().__init__("hangup")
        self.reply = reply


@dataclass(frozen=True)
class Options:
    hostname: str
    autologout: float = 600.0  # RFC 1939 §3: at least 10 minutes
    login_delay: int = 0  # RFC 2449 §6.5, seconds; 0: none
    plaintext_loopback: bool = False  # MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK


def _b64(data):
    return base64.b64encode(data).decode("ascii")


class Session:
    """One POP3 session over a channel (pop3.server.Connection).

    The channel offers read_line(limit, timeout), write(bytes), drain(timeout),
    start_tls(), close(), and peer_ip / is_tls / is_loopback / tls_available.
    """

    def __init__(self, channel, options: Options):
        self.channel = channel
        self.options = options
        self.state = State.AUTHORIZATION
        # RFC 1939 §7: the APOP timestamp, unique to this greeting.
        self.timestamp = f"<{os.getpid()}.{secrets.token_hex(8)}@{options.hostname}>"
        self.user = None  # after USER, until PASS
        self.utf8 = False
        self.login = None
        self.holder = None  # our maildrop lease, while we hold it
        self.maildrop = None
        self.deleted = set()  # message numbers marked by DELE
        self.retrieved = set()  # message numbers RETR sent whole: \Seen at QUIT
        self.bad_in_a_row = 0
        self.auth_failures = 0
        self.commands = 0
        self.done = False
        self._heartbeat = None

    # --- The loop ---------------------------------------------------------------------

    async def run(self):
        try:
            self.channel.write(ok(f"{self.options.hostname} POP3 server ready {self.timestamp}"))
            while not self.done:
                try:
                    line = await self.channel.read_line(MAX_COMMAND_OCTETS, self.options.autologout)
                except LineTooLong:
                    self._bad(err("Line too long"))
                else:
                    await self.execute(line)
                await self.channel.drain(self.options.autologout)
        except Hangup as hangup:
            self.channel.write(hangup.reply)
        except IdleTimeout:
            log.info("pop3 autologout ip=%s user=%s", self.channel.peer_ip, self._who())
        except ConnectionClosed:
            pass
        finally:
            await self._finish()

    async def execute(self, line):
        """Parse and run one command line; every error becomes its reply here."""
        self.commands += 1
        if self.commands > MAX_COMMANDS:
            raise Hangup(err("Too many commands; closing connection"))
        try:
            command = parse_command(line)
            if self.state not in ALLOWED[command.name]:
                raise WrongState()
            await HANDLERS[command.name](self, command)
        except ParseError as error:
            self._bad(err(error.message))
        except WrongState as refusal:
            self._bad(err(refusal.text))
        except Refusal as refusal:
            self.bad_in_a_row = 0
            self.channel.write(err(refusal.text, refusal.code))
        except LoginThrottled:
            self.channel.write(err("Too many failed logins; try again later", "SYS/TEMP"))  # RFC 3206 §4
        except maildrop.MaildropError as error:
            self.channel.write(err(_MAILDROP_TEXT.get(type(error), "Maildrop not available"), error.code))
        except (ConnectionClosed, IdleTimeout, Hangup, LineTooLong, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("pop3 command failed ip=%s user=%s", self.channel.peer_ip, self._who())
            self.channel.write(err("Internal error; try again later", "SYS/TEMP"))
        else:
            self.bad_in_a_row = 0

    def _bad(self, reply):
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= MAX_BAD_COMMANDS:
            raise Hangup(err("Too many bad commands; closing connection"))
        self.channel.write(reply)

    def _who(self):
        return self.login.address if self.login else "-"

    async def _finish(self):
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.holder is not None:
            try:
                await run_sync(maildrop.release_lock, self.login.account_id, self.holder)
            except Exception:  # the lease expires on its own
                log.exception("pop3 could not release the maildrop lock user=%s", self._who())
            self.holder = None
        self.channel.close()

    # --- AUTHORIZATION ------------------------------------------------------------------

    def _passwords_allowed(self):
        return self.channel.is_tls or (self.options.plaintext_loopback and self.channel.is_loopback)

    def _require_passwords_allowed(self):
        if not self._passwords_allowed():
            raise Refusal("Plaintext authentication disallowed on non-secure connections; use STLS", "AUTH")

    def capabilities(self):
        caps = []
        if self.state is A and self.channel.tls_available and not self.channel.is_tls:
            caps.append("STLS")  # RFC 2595 §4
        caps += [
            "TOP",  # RFC 2449 §6.1
            "UIDL",  # RFC 2449 §6.8
            "RESP-CODES",  # RFC 2449 §6.4
            "AUTH-RESP-CODE",  # RFC 3206 §6
            "PIPELINING",  # RFC 2449 §6.6
            f"LOGIN-DELAY {self.options.login_delay}",  # RFC 2449 §6.5
            "EXPIRE NEVER",  # RFC 2449 §6.7: the server never removes mail on its own
            "UTF8 USER",  # RFC 6856 §2
        ]
        if self.state is A:
            if self._passwords_allowed():
                caps.append("USER")  # RFC 2449 §6.3
                caps.append("SASL " + " ".join(MECHANISMS))  # RFC 2449 §6.3, RFC 5034 §3
            else:
                caps.append("SASL SCRAM-SHA-256")
        caps.append(f"IMPLEMENTATION {IMPLEMENTATION}")  # RFC 2449 §6.9
        return caps

    async def cmd_capa(self, command):
        # RFC 2449 §5
        self.channel.write(responses.multiline(ok("Capability list follows"), self.capabilities()))

    async def cmd_quit(self, command):
        if self.state is T:
            await self._update()
            return
        # RFC 1939 §4: QUIT in AUTHORIZATION just ends the session.
        self.done = True
        self.channel.write(ok(f"{self.options.hostname} POP3 server signing off"))

    async def cmd_stls(self, command):
        # RFC 2595 §4
        if self.channel.is_tls:
            raise Refusal("Command not permitted when TLS active")
        if not self.channel.tls_available:
            raise Refusal("TLS not available")
        self.channel.write(ok("Begin TLS negotiation"))
        # The connection discards whatever the client sent after STLS before the handshake.
        await self.channel.start_tls()
        self.user = None

    async def cmd_utf8(self, command):
        # RFC 6856 §2: UTF-8 in USER, PASS and APOP names is accepted either way ("UTF8 USER").
        self.utf8 = True
        self.channel.write(ok("UTF8 enabled"))

    async def cmd_user(self, command):
        # RFC 1939 §7. The name is not checked here: "+OK" whether it exists or not.
        self._require_passwords_allowed()
        (self.user,) = command.args
        self.channel.write(ok("Send PASS"))

    async def cmd_pass(self, command):
        # RFC 1939 §7
        if self.user is None:
            raise Refusal("USER first")
        user, self.user = self.user, None
        (password,) = command.args
        login = await run_sync(maildrop.password_login, user, password, remote_ip=self.channel.peer_ip)
        await self._logged_in(login)

    async def cmd_apop(self, command):
        # RFC 1939 §7: over plaintext too, it never sends the secret (see README: APOP).
        self.user = None
        name, digest = command.args
        login = await run_sync(
            maildrop.apop_login, name, digest, timestamp=self.timestamp, remote_ip=self.channel.peer_ip
        )
        await self._logged_in(login)

    async def cmd_auth(self, command):
        # RFC 5034 §4
        self.user = None
        mechanism, *initial = command.args
        if mechanism not in MECHANISMS:
            raise Refusal("Unsupported authentication mechanism")
        if mechanism in PASSWORD_MECHANISMS:
            self._require_passwords_allowed()
        first = initial[0] if initial else None
        try:
            if mechanism == "PLAIN":
                login = await self._auth_plain(first)
            elif mechanism == "LOGIN":
                login = await self._auth_login(first)
            else:
                login = await self._auth_scram(first)
        except sasl.SaslError:
            login = None
        await self._logged_in(login)

    async def _sasl_response(self, challenge: bytes):
        """Send a "+ " challenge (RFC 5034 §4) and return the client's decoded answer."""
        self.channel.write(f"+ {_b64(challenge)}\r\n".encode("ascii") if challenge else b"+ \r\n")
        await self.channel.drain(self.options.autologout)
        try:
            line = await self.channel.read_line(MAX_SASL_LINE_OCTETS, self.options.autologout)
        except LineTooLong:
            raise Refusal("Line too long") from None
        try:
            response = parse_sasl_line(line)
        except ParseError as error:
            raise Refusal(error.message) from None
        if response is CANCELLED:
            raise Refusal("Authentication cancelled")  # RFC 5034 §4
        return response

    async def _auth_plain(self, first):
        response = first if first is not None else await self._sasl_response(b"")
        authzid, authcid, password = sasl.decode_plain(response)
        if authzid and authzid != authcid:
            raise sasl.SaslError("PLAIN: acting as another user is not supported")
        return await run_sync(maildrop.password_login, authcid, password, remote_ip=self.channel.peer_ip)

    async def _auth_login(self, first):
        username_prompt, password_prompt = sasl.login_challenges()
        username = first if first is not None else await self._sasl_response(username_prompt)
        password = await self._sasl_response(password_prompt)
        try:
            username, password = username.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            raise sasl.SaslError("LOGIN: not UTF-8") from None
        if not username or not password:
            raise sasl.SaslError("LOGIN: empty username or password")
        return await run_sync(maildrop.password_login, username, password, remote_ip=self.channel.peer_ip)

    async def _auth_scram(self, first):
        exchange = ScramExchange(remote_ip=self.channel.peer_ip, service=maildrop.SERVICE)
        message = first if first is not None else await self._sasl_response(b"")
        # The server-final message goes out as one more challenge; the client answers
        # with an empty line and step() returns None (mailsuite.lib.sasl, RFC 5034 §4).
        while (reply := await run_sync(exchange.step, message)) is not None:
            message = await self._sasl_response(reply)
        return await run_sync(maildrop.scram_login, exchange)

    async def _logged_in(self, login):
        """After a login attempt: lock and open the maildrop, or count a failure."""
        if login is None:
            self.auth_failures += 1
            if FAILURE_DELAY_SECONDS:
                await asyncio.sleep(FAILURE_DELAY_SECONDS)
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Hangup(err("Authentication failed; closing connection", "AUTH"))
            raise Refusal("Authentication failed", "AUTH")  # RFC 3206 §4
        holder = maildrop.new_holder()
        # RFC 1939 §8 / RFC 2449 §8.1.2: the maildrop is ours alone, or [IN-USE].
        opened = await run_sync(
            maildrop.lock_and_open, login.account_id, holder, login_delay=self.options.login_delay
        )
        self.login, self.holder, self.maildrop = login, holder, opened
        self.state = T
        self._heartbeat = asyncio.ensure_future(self._keep_lock())
        count, size = self._totals()
        self.channel.write(ok(f"Logged in; maildrop has {count} messages ({size} octets)"))

    async def _keep_lock(self):
        while True:
            await asyncio.sleep(maildrop.LOCK_LEASE_SECONDS / 3)
            try:
                held = await run_sync(maildrop.renew_lock, self.login.account_id, self.holder)
            except Exception:
                log.exception("pop3 could not renew the maildrop lock user=%s", self._who())
                continue
            if not held:
                log.warning("pop3 maildrop lock lost user=%s; closing the session", self._who())
                self.holder = None
                self.channel.close()
                return

    # --- TRANSACTION --------------------------------------------------------------------

    def _live(self):
        """(message number, Entry) of the messages not marked deleted."""
        return [
            (number, entry)
            for number, entry in enumerate(self.maildrop.entries, start=1)
            if number not in self.deleted
        ]

    def _totals(self):
        live = self._live()
        return len(live), sum(entry.octets for _, entry in live)

    def _entry(self, number):
        # RFC 1939 §5: a message marked as deleted may not be referred to.
        if not 1 <= number <= len(self.maildrop.entries) or number in self.deleted:
            raise Refusal("No such message")
        return self.maildrop.entries[number - 1]

    async def cmd_stat(self, command):
        # RFC 1939 §5: count and octets of the messages not marked deleted.
        count, size = self._totals()
        self.channel.write(ok(f"{count} {size}"))

    async def cmd_list(self, command):
        # RFC 1939 §5
        if command.args:
            (number,) = command.args
            self.channel.write(ok(f"{number} {self._entry(number).octets}"))
            return
        count, size = self._totals()
        lines = [f"{number} {entry.octets}" for number, entry in self._live()]
        self.channel.write(responses.multiline(ok(f"{count} messages ({size} octets)"), lines))

    async def cmd_uidl(self, command):
        # RFC 1939 §7
        unique_id = self.maildrop.unique_id
        if command.args:
            (number,) = command.args
            self.channel.write(ok(f"{number} {unique_id(self._entry(number))}"))
            return
        lines = [f"{number} {unique_id(entry)}" for number, entry in self._live()]
        self.channel.write(responses.multiline(ok("Unique-ID listing follows"), lines))

    async def _message_parts(self, entry):
        """The canonical message in pieces (maildrop.read_message_parts), read in a worker thread."""
        try:
            parts = await asyncio.to_thread(maildrop.read_message_parts, entry)
        except FileNotFoundError:
            raise Refusal("Message was removed by another session") from None
        sent = sum(len(part) for part in parts)
        if sent != entry.octets:
            log.error("pop3 size mismatch uid=%s listed=%d sent=%d", entry.uid, entry.octets, sent)
        return parts

    async def cmd_retr(self, command):
        # RFC 1939 §5
        (number,) = command.args
        entry = self._entry(number)
        parts = await self._message_parts(entry)
        self.channel.write(responses.message_response(ok(f"{entry.octets} octets"), *parts))
        self.retrieved.add(number)

    async def cmd_top(self, command):
        # RFC 1939 §7
        number, lines = command.args
        data = b"".join(await self._message_parts(self._entry(number)))
        self.channel.write(responses.message_response(ok("Top of message follows"), responses.top(data, lines)))

    async def cmd_dele(self, command):
        # RFC 1939 §5: marked now, removed at QUIT.
        (number,) = command.args
        if number in self.deleted:
            raise Refusal(f"Message {number} already deleted")
        self._entry(number)
        self.deleted.add(number)
        self.channel.write(ok(f"Message {number} deleted"))

    async def cmd_noop(self, command):
        # RFC 1939 §5
        self.channel.write(ok())

    async def cmd_rset(self, command):
        # RFC 1939 §5. What RETR would mark \Seen is forgotten too, as Dovecot does: the
        # session is back where it started.
        self.deleted.clear()
        self.retrieved.clear()
        count, size = self._totals()
        self.channel.write(ok(f"Maildrop has {count} messages ({size} octets)"))

    async def _update(self):
        # RFC 1939 §6: the UPDATE state. Remove the marked messages and mark the retrieved
        # ones \Seen, all or none; the lease is given up before the reply.
        self.state = State.UPDATE
        self.done = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        entries = self.maildrop.entries
        deleted = [entries[number - 1].uid for number in sorted(self.deleted)]
        seen = [
            entries[number - 1].uid for number in sorted(self.retrieved - self.deleted) if not entries[number - 1].seen
        ]
        if deleted or seen:
            try:
                await run_sync(
                    maildrop.commit_update, self.login.account_id, self.holder, self.maildrop.folder_id,
                    deleted=deleted, seen=seen,
                )
            except maildrop.LockLost:
                log.warning("pop3 changes not made: lock lost user=%s deleted=%d seen=%d",
                            self._who(), len(deleted), len(seen))
                if deleted:
                    self.channel.write(err("Some deleted messages not removed", "SYS/TEMP"))
                    return
                # Only \Seen flags lost: nothing the client asked for went undone.
        else:
            await run_sync(maildrop.release_lock, self.login.account_id, self.holder)
        self.holder = None  # given up
        left = len(entries) - len(self.deleted)
        log.info("pop3 quit user=%s deleted=%d seen=%d left=%d", self._who(), len(deleted), len(seen), left)
        self.channel.write(ok(f"{self.options.hostname} POP3 server signing off ({left} messages left)"))


_MAILDROP_TEXT = {
    maildrop.MaildropInUse: "Maildrop is locked by another session",
    maildrop.LoginTooSoon: "Too soon since the last login",
    maildrop.LockLost: "Maildrop lock lost",
}

HANDLERS = {name: getattr(Session, f"cmd_{name.lower()}") for name in ALLOWED}
