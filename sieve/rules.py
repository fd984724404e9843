"""Simple filters, vacation and forwarding settings, stored as the account's Sieve script.

The webmail's simple editors work on Filters; what is stored is always a Sieve script,
so ManageSieve clients see the same rules and the delivery code knows nothing else.

    build_script(filters) -> text             the script for these settings
    parse_script(text) -> Filters             raises TooComplex: use the raw editor
    load(account) -> Loaded                   the active script, parsed when simple
    save(account, filters) / save_raw(account, text)

A script counts as simple when it is exactly what build_script() writes for some
settings (it starts with MARKER, and building it again gives the same text), so the
simple editor never drops anything a person or another client wrote; any other
script is "too complex for the simple editor" and is edited raw.

Layout of a built script: require; forwarding (`if true`/`if false` around one
redirect); each rule as `# rule: NAME` and one `if` (a disabled one has `false` first
in an allof); vacation last (after the rules, so a rule's reject, which ends the
script, never meets it: RFC 5230 §4.7).
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

from sieve import actions
from sieve.compiler import compile_script
from sieve.parser import ParseError

MARKER = "# mailsuite filters: written by the webmail's simple editor"
SCRIPT_NAME = "filters"  # the name used when the account has no active script

FIELDS = ("from", "to", "subject", "header", "size")
OPERATORS = ("contains", "not_contains", "is", "not_is", "matches", "over", "under")
ACTIONS = ("move", "copy", "flag", "forward", "forward_copy", "discard", "reject", "stop")


class TooComplex(Exception):
    """The script is not one the simple editor wrote; the message says why."""


class RulesError(ValueError):
    """Settings that cannot be turned into a script (the message is for the user)."""


@dataclass
class Condition:
    field: str  # one of FIELDS
    operator: str  # one of OPERATORS ("over"/"under" only for size)
    value: str  # text, or a size in bytes for size
    header: str = ""  # the field name when field == "header"


@dataclass
class Action:
    kind: str  # one of ACTIONS
    argument: str = ""  # folder, flag, address or reject text


@dataclass
class Rule:
    name: str
    conditions: list
    actions: list
    match_all: bool = True  # all conditions (allof) or any (anyof)
    enabled: bool = True


@dataclass
class Vacation:
    subject: str
    body: str
    enabled: bool = True
    start: datetime.date | None = None
    end: datetime.date | None = None
    days: int = 7
    addresses: list = field(default_factory=list)  # more addresses of the user (RFC 5230 :addresses)


@dataclass
class Forwarding:
    address: str
    keep_copy: bool = True
    enabled: bool = True


@dataclass
class Filters:
    rules: list = field(default_factory=list)
    vacation: Vacation | None = None
    forwarding: Forwarding | None = None


# --- Building ----------------------------------------------------------------------------------


def _q(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(values):
    return "[" + ", ".join(_q(v) for v in values) + "]"


_MATCH = {"contains": ":contains", "not_contains": ":contains", "is": ":is", "not_is": ":is", "matches": ":matches"}


def _condition(condition):
    if condition.field not in FIELDS:
        raise RulesError(f"unknown field {condition.field!r}")
    if condition.field == "size":
        if condition.operator not in ("over", "under"):
            raise RulesError("a size is compared with over or under")
        value = str(condition.value).strip()
        if not value.isdigit():
            raise RulesError("a size is a number of bytes")
        return f"size :{condition.operator} {int(value)}"
    if condition.operator not in _MATCH:
        raise RulesError(f"unknown comparison {condition.operator!r}")
    match = _MATCH[condition.operator]
    if condition.field == "from":
        test = f'address {match} "from" {_q(condition.value)}'
    elif condition.field == "to":
        test = f'address {match} ["to", "cc"] {_q(condition.value)}'
    elif condition.field == "subject":
        test = f'header {match} "subject" {_q(condition.value)}'
    else:
        if not re.fullmatch(r"[!-9;-~]+", condition.header or ""):
            raise RulesError("a header name is needed, without spaces or colons")
        test = f"header {match} {_q(condition.header)} {_q(condition.value)}"
    return f"not {test}" if condition.operator.startswith("not_") else test


def _action(action):
    if action.kind not in ACTIONS:
        raise RulesError(f"unknown action {action.kind!r}")
    argument = action.argument
    if action.kind in ("move", "copy", "forward", "forward_copy", "flag") and not argument:
        raise RulesError(f"{action.kind} needs {'a folder' if action.kind in ('move', 'copy') else 'an address' if 'forward' in action.kind else 'a flag'}")
    return {
        "move": lambda: f"fileinto {_q(argument)};",
        "copy": lambda: f"fileinto :copy {_q(argument)};",
        "flag": lambda: f"addflag {_q(argument)};",
        "forward": lambda: f"redirect {_q(argument)};",
        "forward_copy": lambda: f"redirect :copy {_q(argument)};",
        "discard": lambda: "discard;",
        "reject": lambda: f"reject {_q(argument or 'Message rejected')};\n  stop;",
        "stop": lambda: "stop;",
    }[action.kind]()


def _test(tests, match_all, enabled):
    if match_all:
        body = ", ".join(tests)
        return f"allof ({'false, ' if not enabled else ''}{body})"
    inner = f"anyof ({', '.join(tests)})"
    return f"allof (false, {inner})" if not enabled else inner


REQUIRE = ["fileinto", "copy", "imap4flags", "reject", "vacation", "date", "relational"]


def build_script(filters: Filters) -> str:
    """The Sieve script for these settings (checked: it always compiles)."""
    lines = [MARKER, f"require {_list(REQUIRE)};"]
    rejects = any(a.kind == "reject" for r in filters.rules for a in r.actions)
    forwarding = filters.forwarding
    if forwarding is not None:
        if rejects and forwarding.enabled:
            raise RulesError("a rule that rejects mail cannot be combined with forwarding")
        if "@" not in forwarding.address:
            raise RulesError("forwarding needs an address")
        command = "redirect :copy" if forwarding.keep_copy else "redirect"
        lines += ["# forwarding", f"if {'true' if forwarding.enabled else 'false'} {{", f"  {command} {_q(forwarding.address)};", "}"]
    for rule in filters.rules:
        if "\n" in rule.name or "\r" in rule.name:
            raise RulesError("a rule name is one line")
        if not rule.conditions or not rule.actions:
            raise RulesError(f"rule {rule.name!r} needs at least one condition and one action")
        tests = [_condition(c) for c in rule.conditions]
        lines.append(f"# rule: {rule.name}")
        lines.append(f"if {_test(tests, rule.match_all, rule.enabled)} {{")
        lines += [f"  {_action(a)}" for a in rule.actions]
        lines.append("}")
    vacation = filters.vacation
    if vacation is not None:
        tests = []
        if vacation.start:
            tests.append(f'currentdate :value "ge" "date" {_q(vacation.start.isoformat())}')
        if vacation.end:
            tests.append(f'currentdate :value "le" "date" {_q(vacation.end.isoformat())}')
        if not tests:
            tests.append("true")
        tags = f":days {int(vacation.days)} :subject {_q(vacation.subject)}"
        if vacation.addresses:
            tags += f" :addresses {_list(vacation.addresses)}"
        lines.append("# vacation")
        lines.append(f"if {_test(tests, True, vacation.enabled)} {{")
        lines.append(f"  vacation {tags} {_q(vacation.body)};")
        lines.append("}")
    text = "\n".join(lines) + "\n"
    try:
        compile_script(text)
    except ParseError as error:
        raise RulesError(f"these settings do not make a valid script: {error}") from None
    return text


# --- Parsing back ------------------------------------------------------------------------------


def parse_script(text: str) -> Filters:
    """The settings `text` was built from; TooComplex for any other script."""
    if not text.startswith(MARKER + "\n"):
        raise TooComplex("the script was not written by the simple editor")
    try:
        program = compile_script(text)
    except ParseError as error:
        raise TooComplex(f"the script is not valid: {error}") from None
    lines = text.split("\n")
    filters = Filters()
    for node in program.commands:
        if node.name != "if" or node.else_chain:
            raise TooComplex(f"line {node.line}: only plain if blocks can be edited here")
        comment = lines[node.line - 2] if node.line >= 2 else ""
        if comment == "# forwarding":
            filters.forwarding = _forwarding(node)
        elif comment == "# vacation":
            filters.vacation = _vacation(node)
        elif comment.startswith("# rule: "):
            filters.rules.append(_rule(comment[len("# rule: "):], node))
        else:
            raise TooComplex(f"line {node.line}: a block the simple editor did not write")
    try:
        again = build_script(filters)
    except RulesError as error:
        raise TooComplex(str(error)) from None
    if again != text:
        raise TooComplex("the script was changed by hand")
    return filters


def _forwarding(node):
    [test] = node.tests
    [redirect] = node.block or [None]
    if test.name not in ("true", "false") or redirect is None or redirect.name != "redirect":
        raise TooComplex(f"line {node.line}: not a forwarding block")
    return Forwarding(redirect.positional[0], keep_copy=bool(redirect.tags.get(":copy")), enabled=test.name == "true")


def _split_enabled(test):
    """(enabled, match_all, tests) of a rule's test."""
    if test.name == "allof" and test.tests and test.tests[0].name == "false":
        rest = test.tests[1:]
        if len(rest) == 1 and rest[0].name == "anyof":
            return False, False, rest[0].tests
        return False, True, rest
    if test.name in ("allof", "anyof"):
        return True, test.name == "allof", test.tests
    raise TooComplex(f"line {test.line}: a rule's test must be allof or anyof")


