"""One IMAP connection: framing, the state machine, dispatch, and error mapping.

Implementation notes
- States (RFC 9051 §3): NOT_AUTHENTICATED → AUTHENTICATED ⇄ SELECTED → LOGOUT. Which
  command runs in which state is one table (`imap.commands.TABLE`); a command in the
  wrong state is answered `BAD` and changes nothing.
- A command is read whole (lines and literals, RFC 9051 §4.3; LITERAL+ per RFC 7888)
  before it is parsed; nothing is parsed twice. Literal sizes are bounded before a
  single octet is read: small before login, the message size limit after.
- Errors are mapped here and only here: ParseError → BAD (or NO where the RFC says),
  CommandError → its status and code, anything else → `NO [SERVERBUG]` with the
  traceback in the log. Exception text never reaches the wire.
- No database transaction is open while we write to the socket: handlers do their ORM
  work through `run_sync` and write afterwards.
- After every command the selected mailbox catches up with the store (one query when
  nothing changed), so EXISTS/EXPUNGE/FETCH updates reach every client, whichever
  process made the change; while idling, a change event triggers the same.
- Ten syntax errors in a row, or a line over the limit before login, end the session
  with BYE: a client that speaks garbage is cut off.
- A server shutdown ends every session with BYE (RFC 9051 §7.1.5), never in the middle
  of a response: at once when the session waits for its client, else after the command
  or IDLE wake-up under way.
"""
import asyncio
import enum
import logging

from django.conf import settings

from imap import parser
from imap.mailbox import FolderGone, SelectedMailbox, changes_since, with_changes
from imap.parser import LiteralTooBig, ParseError
from imap.responses import status_line
from imap.server import ConnectionClosed, LineTooLong
from mailsuite.lib.aio import run_shared_write, run_sync
from mailsuite.lib.net import is_loopback

log = logging.getLogger("mailsuite.imap")

MAX_LINE = 64 * 1024  # Dovecot's default too; long UID sets fit
PREAUTH_MAX_LITERAL = 8 * 1024  # a LOGIN password in a literal, no more
MAX_BAD_COMMANDS = 10
SASL_LINE = 16 * 1024
CATCH_UP_MAX_AGE = 2.0  # seconds a look at the folder stands when no change was announced
BYE_SHUTDOWN = b"* BYE Server shutting down\r\n"


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class CommandError(Exception):
    """A refusal the client gets as `tag NO|BAD [code] text`."""

    status = "NO"

    def __init__(self, text, code=None):
        super().__init__(text)
        self.text = text
        self.code = code


class No(CommandError):
    status = "NO"


class Bad(CommandError):
    status = "BAD"


# A handler returns this when it sent its own tagged reply (COMPRESS, STARTTLS).
ANSWERED = object()


class Logout(Exception):
    """End the session after the current response (LOGOUT, autologout, BYE)."""


