"""The ManageSieve session (RFC 5804): an explicit state machine over one connection.

Implementation notes
--------------------
- Two states (RFC 5804 §2): NOT_AUTHENTICATED and AUTHENTICATED; one table (ALLOWED)
  says which command is valid in which, one dict (HANDLERS, built once) dispatches. A
  command outside its states gets NO and counts as a bad command; LOGOUT ends the session.
- Typed errors are mapped to replies in one place (Session.execute): ProtocolError and
  Refusal are the client's doing (NO, with a response code where RFC 5804 §1.3 has
  one), sieve.actions.SieveError carries its code, an invalid script's error names the
  line and column, LoginThrottled is NO (TRYLATER); anything else is a server fault:
  logged with its traceback, answered NO (TRYLATER). Exception text from elsewhere
  never reaches the wire.
- Scripts are read and written through sieve.actions, in the database thread pool
  (run_sync); no transaction is open while we write to the socket.
- Passwords (AUTHENTICATE PLAIN) are taken only over TLS, or from loopback clients when
  MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK is on (RFC 5804 §2.1, RFC 8314): before that the
  SASL capability is empty. Logins go through accounts.auth (throttle and audit,
  service "managesieve"); nothing secret is logged.
- Bounded: command lines (protocol.MAX_LINE_OCTETS), literals (MAX_LITERAL_PREAUTH
  before login, sieve.actions.MAX_SCRIPT_OCTETS after), bad commands in a row, failed
  logins per connection, commands per session, idle time.
"""
import asyncio
import enum
import logging
from dataclasses import dataclass

from accounts.auth import authenticate
from accounts.errors import LoginThrottled
from mailsuite.lib import sasl
from mailsuite.lib.aio import run_sync
from mailsuite.lib.lineserver import ConnectionClosed, IdleTimeout, LineTooLong
from sieve import actions, protocol
from sieve.compiler import EXTENSIONS
from sieve.interpreter import MAX_REDIRECTS
from sieve.protocol import ProtocolError, bye, line, no, ok, string

log = logging.getLogger(__name__)

SERVICE = "managesieve"
IMPLEMENTATION = "mailsuite"
MAX_BAD_COMMANDS = 10
MAX_AUTH_FAILURES = 3
MAX_COMMANDS = 100_000
MAX_LITERAL_PREAUTH = 8 * 1024
MAX_LITERAL = actions.MAX_SCRIPT_OCTETS + 1024
# Seam (tests set it to 0): a failed login is answered after this pause.
FAILURE_DELAY_SECONDS = 1.0


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"


N, A = State.NOT_AUTHENTICATED, State.AUTHENTICATED

# Command → states it is valid in.
ALLOWED = {
    "CAPABILITY": {N, A},  # RFC 5804 §2.4
    "NOOP": {N, A},  # §2.13
    "LOGOUT": {N, A},  # §2.3
    "STARTTLS": {N},  # §2.2
    "AUTHENTICATE": {N},  # §2.1
    "UNAUTHENTICATE": {A},  # §2.14
    "HAVESPACE": {A},  # §2.5
    "PUTSCRIPT": {A},  # §2.6
    "LISTSCRIPTS": {A},  # §2.7
    "SETACTIVE": {A},  # §2.8
    "GETSCRIPT": {A},  # §2.9
    "DELETESCRIPT": {A},  # §2.10
    "RENAMESCRIPT": {A},  # §2.11
    "CHECKSCRIPT": {A},  # §2.12
}
# Argument kinds per command: "s" string, "n" number; "s?" an optional string.
ARGUMENTS = {
    "CAPABILITY": "", "NOOP": "s?", "LOGOUT": "", "STARTTLS": "", "AUTHENTICATE": "ss?", "UNAUTHENTICATE": "",
    "HAVESPACE": "sn", "PUTSCRIPT": "ss", "LISTSCRIPTS": "", "SETACTIVE": "s", "GETSCRIPT": "s",
    "DELETESCRIPT": "s", "RENAMESCRIPT": "ss", "CHECKSCRIPT": "s",
}
MECHANISMS = ("PLAIN",)  # RFC 4616


class Refusal(Exception):
    """NO [(code)] "text"; `text` is a constant fit for the wire."""

    def __init__(self, text, code=None):
        super().__init__(text)
        self.text = text
        self.code = code


class Hangup(Exception):
    def __init__(self, reply):
        super().__init__("hangup")
        self.reply = reply


@dataclass(frozen=True)
class Options:
    hostname: str
    autologout: float = 30 * 60.0
    preauth_timeout: float = 120.0
    plaintext_loopback: bool = False


@dataclass(frozen=True)
class Login:
    account_id: int
    address: str


def _load_account(account_id):
    from accounts.models import Account

    return Account.objects.select_related("domain").get(pk=account_id)


def _check_arguments(command):
    kinds = ARGUMENTS[command.name]
    required = kinds.replace("?", "")
    optional = len(kinds) - len(required)
    mandatory = len(required) - optional
    if not mandatory <= len(command.args) <= len(required):
        raise ProtocolError(f"Wrong number of arguments for {command.name}")
    for value, kind in zip(command.args, required):
        if (kind == "n") != isinstance(value, int):
            raise ProtocolError(f"Wrong kind of argument for {command.name}")


