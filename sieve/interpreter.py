"""Running a compiled Sieve script against one message: which actions it takes.

    run(program, environment) -> Result         raises SieveRuntimeError

Implementation notes
--------------------
- Pure: the message, the envelope, the clock, the spam score, folder existence and
  the scripts that include can reach all come in through an Environment. The result
  is a list of actions (Keep, FileInto, Redirect, Reject, Discard, Vacation) plus the
  implicit keep (RFC 5228 §2.10.2); sieve.delivery carries them out.
- A runtime error (too many redirects, incompatible actions, a missing include, a
  regex that runs too long) is a SieveRuntimeError; the caller delivers to INBOX
  (RFC 5228 §2.10.6) and logs it.
- Variables (RFC 5229) are expanded in every string argument of a script that
  requires "variables"; each script of an include chain has its own, except those
  declared global (RFC 6609 §3.4). Match variables come from the last :matches or
  :regex test that succeeded (RFC 5229 §3.2).
- Bounded: actions (MAX_ACTIONS), redirects (MAX_REDIRECTS, RFC 5228 §2.10.6 lets an
  implementation limit them; they are how loops and abuse multiply), include depth
  and count, variables and their length (RFC 5229 §6 allows limits), steps.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Callable

from sieve import matching
from sieve.compiler import Program, compile_script
from sieve.matching import RegexError
from sieve.message import MessageView
from sieve.parser import ParseError
from sieve.strings import expand, quote_regex, quote_wildcards

MAX_ACTIONS = 64
MAX_REDIRECTS = 4
MAX_INCLUDE_DEPTH = 10
MAX_INCLUDES = 64
MAX_VARIABLES = 256
MAX_VARIABLE_LENGTH = 4096
MAX_STEPS = 100_000


class SieveRuntimeError(Exception):
    """The script failed while running; `line` is where (0 when unknown)."""

    def __init__(self, message, line=0):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self):
        return f"line {self.line}: {self.message}" if self.line else self.message


# --- Actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keep:  # RFC 5228 §4.3
    flags: tuple = ()


@dataclass(frozen=True)
class FileInto:  # RFC 5228 §4.1, RFC 3894, RFC 5490 §3.2, RFC 5232 §5
    mailbox: str
    flags: tuple = ()
    create: bool = False
    copy: bool = False


@dataclass(frozen=True)
class Redirect:  # RFC 5228 §4.2, RFC 3894
    address: str
    copy: bool = False


@dataclass(frozen=True)
class Reject:  # RFC 5429
    reason: str
    extended: bool = False  # ereject


@dataclass(frozen=True)
class Discard:  # RFC 5228 §4.4
    pass


@dataclass(frozen=True)
class Vacation:  # RFC 5230 §4
    reason: str
    days: int = 7
    subject: str | None = None
    from_address: str | None = None
    addresses: tuple = ()
    mime: bool = False
    handle: str = ""


@dataclass
class Result:
    actions: list = field(default_factory=list)
    implicit_keep: bool = True
    flags: tuple = ()  # the internal flags variable at the end (RFC 5232 §3): implicit keep's flags

    def deliveries(self, inbox="INBOX"):
        """[(folder, flags)] the message is stored in: explicit keep/fileinto, and the
        implicit keep unless cancelled. One copy per folder (RFC 5228 §2.10.3), with the
        union of the flags asked for it."""
        folders = {}
        for action in self.actions:
            if isinstance(action, Keep):
                _merge(folders, inbox, action.flags)
            elif isinstance(action, FileInto):
                _merge(folders, action.mailbox, action.flags)
        if self.implicit_keep:
            _merge(folders, inbox, self.flags)
        return list(folders.items())

    def of(self, kind):
        return [a for a in self.actions if isinstance(a, kind)]


def _merge(folders, name, flags):
    have = folders.setdefault(name, ())
    folded = {f.lower() for f in have}
    folders[name] = have + tuple(f for f in flags if f.lower() not in folded)


# --- The environment -------------------------------------------------------------------------


@dataclass
class Environment:
    message: MessageView
    mail_from: str = ""  # envelope sender; "" for the null path
    rcpt_to: str = ""  # the envelope recipient this delivery is for
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))
    spam_percent: int | None = None  # 0-100, None when no spam filter scored it (RFC 5235)
    subaddress_separator: str = "+"
    mailbox_exists: Callable[[str], bool] = lambda name: name.upper() == "INBOX"
    # include (RFC 6609): (location "personal"/"global", name) -> script text, or None if there is none.
    load_script: Callable[[str, str], str | None] = lambda location, name: None
    local_zone: datetime.tzinfo = datetime.timezone.utc


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


@dataclass
class _Scope:
    program: Program
    location: str
    name: str
    variables: dict = field(default_factory=dict)
    declared_global: set = field(default_factory=set)
    match_variables: list = field(default_factory=list)


_ATOM_SPECIALS = re.compile(r'[(){ %*"\\\]\x00-\x1f\x7f]')
SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged", "\\deleted": "\\Deleted", "\\draft": "\\Draft"}


def normalise_flags(strings):
    """The flags named by a list of space-separated strings (RFC 5232 §3): duplicates
    (ignoring case) and invalid flags (RFC 5232 §3: ignored) left out."""
    flags, seen = [], set()
    for text in strings:
        for flag in text.split():
            if flag.startswith("\\"):
                flag = SYSTEM_FLAGS.get(flag.lower())
                if flag is None:
                    continue
            elif _ATOM_SPECIALS.search(flag) or not flag.isascii():
                continue
            if flag.lower() not in seen:
                seen.add(flag.lower())
                flags.append(flag)
    return tuple(flags)


def run(program, environment, *, name="script", location="personal"):
    return run_all([(program, name, location)], environment)


def run_all(programs, environment):
    """Run scripts one after the other as one execution: (program, name, location) each,
    e.g. the operator's "before" script, the user's, the "after" one. They share the
    actions, the implicit keep and the flags; a stop in one ends all (RFC 5228 §3.3)."""
    return _Interpreter(environment).execute(programs)


class _Interpreter:
    def __init__(self, env: Environment):
        self.env = env
        self.result = Result()
        self.flags = ()
        self.globals = {}
        self.steps = 0
        self.includes = 0
        self.included_once = set()
        self.stack = []

    def execute(self, programs):
        try:
            for program, name, location in programs:
                self.stack = [(location, name)]
                try:
                    self.block(program.commands, _Scope(program, location, name))
                except _Return:  # RFC 6609 §3.3: return at the top ends that script
                    pass
        except _Stop:
            pass
        except RegexError as error:
            raise SieveRuntimeError(str(error)) from None
        self.result.flags = self.flags
        self._check_compatible()
        return self.result

    # --- Variables ----------------------------------------------------------------------------

    def string(self, scope, text):
        if not scope.program.uses("variables") or "${" not in text:
            return text
        return expand(text, lambda name: self.lookup(scope, name))

    def strings(self, scope, values):
        return [self.string(scope, v) for v in values]

    def lookup(self, scope, name):
        if name.isdigit():
            index = int(name)
            return scope.match_variables[index] if index < len(scope.match_variables) else ""
        if name.startswith("global."):
            return self.globals.get(name[7:], "")
        if name in scope.declared_global:
            return self.globals.get(name, "")
        if "." in name:
            return ""  # unknown namespace (RFC 5229 §3): empty
        return scope.variables.get(name, "")

    def assign(self, scope, name, value, line):
        name = name.lower()
        value = value[:MAX_VARIABLE_LENGTH]
        if name.startswith("global."):
            store, name = self.globals, name[7:]
        elif name in scope.declared_global:
            store = self.globals
        else:
            store = scope.variables
        if name not in store and len(store) >= MAX_VARIABLES:
            raise SieveRuntimeError(f"more than {MAX_VARIABLES} variables", line)
        store[name] = value

    # --- Commands -----------------------------------------------------------------------------

    def block(self, nodes, scope):
        for node in nodes:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise SieveRuntimeError("the script ran too long", node.line)
            getattr(self, f"cmd_{node.name}")(node, scope)

    def cmd_if(self, node, scope):  # RFC 5228 §3.1
        if self.test(node.tests[0], scope):
            self.block(node.block, scope)
            return
        for branch in node.else_chain:
            if branch.name == "else" or self.test(branch.tests[0], scope):
                self.block(branch.block, scope)
                return

    def cmd_stop(self, node, scope):  # RFC 5228 §3.3
        raise _Stop()

    def _add(self, action, node):
        if len(self.result.actions) >= MAX_ACTIONS:
            raise SieveRuntimeError(f"more than {MAX_ACTIONS} actions", node.line)
        self.result.actions.append(action)

    def _flags_for(self, node, scope):
        if ":flags" in node.tags:
            return normalise_flags(self.strings(scope, node.tags[":flags"]))
        return self.flags if scope.program.uses("imap4flags") else ()

    def cmd_keep(self, node, scope):  # RFC 5228 §4.3, RFC 5232 §5
        self._add(Keep(self._flags_for(node, scope)), node)
        self.result.implicit_keep = False

    def cmd_discard(self, node, scope):  # RFC 5228 §4.4
        self._add(Discard(), node)
        self.result.implicit_keep = False

    def cmd_fileinto(self, node, scope):  # RFC 5228 §4.1
        mailbox = self.string(scope, node.positional[0])
        if not mailbox:
            raise SieveRuntimeError("fileinto with an empty folder name", node.line)
        copy = node.tags.get(":copy", False)
        self._add(FileInto(mailbox, self._flags_for(node, scope), node.tags.get(":create", False), copy), node)
        if not copy:
            self.result.implicit_keep = False

    def cmd_redirect(self, node, scope):  # RFC 5228 §4.2
        address = self.string(scope, node.positional[0]).strip()
        if "@" not in address or any(c in address for c in " \t\r\n<>,"):
            raise SieveRuntimeError(f'redirect to an invalid address "{address[:100]}"', node.line)
        copy = node.tags.get(":copy", False)
        redirects = self.result.of(Redirect)
        # RFC 5228 §2.10.3: the same address twice is one redirect.
        if not any(r.address.lower() == address.lower() for r in redirects):
            if len(redirects) >= MAX_REDIRECTS:
                raise SieveRuntimeError(f"more than {MAX_REDIRECTS} redirects", node.line)
            self._add(Redirect(address, copy), node)
        if not copy:
            self.result.implicit_keep = False

    def cmd_reject(self, node, scope, extended=False):  # RFC 5429 §2.2
        if self.result.of(Reject):
            raise SieveRuntimeError("only one reject or ereject may be used", node.line)
        self._add(Reject(self.string(scope, node.positional[0]), extended), node)
        self.result.implicit_keep = False

    def cmd_ereject(self, node, scope):  # RFC 5429 §2.1
        self.cmd_reject(node, scope, extended=True)

    def cmd_vacation(self, node, scope):  # RFC 5230 §4
        if self.result.of(Vacation):
            raise SieveRuntimeError("only one vacation action may be used", node.line)  # RFC 5230 §4.7
        tags = node.tags
        reason = self.string(scope, node.positional[0])
        subject = self.string(scope, tags[":subject"]) if ":subject" in tags else None
        from_address = self.string(scope, tags[":from"]) if ":from" in tags else None
        mime = tags.get(":mime", False)
        # RFC 5230 §4.2: without :handle, the same reason/subject/from/mime is the same vacation.
        handle = self.string(scope, tags[":handle"]) if ":handle" in tags else _default_handle(reason, subject, from_address, mime)
        self._add(
            Vacation(
                reason=reason,
                days=tags.get(":days", 7),
                subject=subject,
                from_address=from_address,
                addresses=tuple(self.strings(scope, tags.get(":addresses", ()))),
                mime=mime,
                handle=handle,
            ),
            node,
        )

    def _flag_command(self, node, scope, change):  # RFC 5232 §3
        variable, values = node.positional
        flags = normalise_flags(self.strings(scope, values))
        if variable is None:
            self.flags = change(self.flags, flags)
        else:
            current = normalise_flags([self.lookup(scope, variable.lower())])
            self.assign(scope, variable, " ".join(change(current, flags)), node.line)

    def cmd_setflag(self, node, scope):
        self._flag_command(node, scope, lambda current, flags: flags)

    def cmd_addflag(self, node, scope):
        self._flag_command(node, scope, lambda current, flags: normalise_flags([*current, *flags]))

    def cmd_removeflag(self, node, scope):
        def remove(current, flags):
            gone = {f.lower() for f in flags}
            return tuple(f for f in current if f.lower() not in gone)

        self._flag_command(node, scope, remove)

    def cmd_set(self, node, scope):  # RFC 5229 §4
        name, value = node.positional
        value = self.string(scope, value)
        tags = node.tags
        # RFC 5229 §4.1: modifiers apply in order of precedence, highest first.
        if ":lower" in tags:
            value = value.lower()
        if ":upper" in tags:
            value = value.upper()
        if ":lowerfirst" in tags:
            value = value[:1].lower() + value[1:]
        if ":upperfirst" in tags:
            value = value[:1].upper() + value[1:]
        if ":quotewildcard" in tags:
            value = quote_wildcards(value)
        if ":quoteregex" in tags:
            value = quote_regex(value)
        if ":length" in tags:
            value = str(len(value))
        self.assign(scope, name, value, node.line)

    def cmd_include(self, node, scope):  # RFC 6609 §3.2
        location = "global" if node.tags.get(":global") else "personal"
        name = self.string(scope, node.positional[0])
        key = (location, name)
        if node.tags.get(":once") and key in self.included_once:
            return
        if key in self.stack:
            raise SieveRuntimeError(f'include of "{name[:100]}" loops back to itself', node.line)
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            raise SieveRuntimeError(f"includes nested more than {MAX_INCLUDE_DEPTH} deep", node.line)
        self.includes += 1
        if self.includes > MAX_INCLUDES:
            raise SieveRuntimeError(f"more than {MAX_INCLUDES} includes", node.line)
        text = self.env.load_script(location, name)
        if text is None:
            if node.tags.get(":optional"):
                return
            raise SieveRuntimeError(f'included {location} script "{name[:100]}" does not exist', node.line)
        try:
            program = compile_script(text)
        except ParseError as error:
            raise SieveRuntimeError(f'included script "{name[:100]}" is invalid: {error}', node.line) from None
        self.included_once.add(key)
        self.stack.append(key)
        try:
            self.block(program.commands, _Scope(program, location, name))
        except _Return:
            pass
        finally:
            self.stack.pop()

    def cmd_return(self, node, scope):  # RFC 6609 §3.3
        raise _Return()

    def cmd_global(self, node, scope):  # RFC 6609 §3.4
        for name in node.positional[0]:
            scope.declared_global.add(name.lower())

    # --- Tests --------------------------------------------------------------------------------

    def test(self, node, scope):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SieveRuntimeError("the script ran too long", node.line)
        return getattr(self, f"test_{node.name}")(node, scope)

    def test_true(self, node, scope):
        return True

    def test_false(self, node, scope):
        return False

    def test_not(self, node, scope):
        return not self.test(node.tests[0], scope)

    def test_allof(self, node, scope):  # RFC 5228 §5.2: evaluated left to right, stops early
        return all(self.test(t, scope) for t in node.tests)

    def test_anyof(self, node, scope):
        return any(self.test(t, scope) for t in node.tests)

    def test_exists(self, node, scope):  # RFC 5228 §5.5
        return all(self.env.message.has(name) for name in self.strings(scope, node.positional[0]))

    def test_size(self, node, scope):  # RFC 5228 §5.9
        limit = node.positional[0]
        size = self.env.message.size
        return size > limit if ":over" in node.tags else size < limit

    def _compare(self, node, scope, values, keys=None):
        """Does any value match any key under the node's comparator and match type?"""
        keys = self.strings(scope, node.positional[-1] if keys is None else keys)
        comparator = node.tags.get(":comparator", "i;ascii-casemap")
        if ":count" in node.tags:
            # RFC 5231 §4.2: the number of values, compared with each key.
            count = str(len(values))
            relation = node.tags[":count"]
            return any(matching.relation_holds(relation, matching.compare(count, key, comparator)) for key in keys)
        match_type, relation = ":is", None
        for tag in (":is", ":contains", ":matches", ":regex", ":value"):
            if tag in node.tags:
                match_type = tag
                relation = node.tags[tag] if tag == ":value" else None
        for value in values:
            for key in keys:
                matched, captures = matching.match(value, key, match_type, comparator, relation)
                if matched:
                    if captures is not None and scope.program.uses("variables"):
                        scope.match_variables = captures[:10]
                    return True
        return False

    def _indexed(self, node, values):
        """RFC 5260 §6: only the :index'th field (from the end with :last)."""
        index = node.tags.get(":index")
        if index is None:
            return values
        if index > len(values):
            return []
        return [values[-index] if node.tags.get(":last") else values[index - 1]]

    def test_header(self, node, scope):  # RFC 5228 §5.7
        values = []
        for name in self.strings(scope, node.positional[0]):
            values += self._indexed(node, self.env.message.values(name))
        return self._compare(node, scope, values)

    def _address_part(self, node, address):
        """The part of `address` the node compares, or None when it has none (RFC 5233 §4)."""
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        if ":localpart" in node.tags:
            return local
        if ":domain" in node.tags:
            return domain
        separator = self.env.subaddress_separator
        if ":user" in node.tags:
            return local.split(separator, 1)[0] if local else local
        if ":detail" in node.tags:
            if separator not in local:
                return None
            return local.split(separator, 1)[1]
        return address

    def test_address(self, node, scope):  # RFC 5228 §5.1
        values = []
        for name in self.strings(scope, node.positional[0]):
            for field_value in self._indexed(node, self.env.message.values(name)):
                for address in self.env.message.addresses(field_value):
                    part = self._address_part(node, address)
                    if part is not None:
                        values.append(part)
        return self._compare(node, scope, values)

    def test_envelope(self, node, scope):  # RFC 5228 §5.4
        values = []
        for part_name in self.strings(scope, node.positional[0]):
            address = {"from": self.env.mail_from, "to": self.env.rcpt_to}.get(part_name.lower())
            if address is None:
                continue
            if address == "":
                values.append("")  # the null reverse-path: every part is empty
                continue
            part = self._address_part(node, address)
            if part is not None:
                values.append(part)
        return self._compare(node, scope, values)

    def test_body(self, node, scope):  # RFC 5173
        message = self.env.message
        if ":raw" in node.tags:
            texts = [message.body_raw()]
        elif ":content" in node.tags:
            texts = message.body_parts(self.strings(scope, node.tags[":content"]))
        else:
            texts = message.body_text()
        if ":count" in node.tags or ":value" in node.tags:
            return self._compare(node, scope, texts)
        # RFC 5173 §4: :is and :matches are against the whole text, :contains within it.
        return self._compare(node, scope, texts)

    def test_hasflag(self, node, scope):  # RFC 5232 §4
        variables, _ = node.positional
        if variables is None:
            flags = list(self.flags)
        else:
            flags = list(normalise_flags([self.lookup(scope, name.lower()) for name in variables]))
        return self._compare(node, scope, flags)

    def test_string(self, node, scope):  # RFC 5229 §5
        sources = self.strings(scope, node.positional[0])
        if ":count" in node.tags:
            sources = [s for s in sources if s]  # RFC 5229 §5: empty strings are not counted
        return self._compare(node, scope, sources)

    def test_date(self, node, scope):  # RFC 5260 §4
        header, part, _ = node.positional
        values = []
        for value in self._indexed(node, self.env.message.values(self.string(scope, header))):
            when = _parse_date(value)
            if when is None:
                continue
            values.append(_date_part(self._zoned(node, scope, when), self.string(scope, part)))
        return self._compare(node, scope, [v for v in values if v is not None])

    def test_currentdate(self, node, scope):  # RFC 5260 §5
        part, _ = node.positional
        value = _date_part(self._zoned(node, scope, self.env.now), self.string(scope, part))
        return value is not None and self._compare(node, scope, [value])

    def _zoned(self, node, scope, when):
        if node.tags.get(":originalzone"):
            return when
        zone = node.tags.get(":zone")
        if zone is None:
            return when.astimezone(self.env.local_zone)
        offset = _parse_zone(self.string(scope, zone))
        return when.astimezone(offset) if offset is not None else when.astimezone(self.env.local_zone)

    def test_spamtest(self, node, scope):  # RFC 5235 §3.2, §3.3
        percent = self.env.spam_percent
        if ":percent" in node.tags:
            value = "0" if percent is None else str(max(0, min(100, int(percent))))
        else:
            # 0: not tested; 1 (certainly not spam) to 10 (certainly spam).
            value = "0" if percent is None else str(1 + (max(0, min(100, int(percent))) * 9 + 50) // 100)
        return self._compare(node, scope, [value], keys=(node.positional[0],))

    def test_mailboxexists(self, node, scope):  # RFC 5490 §3.1
        return all(self.env.mailbox_exists(name) for name in self.strings(scope, node.positional[0]))

    # --- After the run ------------------------------------------------------------------------

    def _check_compatible(self):
        """RFC 5429 §2.1-2.2: reject and ereject go with no keep, fileinto, redirect or
        vacation (RFC 5230 §4.7)."""
        if self.result.of(Reject):
            others = [a for a in self.result.actions if isinstance(a, (Keep, FileInto, Redirect, Vacation))]
            if others:
                raise SieveRuntimeError(f"reject cannot be combined with {_action_name(others[0])}")


def _action_name(action):
    return {Keep: "keep", FileInto: "fileinto", Redirect: "redirect", Vacation: "vacation"}[type(action)]


def _default_handle(reason, subject, from_address, mime):
    import hashlib

    text = "\x00".join([reason, subject or "", from_address or "", "mime" if mime else ""])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _parse_date(value):
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": no zone information (RFC 5322 §3.3)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


_ZONE = re.compile(r"([+-])([0-9]{2})([0-9]{2})")


def _parse_zone(text):
    match = _ZONE.fullmatch(text.strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 23 or int(minutes) > 59:
        return None
    delta = datetime.timedelta(hours=int(hours), minutes=int(minutes))
    return datetime.timezone(-delta if sign == "-" else delta)


def _format_zone(when):
    offset = when.utcoffset() or datetime.timedelta(0)
    sign = "-" if offset < datetime.timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _date_part(when, part):
    """RFC 5260 §4.2 date-part values, or None for an unknown part."""
    part = part.lower()
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        # Modified Julian Day: days since 1858-11-17.
        return str((when.date() - datetime.date(1858, 11, 17)).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        zone = _format_zone(when)
        return when.strftime("%Y-%m-%dT%H:%M:%S") + f"{zone[:3]}:{zone[3:]}"
    if part == "std11":
        import email.utils

        return email.utils.format_datetime(when)
    if part == "zone":
        return _format_zone(when)
    if part == "weekday":
        return str((when.weekday() + 1) % 7)  # 0 is Sunday
    return None