class Session:
    def __init__(self, connection, *, service):
        self.connection = connection
        self.service = service
        self.state = State.NOT_AUTHENTICATED
        self.account = None
        self._selected: SelectedMailbox | None = None
        self.enabled = set()  # RFC 5161 ENABLE: CONDSTORE, QRESYNC, UTF8=ACCEPT, IMAP4rev2
        self.condstore = False  # on after ENABLE CONDSTORE/QRESYNC or a CONDSTORE-using command
        self.bad_commands = 0
        self.idling = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._awaiting_input = False
        self.client_id = None
        self._unsure = True  # the selected folder may have changed since we last looked
        self._heard_modseq = 0  # the highest MODSEQ the change bus announced for the selected folder
        self._looked_ahead = None  # a command's own look at the folder: see run_and_look
        self._checked_at = 0.0
        self._news_while_opening = None  # change news heard while SELECT opens a folder
        self.task = None

    # --- properties the handlers use ------------------------------------------------

    @property
    def selected(self) -> SelectedMailbox | None:
        return self._selected

    @selected.setter
    def selected(self, mailbox):
        # The new view may be behind the store until told otherwise (open_folder()): look.
        self._selected = mailbox
        self._unsure = True
        self._heard_modseq = 0
        self._looked_ahead = None

    async def open_folder(self, fn, *args):
        """SELECT's trip to the database: run_sync(fn, *args), which opens a folder.
        Returns (its result, a function that selects the SelectedMailbox made of it)."""
        started = asyncio.get_running_loop().time()
        self._news_while_opening = []
        try:
            opened = await run_sync(fn, *args)
        finally:
            news, self._news_while_opening = self._news_while_opening, None

        def select(mailbox):
            # The open was a look: what changed while it ran is in the news heard
            # meanwhile, and told again now it decides whether SELECT looks once more.
            self.selected = mailbox
            self._unsure = False
            self._checked_at = started
            for change in news:
                self.notify(change)

        return opened, select

    @property
    def _stale(self):
        """Whether the selected folder changed since we last looked, as far as we heard."""
        mailbox = self._selected
        return self._unsure or (mailbox is not None and self._heard_modseq > mailbox.highestmodseq)

    @property
    def peer(self):
        return self.connection.peer

    @property
    def utf8(self):
        return "UTF8=ACCEPT" in self.enabled or "IMAP4rev2" in self.enabled

    @property
    def rev2(self):
        return "IMAP4rev2" in self.enabled

    @property
    def qresync(self):
        return "QRESYNC" in self.enabled

    @property
    def login_allowed(self):
        """Password mechanisms need TLS, except from loopback when the operator allows it."""
        if self.connection.tls:
            return True
        return settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK and is_loopback(self.peer)

    def send(self, data: bytes):
        self.connection.write(data)

    async def flush(self):
        await self.connection.flush()

    # --- notifications ---------------------------------------------------------------

    def notify(self, change):
        if self._news_while_opening is not None:
            self._news_while_opening.append(change)
        if self.selected is not None and change.folder_id in (self.selected.folder_id, None):
            # A change with its MODSEQ is news only while the view is behind it (our own
            # writes' news often comes after the look that already saw them).
            if change.folder_id is None or change.modseq is None:
                self._unsure = True
            else:
                self._heard_modseq = max(self._heard_modseq, change.modseq)
            self._wake.set()
        elif change.kind == "folder":
            self._wake.set()

    def shutdown(self):
        """Server stopping: BYE (RFC 9051 §7.1.5), then the end. A session waiting for its
        client hears it at once; one running a command or idling says it when that step
        ends, so a BYE never lands inside a response."""
        self._stopping = True
        self._wake.set()
        if self._awaiting_input:
            self.connection.close(farewell=BYE_SHUTDOWN)

    # --- the loop --------------------------------------------------------------------

    async def run(self):
        from imap.capabilities import capability_names

        self.send(b"* OK [CAPABILITY " + " ".join(capability_names(self)).encode() + b"] mailsuite IMAP ready\r\n")
        try:
            await self.flush()
            while self.state is not State.LOGOUT:
                if self._stopping:
                    self.send(BYE_SHUTDOWN)
                    raise Logout()
                if not await self._one_command():
                    break
                await self.flush()
        except (ConnectionClosed, asyncio.CancelledError):
            pass
        except Logout:
            try:
                await self.flush()
            except ConnectionClosed:
                pass
        finally:
            self._leave_account()

    def _timeout(self):
        if self.state is State.NOT_AUTHENTICATED:
            return settings.MAILSUITE_IMAP_PREAUTH_TIMEOUT
        return settings.MAILSUITE_IMAP_TIMEOUT

    async def _read_command(self):
        """The whole command (lines and literals), or None after answering a framing error."""
        max_literal = PREAUTH_MAX_LITERAL if self.state is State.NOT_AUTHENTICATED else settings.MAILSUITE_MESSAGE_SIZE_LIMIT
        max_total = max_literal * 2 + MAX_LINE
        parts = []
        total = 0
        tag = None
        while True:
            try:
                line = await self.connection.readline(MAX_LINE)
            except LineTooLong:
                self.send(status_line(None, "BAD", "Line too long"))
                if self.state is State.NOT_AUTHENTICATED:
                    self.send(b"* BYE Too much garbage\r\n")
                    raise Logout()
                return None
            if tag is None:
                tag = parser.peek_tag(line)
            parts.append(line)
            total += len(line)
            try:
                literal = parser.literal_announcement(line, max_literal=max_literal, tag=tag)
            except LiteralTooBig as error:
                await self._refuse_literal(error, max_total)
                return None
            if literal is None:
                return b"".join(parts)
            total += literal.size
            if total > max_total:
                await self._refuse_literal(LiteralTooBig("command too big", literal=literal, tag=tag), max_total)
                return None
            if literal.synchronizing:
                self.send(b"+ Ready for literal data\r\n")
                await self.flush()
            parts.append(await self.connection.readexactly(literal.size))

    async def _refuse_literal(self, error, max_total):
        self.send(status_line(error.tag, error.status, "Literal too big", error.code))
        if not error.literal.synchronizing:
            # The octets are on their way; read past them unless that is absurd.
            if error.literal.size > max_total * 4:
                self.send(b"* BYE Literal too big\r\n")
                raise Logout()
            await self.flush()
            await self.connection.discard(error.literal.size)
            await self.connection.readline(MAX_LINE)  # the rest of that command line

    async def _await_input(self, reading):
        """What the client sends next. Meanwhile nothing waits in our output buffer, so a
        server shutdown may say BYE and close the connection straight away."""
        self._awaiting_input = True
        try:
            return await asyncio.wait_for(reading, self._timeout())
        finally:
            self._awaiting_input = False

    async def _one_command(self):
        try:
            data = await self._await_input(self._read_command())
        except asyncio.TimeoutError:
            self.send(b"* BYE Autologout; idle for too long\r\n")
            await self.flush()
            return False
        if data is None:
            return True
        try:
            command = parser.parse_command(data, utf8=self.utf8)
        except ParseError as error:
            self.send(status_line(error.tag, error.status, error.message, error.code))
            return self._count_bad()
        await self.execute(command)
        return True

    def _count_bad(self):
        self.bad_commands += 1
        if self.bad_commands >= MAX_BAD_COMMANDS:
            self.send(b"* BYE Too many invalid commands\r\n")
            raise Logout()
        return True

    async def execute(self, command):
        from imap.commands import TABLE

        entry = TABLE.get(type(command))
        if entry is None or self.state not in entry.states:
            self.send(status_line(command.tag, "BAD", f"{command.name} not allowed now"))
            self._count_bad()
            return
        try:
            result = await entry.handler(self, command)
        except CommandError as error:
            if error.status == "BAD":
                self._count_bad()
            await self._catch_up_after(command)
            self.send(status_line(command.tag, error.status, error.text, error.code))
            return
        except (ConnectionClosed, Logout, asyncio.CancelledError):
            raise
        except FolderGone:
            self.send(b"* BYE The selected mailbox was deleted\r\n")
            raise Logout()
        except Exception:
            log.exception("IMAP %s failed (peer %s)", command.name, self.peer)
            self.send(status_line(command.tag, "NO", "Internal error; the administrator can see why in the log", "SERVERBUG"))
            return
        self.bad_commands = 0
        if result is ANSWERED:
            return
        if self.state is State.LOGOUT:
            self.send(status_line(command.tag, "OK", "LOGOUT completed"))
            raise Logout()
        await self._catch_up_after(command)
        code, text = result if result else (None, f"{command.name} completed")
        self.send(status_line(command.tag, "OK", text, code))

    async def _catch_up_after(self, command):
        if self.selected is None:
            return
        # RFC 9051 §7.5.1: no EXPUNGE during FETCH, STORE or SEARCH by message number.
        by_number = isinstance(command, (parser.Fetch, parser.Store, parser.Search)) and not command.uid
        ahead, self._looked_ahead = self._looked_ahead, None
        if ahead is not None and ahead[0] is self.selected and ahead[1] == self.selected.highestmodseq:
            # The command looked at the folder in its own trip to the database: what changed
            # after that look waits for the next command (or IDLE), unless we cannot tell what.
            mailbox, _, snapshot, self._checked_at = ahead
            self._apply(mailbox, snapshot, allow_expunge=not by_number)
            if not self._unsure:
                return
        # The change bus tells us when the folder changed (our own writes included, since
        # they publish before their result reaches us); without news, a recent check
        # stands, except for the commands whose point is to look (NOOP, CHECK).
        fresh = asyncio.get_running_loop().time() - self._checked_at < CATCH_UP_MAX_AGE
        if not self._stale and fresh and not isinstance(command, (parser.Noop, parser.Check)):
            if not by_number:
                for line in self.selected.announce_expunges(qresync=self.qresync):
                    self.send(line)
            return
        await self.catch_up(allow_expunge=not by_number)

    async def catch_up(self, *, allow_expunge=True):
        mailbox = self.selected
        self._unsure = False
        self._checked_at = asyncio.get_running_loop().time()
        snapshot = await run_sync(changes_since, mailbox.folder_id, mailbox.highestmodseq)
        if mailbox is self.selected:
            self._apply(mailbox, snapshot, allow_expunge=allow_expunge)

    def _apply(self, mailbox, snapshot, *, allow_expunge):
        if snapshot is not None:
            for line in mailbox.apply(snapshot, allow_expunge=allow_expunge, qresync=self.qresync, condstore=self.condstore):
                self.send(line)
        elif allow_expunge:
            for line in mailbox.announce_expunges(qresync=self.qresync):
                self.send(line)

    async def run_and_look(self, runner, fn, *args, **kwargs):
        """runner(fn, ...) (run_sync or run_shared_write) that also reads what changed in the
        selected folder in the same trip (for a write, in its transaction): the look after
        the command needs no trip of its own."""
        mailbox = self.selected
        if mailbox is None:
            return await runner(fn, *args, **kwargs)
        since, when = mailbox.highestmodseq, asyncio.get_running_loop().time()
        result, snapshot = await runner(with_changes(fn, mailbox.folder_id, since), *args, **kwargs)
        self._looked_ahead = (mailbox, since, snapshot, when)
        return result

    async def write_and_look(self, fn, *args, **kwargs):
        return await self.run_and_look(run_shared_write, fn, *args, **kwargs)

    # --- reads inside a command (AUTHENTICATE, IDLE) --------------------------------

    async def read_line(self, limit=SASL_LINE):
        try:
            line = await self._await_input(self.connection.readline(limit))
        except asyncio.TimeoutError:
            self.send(b"* BYE Autologout; idle for too long\r\n")
            raise Logout() from None
        except LineTooLong:
            raise Bad("Line too long") from None
        return line[:-2]

    async def idle(self):
        """RFC 2177: updates as they happen until the client sends DONE."""
        self.send(b"+ idling\r\n")
        self.idling = True
        if self.selected is not None:
            await self.catch_up()
        await self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.MAILSUITE_IMAP_TIMEOUT
        reader = asyncio.ensure_future(self.connection.readline(MAX_LINE))
        try:
            while True:
                waker = asyncio.ensure_future(self._wake.wait())
                # Events are hints that can be lost: a slow poll makes sure nothing waits forever.
                done, _ = await asyncio.wait(
                    {reader, waker}, timeout=settings.MAILSUITE_IMAP_IDLE_POLL, return_when=asyncio.FIRST_COMPLETED
                )
                if waker not in done:
                    waker.cancel()
                if self._stopping:
                    self.send(BYE_SHUTDOWN)
                    raise Logout()
                if reader in done:
                    try:
                        line = reader.result()
                    except LineTooLong:
                        raise Bad("Line too long") from None
                    if not parser.is_idle_done(line):
                        raise Bad("Expected DONE")
                    return
                self._wake.clear()
                if self.selected is not None:
                    await self.catch_up()
                await self.flush()
                if loop.time() > deadline:
                    self.send(b"* BYE Autologout; idle for too long\r\n")
                    raise Logout()
        finally:
            self.idling = False
            if not reader.done():
                reader.cancel()

    # --- account --------------------------------------------------------------------

    def enter_account(self, account):
        self.account = account
        self.state = State.AUTHENTICATED
        self.service.notifier.watch(account.pk, self)

    def _leave_account(self):
        if self.account is not None and self.service.notifier is not None:
            self.service.notifier.unwatch(self.account.pk, self)