class Session:
    """One ManageSieve session over a channel (sieve.server.Connection), which offers
    read_line(limit, timeout), read_exact(n, timeout), write(bytes), drain(timeout),
    start_tls(), close(), and peer_ip / is_tls / is_loopback / tls_available."""

    def __init__(self, channel, options: Options):
        self.channel = channel
        self.options = options
        self.state = N
        self.login = None
        self.account = None
        self.bad_in_a_row = 0
        self.auth_failures = 0
        self.commands = 0
        self.done = False

    # --- The loop ---------------------------------------------------------------------------

    def _timeout(self):
        return self.options.autologout if self.state is A else self.options.preauth_timeout

    async def run(self):
        try:
            self.channel.write(self.capability_lines() + ok(f"{self.options.hostname} ManageSieve ready"))
            while not self.done:
                try:
                    data = await self.read_command()
                except LineTooLong:
                    self._bad(no("Line too long"))
                except ProtocolError as error:
                    self._bad(no(error.message))
                else:
                    await self.execute(data)
                await self.channel.drain(self._timeout())
        except Hangup as hangup:
            self.channel.write(hangup.reply)
        except IdleTimeout:
            self.channel.write(bye("Idle for too long", "TRYLATER"))
        except ConnectionClosed:
            pass
        finally:
            self.channel.close()

    async def read_command(self):
        """A command's line and every literal it announces (RFC 5804 §4)."""
        limit = MAX_LITERAL if self.state is A else MAX_LITERAL_PREAUTH
        text = await self.channel.read_line(protocol.MAX_LINE_OCTETS, self._timeout())
        data = bytearray(text)
        total = 0
        while (length := protocol.literal_length(text)) is not None:
            total += length
            if total > limit:
                raise Hangup(bye("Literal too large", "QUOTA/MAXSIZE"))
            data += await self.channel.read_exact(length, self._timeout())
            text = await self.channel.read_line(protocol.MAX_LINE_OCTETS, self._timeout())
            data += text
        return bytes(data)

    async def execute(self, data):
        """Parse and run one command; every error becomes its reply here."""
        self.commands += 1
        if self.commands > MAX_COMMANDS:
            raise Hangup(bye("Too many commands"))
        try:
            command = protocol.parse_command(data)
            if command.name not in ALLOWED:
                raise ProtocolError("Unknown command")
            if self.state not in ALLOWED[command.name]:
                self._bad(no(f"{command.name} is not allowed {'before' if self.state is N else 'after'} login"))
                return
            _check_arguments(command)
            await HANDLERS[command.name](self, command)
        except ProtocolError as error:
            self._bad(no(error.message))
        except Refusal as refusal:
            self.bad_in_a_row = 0
            self.channel.write(no(refusal.text, refusal.code))
        except actions.InvalidScript as error:
            self.channel.write(no(str(error.error)))  # "line L, column C: message"
        except actions.SieveError as error:
            self.channel.write(no(str(error), error.code))
        except LoginThrottled:
            self.channel.write(no("Too many failed logins; try again later", "TRYLATER"))
        except (ConnectionClosed, IdleTimeout, Hangup, LineTooLong, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("managesieve command failed ip=%s user=%s", self.channel.peer_ip, self._who())
            self.channel.write(no("Internal error; try again later", "TRYLATER"))
        else:
            self.bad_in_a_row = 0

    def _bad(self, reply):
        self.bad_in_a_row += 1
        if self.bad_in_a_row >= MAX_BAD_COMMANDS:
            raise Hangup(bye("Too many bad commands"))
        self.channel.write(reply)

    def _who(self):
        return self.login.address if self.login else "-"

    # --- Any state ----------------------------------------------------------------------------

    def _passwords_allowed(self):
        return self.channel.is_tls or (self.options.plaintext_loopback and self.channel.is_loopback)

    def capability_lines(self):
        # RFC 5804 §1.7
        lines = [line(string("IMPLEMENTATION"), string(IMPLEMENTATION))]
        mechanisms = " ".join(MECHANISMS) if self._passwords_allowed() and self.state is N else ""
        lines.append(line(string("SASL"), string(mechanisms)))
        lines.append(line(string("SIEVE"), string(" ".join(EXTENSIONS))))
        if self.channel.tls_available and not self.channel.is_tls and self.state is N:
            lines.append(line(string("STARTTLS")))
        lines.append(line(string("MAXREDIRECTS"), string(str(MAX_REDIRECTS))))
        if self.login is not None:
            lines.append(line(string("OWNER"), string(self.login.address)))
        lines.append(line(string("UNAUTHENTICATE")))  # RFC 5804 §2.14.1
        lines.append(line(string("VERSION"), string("1.0")))
        return b"".join(lines)

    async def cmd_capability(self, command):  # RFC 5804 §2.4
        self.channel.write(self.capability_lines() + ok())

    async def cmd_noop(self, command):  # RFC 5804 §2.13
        if command.args:
            self.channel.write(ok("Done", f"TAG {string(command.args[0])}"))
        else:
            self.channel.write(ok("Done"))

    async def cmd_logout(self, command):  # RFC 5804 §2.3
        self.done = True
        self.channel.write(ok("Logout completed"))

    # --- NOT AUTHENTICATED --------------------------------------------------------------------

    async def cmd_starttls(self, command):  # RFC 5804 §2.2
        if self.channel.is_tls:
            raise Refusal("TLS is already active")
        if not self.channel.tls_available:
            raise Refusal("TLS is not available")
        self.channel.write(ok("Begin TLS negotiation now"))
        await self.channel.drain(self._timeout())
        await self.channel.start_tls()
        # RFC 5804 §2.2: the capabilities again, now that they may differ.
        self.channel.write(self.capability_lines() + ok("TLS negotiation successful"))

    async def cmd_authenticate(self, command):  # RFC 5804 §2.1
        mechanism = command.args[0].upper()
        if mechanism not in MECHANISMS:
            raise Refusal("Unsupported authentication mechanism")
        if not self._passwords_allowed():
            raise Refusal("Authentication needs TLS first (STARTTLS)", "ENCRYPT-NEEDED")
        try:
            if len(command.args) > 1:
                response = sasl.decode_response(command.args[1].encode("ascii", "replace"), initial=True)
            else:
                response = await self._sasl_response(b"")
            authzid, authcid, password = sasl.decode_plain(response)
            if authzid and authzid != authcid:
                raise sasl.SaslError("PLAIN: acting as another user is not supported")
        except sasl.SaslError:
            account = None
        else:
            account = await run_sync(authenticate, authcid, password, service=SERVICE, remote_ip=self.channel.peer_ip)
        await self._logged_in(account)

    async def _sasl_response(self, challenge):
        """Send a challenge string (RFC 5804 §2.1) and return the client's decoded answer."""
        self.channel.write(line(string(sasl.encode_challenge(challenge).decode("ascii") if challenge else "")))
        await self.channel.drain(self._timeout())
        data = await self.read_command_string()
        if data == "*":
            raise Refusal("Authentication cancelled")
        return sasl.decode_response(data.encode("ascii", "replace"))

    async def read_command_string(self):
        try:
            return protocol.parse_string(await self.read_command())
        except ProtocolError as error:
            raise Refusal(error.message) from None

    async def _logged_in(self, account):
        if account is None:
            self.auth_failures += 1
            if FAILURE_DELAY_SECONDS:
                await asyncio.sleep(FAILURE_DELAY_SECONDS)
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Hangup(bye("Too many failed logins"))
            raise Refusal("Authentication failed")
        self.login = Login(account.pk, account.address)
        self.account = account
        self.state = A
        log.info("managesieve login user=%s ip=%s", account.address, self.channel.peer_ip)
        self.channel.write(ok("Logged in"))

    # --- AUTHENTICATED ------------------------------------------------------------------------

    async def cmd_unauthenticate(self, command):  # RFC 5804 §2.14.1
        self.state, self.login, self.account = N, None, None
        self.channel.write(ok())

    async def cmd_havespace(self, command):  # RFC 5804 §2.5
        name, size = command.args
        actions.check_name(name)
        refusal = await run_sync(actions.space_refusal, self.account, name, size)
        if refusal:
            raise refusal
        self.channel.write(ok())

    async def cmd_putscript(self, command):  # RFC 5804 §2.6
        name, text = command.args
        await run_sync(actions.put_script, self.account, name, text)
        self.channel.write(ok())

    async def cmd_checkscript(self, command):  # RFC 5804 §2.12
        (text,) = command.args
        await asyncio.to_thread(actions.check_text, text)  # compiling is CPU work: off the event loop
        self.channel.write(ok())

    async def cmd_listscripts(self, command):  # RFC 5804 §2.7
        from sieve.models import SieveScript

        def listing():
            return list(SieveScript.objects.filter(account_id=self.account.pk).order_by("name").values_list("name", "active"))

        rows = await run_sync(listing)
        self.channel.write(b"".join(line(string(name), *(["ACTIVE"] if active else [])) for name, active in rows) + ok())

    async def cmd_setactive(self, command):  # RFC 5804 §2.8
        await run_sync(actions.set_active, self.account, command.args[0])
        self.channel.write(ok())

    async def cmd_getscript(self, command):  # RFC 5804 §2.9
        script = await run_sync(actions.get_script, self.account, command.args[0])
        encoded = script.text.encode("utf-8")
        self.channel.write(b"{%d}\r\n" % len(encoded) + encoded + b"\r\n" + ok())

    async def cmd_deletescript(self, command):  # RFC 5804 §2.10
        await run_sync(actions.delete_script, self.account, command.args[0])
        self.channel.write(ok())

    async def cmd_renamescript(self, command):  # RFC 5804 §2.11.1
        await run_sync(actions.rename_script, self.account, *command.args)
        self.channel.write(ok())


HANDLERS = {name: getattr(Session, f"cmd_{name.lower()}") for name in ALLOWED}