_OPERATOR = {":contains": "contains", ":is": "is", ":matches": "matches"}


def _condition_back(test):
    negated = test.name == "not"
    if negated:
        [test] = test.tests
    if test.name == "size":
        return Condition("size", "over" if ":over" in test.tags else "under", str(test.positional[0]))
    match = next((t for t in (":contains", ":is", ":matches") if t in test.tags), ":is")
    operator = ("not_" if negated else "") + _OPERATOR[match]
    names, [value] = test.positional[0], test.positional[1]
    if test.name == "address":
        return Condition("from" if list(names) == ["from"] else "to", operator, value)
    if test.name == "header" and list(names) == ["subject"]:
        return Condition("subject", operator, value)
    if test.name == "header" and len(names) == 1:
        return Condition("header", operator, value, header=names[0])
    raise TooComplex(f"line {test.line}: a condition the simple editor cannot show")


def _action_back(node):
    argument = node.positional[0] if node.positional else ""
    if node.name == "fileinto":
        return Action("copy" if node.tags.get(":copy") else "move", argument)
    if node.name == "addflag":
        return Action("flag", " ".join(node.positional[1]))
    if node.name == "redirect":
        return Action("forward_copy" if node.tags.get(":copy") else "forward", argument)
    if node.name in ("discard", "stop", "reject"):
        return Action(node.name, argument)
    raise TooComplex(f"line {node.line}: an action the simple editor cannot show")


