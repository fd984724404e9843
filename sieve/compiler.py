"""What a parsed Sieve script means: commands, tests, their arguments and extensions.

    compile_script(text) -> Program         raises ParseError(message, line, column)

Implementation notes
--------------------
- Pure, like the parser: a syntax tree (sieve.parser) in, a Program of Nodes out. A
  Node holds its tagged arguments by name (`node.tags[":days"]`) and its positional
  arguments in order, already typed; the interpreter never looks at the syntax again.
- One table (COMMANDS, TESTS) says for each command and test its positional
  arguments, tagged arguments, the extension each needs (RFC 5228 §3.2: using one
  that was not required is an error) and whether it takes tests or a block.
- Checked here, with the line and column of the offending token: unknown commands,
  tests, tags, comparators and extensions; argument kinds and counts; tags given twice
  or in conflict (two match types); require after other commands (RFC 5228 §3.2);
  elsif/else without if (§3.1); relational operators (RFC 5231 §4); constant regular
  expressions (draft-ietf-sieve-regex); :days/:over values; date parts (RFC 5260
  §4.2); variable names (RFC 5229 §3); script names in include (RFC 6609 §3.2).
- Whatever depends on variables (a regex built from ${…}) is checked when it runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from sieve.parser import Number, ParseError, StringList, Tag, parse

# Capabilities we implement, each with its RFC, as CAPABILITY lists them (RFC 5804 §1.7).
EXTENSIONS = (
    "fileinto",  # RFC 5228 §4.1
    "reject",  # RFC 5429 §2.2
    "ereject",  # RFC 5429 §2.1
    "envelope",  # RFC 5228 §5.4
    "encoded-character",  # RFC 5228 §2.4.2.4
    "comparator-i;ascii-numeric",  # RFC 4790 §9.1
    "comparator-i;octet",  # RFC 4790 §9.3 (always available, may be required)
    "comparator-i;ascii-casemap",  # RFC 4790 §9.2 (always available, may be required)
    "imap4flags",  # RFC 5232
    "body",  # RFC 5173
    "variables",  # RFC 5229
    "relational",  # RFC 5231
    "subaddress",  # RFC 5233
    "date",  # RFC 5260 §4
    "index",  # RFC 5260 §6
    "copy",  # RFC 3894
    "regex",  # draft-ietf-sieve-regex-01
    "vacation",  # RFC 5230
    "spamtest",  # RFC 5235
    "spamtestplus",  # RFC 5235
    "include",  # RFC 6609
    "mailbox",  # RFC 5490 §3
)

COMPARATORS = {
    "i;ascii-casemap": None,  # the default (RFC 5228 §2.7.3)
    "i;octet": None,
    "i;ascii-numeric": "comparator-i;ascii-numeric",
}
RELATIONAL_OPERATORS = ("gt", "ge", "lt", "le", "eq", "ne")  # RFC 5231 §4
DATE_PARTS = (  # RFC 5260 §4.2
    "year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
    "iso8601", "std11", "zone", "weekday",
)
ENVELOPE_PARTS = ("from", "to")  # RFC 5228 §5.4
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"\$\{[^}]*\}")
MAX_SCRIPT_NAME = 255  # characters; RFC 5804 §1.6 leaves it to the server

# Headers the address test may look at (RFC 5228 §5.1: "restricted to headers that
# contain addresses").
ADDRESS_HEADERS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender", "resent-to",
    "resent-cc", "resent-bcc", "return-path", "delivered-to", "envelope-to", "x-original-to",
    "errors-to", "disposition-notification-to", "apparently-to", "original-recipient",
    "x-envelope-to", "x-envelope-from", "mail-followup-to", "mail-reply-to",
})

S, SL, N = "string", "string-list", "number"


@dataclass(frozen=True)
class TagSpec:
    value: str | None = None  # the kind of value after the tag, or None for a flag
    extension: str | None = None  # capability that must be required to use it
    group: str | None = None  # tags of one group exclude each other


COMPARATOR = {":comparator": TagSpec(S, group="comparator")}
MATCH_TYPE = {
    ":is": TagSpec(group="match"),
    ":contains": TagSpec(group="match"),
    ":matches": TagSpec(group="match"),
    ":regex": TagSpec(extension="regex", group="match"),
    ":value": TagSpec(S, extension="relational", group="match"),  # RFC 5231 §3
    ":count": TagSpec(S, extension="relational", group="match"),
}
ADDRESS_PART = {
    ":all": TagSpec(group="address-part"),
    ":localpart": TagSpec(group="address-part"),
    ":domain": TagSpec(group="address-part"),
    ":user": TagSpec(extension="subaddress", group="address-part"),  # RFC 5233 §4
    ":detail": TagSpec(extension="subaddress", group="address-part"),
}
INDEX = {":index": TagSpec(N, extension="index"), ":last": TagSpec(extension="index")}  # RFC 5260 §6


@dataclass(frozen=True)
class Spec:
    positional: tuple = ()
    tags: dict = field(default_factory=dict)
    extension: str | None = None
    tests: str = "none"  # "none", "one" or "list"
    block: bool = False
    optional_first: bool = False  # the first positional argument may be left out


COMMANDS = {
    "require": Spec((SL,)),  # RFC 5228 §3.2
    "if": Spec(tests="one", block=True),  # RFC 5228 §3.1
    "elsif": Spec(tests="one", block=True),
    "else": Spec(block=True),
    "stop": Spec(),  # RFC 5228 §3.3
    "keep": Spec(tags={":flags": TagSpec(SL, extension="imap4flags")}),  # RFC 5228 §4.3, RFC 5232 §5
    "discard": Spec(),  # RFC 5228 §4.4
    "fileinto": Spec(  # RFC 5228 §4.1
        (S,),
        {
            ":copy": TagSpec(extension="copy"),  # RFC 3894 §3
            ":create": TagSpec(extension="mailbox"),  # RFC 5490 §3.2
            ":flags": TagSpec(SL, extension="imap4flags"),  # RFC 5232 §5
        },
        extension="fileinto",
    ),
    "redirect": Spec((S,), {":copy": TagSpec(extension="copy")}),  # RFC 5228 §4.2
    "reject": Spec((S,), extension="reject"),  # RFC 5429 §2.2
    "ereject": Spec((S,), extension="ereject"),  # RFC 5429 §2.1
    "vacation": Spec(  # RFC 5230 §4
        (S,),
        {
            ":days": TagSpec(N),
            ":subject": TagSpec(S),
            ":from": TagSpec(S),
            ":addresses": TagSpec(SL),
            ":mime": TagSpec(),
            ":handle": TagSpec(S),
        },
        extension="vacation",
    ),
    "setflag": Spec((S, SL), extension="imap4flags", optional_first=True),  # RFC 5232 §3
    "addflag": Spec((S, SL), extension="imap4flags", optional_first=True),
    "removeflag": Spec((S, SL), extension="imap4flags", optional_first=True),
    "set": Spec(  # RFC 5229 §4
        (S, S),
        {
            ":lower": TagSpec(group="case"),
            ":upper": TagSpec(group="case"),
            ":lowerfirst": TagSpec(group="casefirst"),
            ":upperfirst": TagSpec(group="casefirst"),
            ":quotewildcard": TagSpec(),
            ":quoteregex": TagSpec(extension="regex"),
            ":length": TagSpec(),
        },
        extension="variables",
    ),
    "include": Spec(  # RFC 6609 §3.2
        (S,),
        {
            ":personal": TagSpec(group="location"),
            ":global": TagSpec(group="location"),
            ":once": TagSpec(),
            ":optional": TagSpec(),
        },
        extension="include",
    ),
    "return": Spec(extension="include"),  # RFC 6609 §3.3
    "global": Spec((SL,), extension="include"),  # RFC 6609 §3.4 (needs "variables" too)
}

TESTS = {
    "address": Spec((SL, SL), {**COMPARATOR, **ADDRESS_PART, **MATCH_TYPE, **INDEX}),  # RFC 5228 §5.1
    "envelope": Spec((SL, SL), {**COMPARATOR, **ADDRESS_PART, **MATCH_TYPE}, extension="envelope"),
    "header": Spec((SL, SL), {**COMPARATOR, **MATCH_TYPE, **INDEX}),  # RFC 5228 §5.7
    "exists": Spec((SL,)),  # RFC 5228 §5.5
    "size": Spec((N,), {":over": TagSpec(group="size"), ":under": TagSpec(group="size")}),  # §5.9
    "allof": Spec(tests="list"),  # RFC 5228 §5.2
    "anyof": Spec(tests="list"),  # §5.3
    "not": Spec(tests="one"),  # §5.8
    "true": Spec(),  # §5.10
    "false": Spec(),  # §5.6
    "body": Spec(  # RFC 5173 §4
        (SL,),
        {
            **COMPARATOR, **MATCH_TYPE,
            ":raw": TagSpec(group="transform"),
            ":content": TagSpec(SL, group="transform"),
            ":text": TagSpec(group="transform"),
        },
        extension="body",
    ),
    "hasflag": Spec((SL, SL), {**COMPARATOR, **MATCH_TYPE}, extension="imap4flags", optional_first=True),  # RFC 5232 §4
    "string": Spec((SL, SL), {**COMPARATOR, **MATCH_TYPE}, extension="variables"),  # RFC 5229 §5
    "date": Spec(  # RFC 5260 §4
        (S, S, SL),
        {**COMPARATOR, **MATCH_TYPE, **INDEX, ":zone": TagSpec(S, group="zone"), ":originalzone": TagSpec(group="zone")},
        extension="date",
    ),
    "currentdate": Spec((S, SL), {**COMPARATOR, **MATCH_TYPE, ":zone": TagSpec(S)}, extension="date"),  # RFC 5260 §5
    "spamtest": Spec(  # RFC 5235 §3.2 (":percent" is spamtestplus, §3.3)
        (S,), {**COMPARATOR, **MATCH_TYPE, ":percent": TagSpec(extension="spamtestplus")}
    ),
    "mailboxexists": Spec((SL,), extension="mailbox"),  # RFC 5490 §3.1
}
# spamtest is usable with either capability (RFC 5235 §3.3: spamtestplus implies spamtest).
_TEST_EXTENSIONS = {"spamtest": ("spamtest", "spamtestplus")}


@dataclass
class Node:
    """A checked command or test."""

    name: str
    tags: dict  # ":name" -> value (True for a flag tag; str, tuple of str or int otherwise)
    positional: list  # values: str, tuple of str, int
    tests: list  # Nodes
    block: list | None  # Nodes
    line: int
    column: int
    else_chain: list = field(default_factory=list)  # for "if": the elsif/else Nodes that follow


@dataclass
class Program:
    requires: frozenset
    commands: list  # Nodes

    def uses(self, capability):
        return capability in self.requires


def compile_script(script, *, extensions=EXTENSIONS) -> Program:
    """Parse and check a script (str or UTF-8 bytes); raises ParseError."""
    tree = parse(script)
    return _Checker(frozenset(extensions)).program(tree)


def check_script_name(name):
    """A reason `name` cannot be a script's name (include, ManageSieve, the CLI), or None.

    RFC 5804 §1.6: no control characters, no line ends; RFC 6609 §3.2 adds "/" is not
    allowed in an include's script name; we also refuse empty and over-long names.
    """
    if not name:
        return "a script name cannot be empty"
    if len(name) > MAX_SCRIPT_NAME:
        return f"a script name is at most {MAX_SCRIPT_NAME} characters"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in name):
        return "a script name cannot contain control characters"
    if "/" in name:
        return "a script name cannot contain '/'"
    return None


def has_variables(text):
    return "${" in text and bool(_REFERENCE.search(text))


class _Checker:
    def __init__(self, available):
        self.available = available
        self.requires = set()

    def program(self, tree):
        commands = self.block(tree.commands, top=True)
        return Program(frozenset(self.requires), commands)

    def need(self, capability, where, what):
        if capability not in self.requires:
            raise ParseError(f'{what} needs require "{capability}"', where.line, where.column)

    def block(self, syntax, *, top=False):
        nodes = []
        preamble = top
        previous = None
        for command in syntax:
            if command.name == "require":
                if not preamble:
                    raise ParseError("require must come before any other command", command.line, command.column)
                self.require(command)
                previous = None
                continue
            preamble = False
            node = self.command(command)
            if node.name in ("elsif", "else"):
                if previous is None or previous.name not in ("if",) or (
                    previous.else_chain and previous.else_chain[-1].name == "else"
                ):
                    raise ParseError(f"{node.name} without a preceding if", node.line, node.column)
                previous.else_chain.append(node)
                continue
            nodes.append(node)
            previous = node if node.name == "if" else None
        return nodes

    def require(self, command):
        spec = COMMANDS["require"]
        self.check_shape(command, spec, "require")
        names = command.arguments[0] if len(command.arguments) == 1 else None
        if not isinstance(names, StringList):
            raise ParseError("require takes a string list of capabilities", command.line, command.column)
        for name in names.values:
            if name not in self.available:
                raise ParseError(f'unsupported extension "{name[:60]}"', names.line, names.column)
            self.requires.add(name)

    def check_shape(self, syntax, spec, kind):
        block = getattr(syntax, "block", None)
        if kind == "command" and spec.block and block is None:
            raise ParseError(f"{syntax.name} needs a block {{ … }}", syntax.line, syntax.column)
        if not spec.block and block is not None:
            raise ParseError(f"{syntax.name} takes no block; end it with ';'", syntax.line, syntax.column)
        if spec.tests == "none" and syntax.tests:
            test = syntax.tests[0]
            raise ParseError(f"{syntax.name} takes no test", test.line, test.column)
        if spec.tests == "one" and (len(syntax.tests) != 1 or syntax.test_list):
            raise ParseError(f"{syntax.name} needs exactly one test", syntax.line, syntax.column)
        if spec.tests == "list" and not syntax.test_list:
            raise ParseError(f"{syntax.name} needs a test list in parentheses", syntax.line, syntax.column)

    def command(self, syntax):
        spec = COMMANDS.get(syntax.name)
        if spec is None:
            if syntax.name in TESTS:
                raise ParseError(f"{syntax.name} is a test, not a command", syntax.line, syntax.column)
            raise ParseError(f"unknown command {syntax.name[:60]}", syntax.line, syntax.column)
        if spec.extension:
            self.need(spec.extension, syntax, syntax.name)
        self.check_shape(syntax, spec, "command")
        node = self.arguments(syntax, spec)
        node.tests = [self.test(test) for test in syntax.tests]
        node.block = self.block(syntax.block) if syntax.block is not None else None
        CHECKS.get(syntax.name, _no_check)(self, node, syntax)
        return node

    def test(self, syntax):
        spec = TESTS.get(syntax.name)
        if spec is None:
            if syntax.name in COMMANDS:
                raise ParseError(f"{syntax.name} is a command, not a test", syntax.line, syntax.column)
            raise ParseError(f"unknown test {syntax.name[:60]}", syntax.line, syntax.column)
        if syntax.name in _TEST_EXTENSIONS:
            if not any(e in self.requires for e in _TEST_EXTENSIONS[syntax.name]):
                self.need(_TEST_EXTENSIONS[syntax.name][0], syntax, syntax.name)
        elif spec.extension:
            self.need(spec.extension, syntax, syntax.name)
        self.check_shape(syntax, spec, "test")
        node = self.arguments(syntax, spec)
        node.tests = [self.test(test) for test in syntax.tests]
        self.check_match(node, syntax)
        CHECKS.get(f"test_{syntax.name}", _no_check)(self, node, syntax)
        return node

    def arguments(self, syntax, spec):
        tags, positional, groups = {}, [], {}
        arguments = list(syntax.arguments)
        i = 0
        while i < len(arguments):
            argument = arguments[i]
            if not isinstance(argument, Tag):
                break
            tag = ":" + argument.name
            tag_spec = spec.tags.get(tag)
            if tag_spec is None:
                raise ParseError(f"{syntax.name} has no tag {tag[:60]}", argument.line, argument.column)
            if tag_spec.extension:
                if tag == ":percent" or tag_spec.extension != spec.extension:
                    self.need(tag_spec.extension, argument, tag)
            if tag in tags:
                raise ParseError(f"tag {tag} given twice", argument.line, argument.column)
            if tag_spec.group:
                if tag_spec.group in groups:
                    raise ParseError(f"{tag} cannot be used with {groups[tag_spec.group]}", argument.line, argument.column)
                groups[tag_spec.group] = tag
            if tag_spec.value is None:
                tags[tag] = True
            else:
                if i + 1 >= len(arguments) or isinstance(arguments[i + 1], Tag):
                    raise ParseError(f"{tag} needs a {tag_spec.value} after it", argument.line, argument.column)
                tags[tag] = self.value(arguments[i + 1], tag_spec.value, tag)
                i += 1
            i += 1
        rest = arguments[i:]
        for argument in rest:
            if isinstance(argument, Tag):
                raise ParseError(f"tag :{argument.name[:60]} must come before the other arguments", argument.line, argument.column)
        kinds = spec.positional
        if spec.optional_first and len(rest) == len(kinds) - 1:
            kinds = kinds[1:]
            positional.append(None)
        if len(rest) != len(kinds):
            where = rest[len(kinds)] if len(rest) > len(kinds) else syntax
            expected = len(spec.positional)
            count = f"{expected - 1} or {expected}" if spec.optional_first else str(expected)
            raise ParseError(
                f"{syntax.name} takes {count} positional argument{'s' if expected != 1 else ''}, not {len(rest)}",
                where.line, where.column,
            )
        for argument, kind in zip(rest, kinds):
            positional.append(self.value(argument, kind, syntax.name))
        return Node(syntax.name, tags, positional, [], None, syntax.line, syntax.column)

    def value(self, argument, kind, what):
        if kind == N:
            if not isinstance(argument, Number):
                raise ParseError(f"{what} needs a number here", argument.line, argument.column)
            return argument.value
        if not isinstance(argument, StringList):
            raise ParseError(f"{what} needs a {'string' if kind == S else 'string list'} here", argument.line, argument.column)
        if kind == S:
            if argument.bracketed and len(argument.values) != 1:
                raise ParseError(f"{what} needs a single string here, not a list", argument.line, argument.column)
            value = argument.values[0]
        else:
            value = tuple(argument.values)
        if "encoded-character" in self.requires:
            from sieve.strings import decode_encoded_characters

            try:
                value = decode_encoded_characters(value) if kind == S else tuple(decode_encoded_characters(v) for v in value)
            except ValueError as error:
                raise ParseError(str(error), argument.line, argument.column) from None
        return value

    # --- Checks shared by tests that compare -------------------------------------------------

    def check_match(self, node, syntax):
        comparator = node.tags.get(":comparator")
        if comparator is not None:
            if comparator not in COMPARATORS:
                raise ParseError(f'unknown comparator "{comparator[:60]}"', syntax.line, syntax.column)
            capability = COMPARATORS[comparator]
            if capability:
                self.need(capability, syntax, f'comparator "{comparator}"')
        for tag in (":value", ":count"):
            if tag in node.tags and node.tags[tag].lower() not in RELATIONAL_OPERATORS:
                raise ParseError(
                    f'{tag} needs one of {", ".join(RELATIONAL_OPERATORS)}, not "{node.tags[tag][:20]}"',
                    syntax.line, syntax.column,
                )
        if comparator == "i;ascii-numeric" and any(t in node.tags for t in (":contains", ":matches", ":regex")):
            raise ParseError("comparator i;ascii-numeric supports only :is, :value and :count", syntax.line, syntax.column)
        if ":regex" in node.tags:
            keys = node.positional[-1]
            for key in keys if isinstance(keys, tuple) else (keys,):
                if not has_variables(key):
                    from sieve.matching import RegexError, compile_regex

                    try:
                        compile_regex(key, comparator or "i;ascii-casemap")
                    except RegexError as error:
                        raise ParseError(f"bad regular expression: {error}", syntax.line, syntax.column) from None
        if ":last" in node.tags and ":index" not in node.tags:
            raise ParseError(":last needs :index", syntax.line, syntax.column)
        if node.tags.get(":index", 1) < 1:
            raise ParseError(":index counts from 1", syntax.line, syntax.column)


def _no_check(checker, node, syntax):
    pass


def _check_fileinto(checker, node, syntax):
    if not node.positional[0]:
        raise ParseError("fileinto needs a folder name", syntax.line, syntax.column)


def _check_vacation(checker, node, syntax):
    days = node.tags.get(":days")
    if days is not None and days < 1:
        raise ParseError(":days must be at least 1", syntax.line, syntax.column)  # RFC 5230 §4.1


def _check_set(checker, node, syntax):
    name = node.positional[0]
    if not _valid_variable(name, allow_namespace=False):
        raise ParseError(f'"{name[:60]}" is not a variable name', syntax.line, syntax.column)


def _check_flag_variable(checker, node, syntax):
    name = node.positional[0]
    if name is not None and not _valid_variable(name, allow_namespace=False):
        raise ParseError(f'"{name[:60]}" is not a variable name', syntax.line, syntax.column)


def _check_include(checker, node, syntax):
    name = node.positional[0]
    if not has_variables(name):
        reason = check_script_name(name)
        if reason:
            raise ParseError(reason, syntax.line, syntax.column)


def _check_global(checker, node, syntax):
    checker.need("variables", syntax, "global")
    for name in node.positional[0]:
        if not _valid_variable(name, allow_namespace=False):
            raise ParseError(f'"{name[:60]}" is not a variable name', syntax.line, syntax.column)


def _check_test_size(checker, node, syntax):
    if not (":over" in node.tags or ":under" in node.tags):
        raise ParseError("size needs :over or :under", syntax.line, syntax.column)


def _check_test_envelope(checker, node, syntax):
    for part in node.positional[0]:
        if not has_variables(part) and part.lower() not in ENVELOPE_PARTS:
            raise ParseError(f'unknown envelope part "{part[:60]}"', syntax.line, syntax.column)


def _check_test_address(checker, node, syntax):
    for name in node.positional[0]:
        if not has_variables(name) and name.lower() not in ADDRESS_HEADERS:
            raise ParseError(f'"{name[:60]}" is not a header that holds addresses', syntax.line, syntax.column)


def _check_test_date(checker, node, syntax):
    part = node.positional[-2]
    if not has_variables(part) and part.lower() not in DATE_PARTS:
        raise ParseError(f'unknown date part "{part[:60]}"', syntax.line, syntax.column)


def _check_test_hasflag(checker, node, syntax):
    names = node.positional[0]
    for name in names or ():
        if not _valid_variable(name, allow_namespace=False):
            raise ParseError(f'"{name[:60]}" is not a variable name', syntax.line, syntax.column)


def _valid_variable(name, *, allow_namespace):
    parts = name.split(".")
    if not allow_namespace and len(parts) > 1:
        return False
    return all(_VARIABLE_NAME.fullmatch(p) for p in parts)


CHECKS = {
    "fileinto": _check_fileinto,
    "vacation": _check_vacation,
    "set": _check_set,
    "setflag": _check_flag_variable,
    "addflag": _check_flag_variable,
    "removeflag": _check_flag_variable,
    "include": _check_include,
    "global": _check_global,
    "test_size": _check_test_size,
    "test_envelope": _check_test_envelope,
    "test_address": _check_test_address,
    "test_date": _check_test_date,
    "test_currentdate": _check_test_date,
    "test_hasflag": _check_test_hasflag,
}
