"""The Sieve language parser (RFC 5228 §8): pure functions over text.

    parse(text) -> Script          raises ParseError(message, line, column)

Implementation notes
--------------------
- Pure: text in, a tree of frozen dataclasses out. No Django, no I/O. What the
  commands mean, which arguments they take and which extensions they need is the
  business of sieve.compiler; this module knows only the grammar of §8.2.
- Every node and every error carries the line and column (both from 1) where it
  starts, so a client (ManageSieve CHECKSCRIPT, the webmail's raw editor, the CLI)
  can point at the place.
- Errors. Every failure is a ParseError, whatever the input (a hypothesis test holds
  us to it). Messages are short English sentences that quote at most one short
  token of the script.
- Bounded: script size (MAX_SCRIPT_OCTETS), nesting of blocks and tests (MAX_NESTING,
  so recursion stays far from Python's limit), numbers (MAX_NUMBER after the
  quantifier), string-list length (MAX_LIST_ITEMS).
- Text. A script is UTF-8 (RFC 5228 §2.1). Line ends may be CRLF or LF (files on disk
  use LF, ManageSieve sends CRLF); string values always end their lines with CRLF, as
  the RFC's grammar does.
- Identifiers (command, test and tag names) are case-insensitive (RFC 5228 §2.9):
  the tree holds them in lower case.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SCRIPT_OCTETS = 1024 * 1024
MAX_NESTING = 48
MAX_NUMBER = 2**63 - 1
MAX_LIST_ITEMS = 10_000


class ParseError(Exception):
    """A script that is not valid Sieve; `line` and `column` count from 1."""

    def __init__(self, message: str, line: int = 1, column: int = 1):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self):
        return f"line {self.line}, column {self.column}: {self.message}"


# --- The tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StringList:
    """A string or a bracketed string-list (RFC 5228 §2.4.2.1); `bracketed` tells which."""

    values: tuple
    line: int
    column: int
    bracketed: bool = False


@dataclass(frozen=True)
class Number:
    """A number with its quantifier applied (RFC 5228 §2.4.1)."""

    value: int
    line: int
    column: int


@dataclass(frozen=True)
class Tag:
    """A tagged argument such as :contains (RFC 5228 §2.6.2), without the colon."""

    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Test:
    name: str
    arguments: tuple  # StringList / Number / Tag, in order
    tests: tuple  # a test's own tests (allof, anyof, not)
    line: int
    column: int
    test_list: bool = False  # the tests were given in parentheses


@dataclass(frozen=True)
class Command:
    name: str
    arguments: tuple
    tests: tuple
    block: tuple | None  # the commands of "{ … }", None when the command ended with ";"
    line: int
    column: int
    test_list: bool = False


@dataclass(frozen=True)
class Script:
    commands: tuple


# --- The lexer -----------------------------------------------------------------------------

IDENTIFIER, TAG, NUMBER, STRING, PUNCT, END = "identifier", "tag", "number", "string", "punctuation", "end"


@dataclass(frozen=True)
class Token:
    kind: str
    value: object
    line: int
    column: int
    bracketed: bool = False


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"([0-9]+)([KkMmGg]?)")
_QUANTIFIERS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_PUNCTUATION = "[](),;{}"
_MULTILINE_START = re.compile(r"text:[ \t]*(#[^\n]*)?\n")


def _describe(char):
    return repr(char) if char.isprintable() else f"U+{ord(char):04X}"


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0

    @property
    def column(self):
        return self.pos - self.line_start + 1

    def error(self, message, line=None, column=None):
        raise ParseError(message, line or self.line, column or self.column)

    def _advance_to(self, end):
        """Move to `end`, counting the line ends passed."""
        chunk_start = self.pos
        newlines = self.text.count("\n", chunk_start, end)
        if newlines:
            self.line += newlines
            self.line_start = self.text.rindex("\n", chunk_start, end) + 1
        self.pos = end

    def _skip_space(self):
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r\n":
                self._advance_to(self.pos + 1)
            elif char == "#":  # hash-comment, RFC 5228 §2.3
                end = text.find("\n", self.pos)
                self._advance_to(len(text) if end < 0 else end + 1)
            elif text.startswith("/*", self.pos):  # bracket-comment, not nested
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    self.error("unterminated comment: /* without */")
                self._advance_to(end + 2)
            else:
                return

    def tokens(self):
        text = self.text
        while True:
            self._skip_space()
            if self.pos >= len(text):
                yield Token(END, None, self.line, self.column)
                return
            line, column = self.line, self.column
            char = text[self.pos]
            if char in _PUNCTUATION:
                self._advance_to(self.pos + 1)
                yield Token(PUNCT, char, line, column)
            elif char == '"':
                yield Token(STRING, self._quoted(), line, column)
            elif char == ":":
                match = _IDENTIFIER.match(text, self.pos + 1)
                if not match:
                    self.error("a tag needs a name after ':'")
                self._advance_to(match.end())
                yield Token(TAG, match.group().lower(), line, column)
            elif char.isdigit() and char.isascii():
                yield Token(NUMBER, self._number(), line, column)
            elif _MULTILINE_START.match(text, self.pos):
                yield Token(STRING, self._multiline(), line, column)
            elif match := _IDENTIFIER.match(text, self.pos):
                self._advance_to(match.end())
                yield Token(IDENTIFIER, match.group().lower(), line, column)
            else:
                self.error(f"unexpected character {_describe(char)}")

    def _number(self):
        match = _NUMBER.match(self.text, self.pos)
        digits, quantifier = match.groups()
        if len(digits) > 20:
            self.error("number too large")
        value = int(digits) * _QUANTIFIERS[quantifier.lower()]
        if value > MAX_NUMBER:
            self.error("number too large")
        self._advance_to(match.end())
        if self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.error("a number must be followed by a space or punctuation")
        return value

    def _quoted(self):
        # RFC 5228 §2.4.2: \" and \\ are escapes; any other backslash is dropped.
        text = self.text
        start_line, start_column = self.line, self.column
        out = []
        i = self.pos + 1
        while True:
            if i >= len(text):
                self.error("unterminated string: no closing '\"'", start_line, start_column)
            char = text[i]
            if char == '"':
                break
            if char == "\\":
                if i + 1 >= len(text):
                    self.error("unterminated string: no closing '\"'", start_line, start_column)
                out.append(text[i + 1])
                i += 2
                continue
            out.append(char)
            i += 1
        self._advance_to(i + 1)
        return "".join(out).replace("\n", "\r\n")

    def _multiline(self):
        # RFC 5228 §2.4.2: "text:" up to a line holding only "."; a leading ".." is one ".".
        text = self.text
        start_line, start_column = self.line, self.column
        header = _MULTILINE_START.match(text, self.pos)
        i = header.end()
        lines = []
        while True:
            if i >= len(text):
                self.error('unterminated multi-line string: no line with a lone "."', start_line, start_column)
            end = text.find("\n", i)
            if end < 0:
                end = len(text)
            line = text[i:end]
            if line == ".":
                break
            lines.append(line[1:] if line.startswith("..") else line)
            i = end + 1
        self._advance_to(min(end + 1, len(text)))
        return "".join(line + "\r\n" for line in lines)


# --- The parser ----------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.token = next(tokens)
        self.depth = 0

    def error(self, message, token=None):
        token = token or self.token
        raise ParseError(message, token.line, token.column)

    def advance(self):
        token = self.token
        self.token = next(self.tokens)
        return token

    def is_punct(self, char):
        return self.token.kind == PUNCT and self.token.value == char

    def expect_punct(self, char, what):
        if not self.is_punct(char):
            self.error(f"expected '{char}' {what}, found {self._found()}")
        return self.advance()

    def _found(self):
        token = self.token
        if token.kind == END:
            return "the end of the script"
        if token.kind == STRING:
            return "a string"
        if token.kind == NUMBER:
            return "a number"
        if token.kind == TAG:
            return f"tag :{token.value}"
        return f"'{token.value}'"

    def nest(self, token):
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.error(f"nested more than {MAX_NESTING} levels deep", token)

    # start = commands (RFC 5228 §8.2)
    def script(self):
        commands = self.commands()
        if self.token.kind != END:
            self.error(f"expected a command, found {self._found()}")
        return Script(commands)

    # commands = *command
    def commands(self):
        commands = []
        while self.token.kind == IDENTIFIER:
            commands.append(self.command())
        return tuple(commands)

    # command = identifier arguments (";" / block)
    def command(self):
        name = self.advance()
        arguments, tests, test_list = self.arguments()
        if self.is_punct(";"):
            self.advance()
            return Command(name.value, arguments, tests, None, name.line, name.column, test_list)
        if self.is_punct("{"):
            brace = self.advance()
            self.nest(brace)
            block = self.commands()
            self.depth -= 1
            self.expect_punct("}", f"to close the block opened at line {brace.line}, column {brace.column}")
            return Command(name.value, arguments, tests, block, name.line, name.column, test_list)
        if self.token.kind == END:
            self.error(f"missing ';' after command {name.value}")
        self.error(f"expected ';' or '{{' after the arguments of {name.value}, found {self._found()}")

    # arguments = *argument [ test / test-list ]
    def arguments(self):
        arguments = []
        while True:
            token = self.token
            if token.kind == TAG:
                self.advance()
                arguments.append(Tag(token.value, token.line, token.column))
            elif token.kind == NUMBER:
                self.advance()
                arguments.append(Number(token.value, token.line, token.column))
            elif token.kind == STRING:
                self.advance()
                arguments.append(StringList((token.value,), token.line, token.column))
            elif self.is_punct("["):
                arguments.append(self.string_list())
            else:
                break
        if self.token.kind == IDENTIFIER:
            return tuple(arguments), (self.test(),), False
        if self.is_punct("("):
            return tuple(arguments), self.test_list(), True
        return tuple(arguments), (), False

    # string-list = "[" string *("," string) "]" / string
    def string_list(self):
        open_bracket = self.advance()
        values = []
        while True:
            if self.token.kind != STRING:
                self.error(f"expected a string in the list, found {self._found()}")
            values.append(self.advance().value)
            if len(values) > MAX_LIST_ITEMS:
                self.error(f"a string list holds at most {MAX_LIST_ITEMS} strings", open_bracket)
            if self.is_punct(","):
                self.advance()
                continue
            self.expect_punct("]", "to close the string list")
            return StringList(tuple(values), open_bracket.line, open_bracket.column, bracketed=True)

    # test-list = "(" test *("," test) ")"
    def test_list(self):
        open_paren = self.advance()
        self.nest(open_paren)
        tests = [self.test()]
        while self.is_punct(","):
            self.advance()
            tests.append(self.test())
        self.expect_punct(")", "to close the test list")
        self.depth -= 1
        return tuple(tests)

    # test = identifier arguments
    def test(self):
        if self.token.kind != IDENTIFIER:
            self.error(f"expected a test, found {self._found()}")
        name = self.advance()
        self.nest(name)
        arguments, tests, test_list = self.arguments()
        self.depth -= 1
        return Test(name.value, arguments, tests, name.line, name.column, test_list)


def decode(script) -> str:
    """The text of a script given as bytes or str; ParseError if it is not UTF-8."""
    if isinstance(script, str):
        text = script
    else:
        if len(script) > MAX_SCRIPT_OCTETS:
            raise ParseError(f"a script is at most {MAX_SCRIPT_OCTETS} octets")
        try:
            text = bytes(script).decode("utf-8")
        except UnicodeDecodeError as error:
            before = bytes(script)[: error.start].decode("utf-8")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            raise ParseError("the script is not valid UTF-8", line, column) from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_OCTETS:
        raise ParseError(f"a script is at most {MAX_SCRIPT_OCTETS} octets")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ParseError("the script is not valid UTF-8")
    return text


def parse(script) -> Script:
    """The syntax tree of a script (str or UTF-8 bytes); raises ParseError."""
    text = decode(script)
    # Line ends: CRLF and LF alike. A lone CR stays, and is whitespace.
    text = text.replace("\r\n", "\n")
    if "\x00" in text:
        index = text.index("\x00")
        line = text.count("\n", 0, index) + 1
        raise ParseError("the script contains a NUL character", line, index - (text.rfind("\n", 0, index) + 1) + 1)
    return _Parser(_Lexer(text).tokens()).script()