def _rule(name, node):
    enabled, match_all, tests = _split_enabled(node.tests[0])
    rule_actions = []
    for command in node.block:
        action = _action_back(command)
        if action.kind == "stop" and rule_actions and rule_actions[-1].kind == "reject":
            continue  # written with every reject
        rule_actions.append(action)
    return Rule(name, [_condition_back(t) for t in tests], rule_actions, match_all=match_all, enabled=enabled)


def _vacation(node):
    enabled, _, tests = _split_enabled(node.tests[0])
    start = end = None
    for test in tests:
        if test.name == "true":
            continue
        if test.name != "currentdate":
            raise TooComplex(f"line {test.line}: a vacation condition the simple editor cannot show")
        day = datetime.date.fromisoformat(test.positional[1][0])
        if test.tags.get(":value") == "ge":
            start = day
        else:
            end = day
    [command] = node.block
    if command.name != "vacation":
        raise TooComplex(f"line {command.line}: not a vacation block")
    return Vacation(
        subject=command.tags.get(":subject", ""),
        body=command.positional[0].replace("\r\n", "\n"),  # the parser's line ends are CRLF
        enabled=enabled,
        start=start,
        end=end,
        days=command.tags.get(":days", 7),
        addresses=list(command.tags.get(":addresses", ())),
    )


def is_simple(text):
    try:
        parse_script(text)
    except TooComplex:
        return False
    return True


# --- The account's script ----------------------------------------------------------------------


@dataclass
class Loaded:
    name: str  # the active script's name, or SCRIPT_NAME when there is none
    text: str  # "" when there is none
    filters: Filters | None  # None when the script is too complex
    too_complex: str = ""  # why, for the page to say


def load(account) -> Loaded:
    """The account's active script, with its simple settings when it has them."""
    script = actions.active_script(account)
    if script is None:
        return Loaded(SCRIPT_NAME, "", Filters())
    try:
        return Loaded(script.name, script.text, parse_script(script.text))
    except TooComplex as reason:
        return Loaded(script.name, script.text, None, str(reason))


def save(account, filters, *, name=None):
    """Store the settings as the active script (the active one's name, or SCRIPT_NAME).

    Raises RulesError, and sieve.actions' errors.
    """
    if name is None:
        current = actions.active_script(account)
        name = current.name if current is not None else SCRIPT_NAME
    return actions.put_script(account, name, build_script(filters), activate=True)


def save_raw(account, text, *, name=None):
    """Store a script typed in the raw editor as the active one. Raises
    sieve.actions.InvalidScript, whose .error has the line and column to show."""
    if name is None:
        current = actions.active_script(account)
        name = current.name if current is not None else SCRIPT_NAME
    return actions.put_script(account, name, text, activate=True)
