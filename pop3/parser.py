"""POP3 command parser: pure functions over bytes.

Grammar: RFC 1939 §3 (commands), RFC 2449 §3-4 (CAPA, line lengths), RFC 2595 §4 (STLS),
RFC 5034 §4 (AUTH, continuation lines), RFC 6856 §2 (UTF8).

Implementation notes
--------------------
- Pure. Bytes in, a frozen `Command` out: no sockets, no Django, no session state.
  Whether a command is allowed now, whether a message number exists: the session
  decides. This module only says whether the line is a well-formed command.
- Framing. The I/O layer reads one line (it enforces MAX_COMMAND_OCTETS before the
  bytes reach us, and discards the rest of a longer line) and passes it with or
  without its CRLF; a bare LF is accepted as a line end.
- Errors. Every failure is a `ParseError`, whatever the bytes (a hypothesis test holds
  us to it). `message` is a short constant fit for the wire: client bytes are never
  echoed. `unknown` tells an unknown keyword from a known one used wrongly; both count
  as bad commands.
- Bounded. Lines are at most MAX_COMMAND_OCTETS (RFC 2449 §4 asks for 255; we take more
  so long user names and passwords fit), numbers at most MAX_DIGITS digits (never a
  giant int conversion), SASL continuation lines at most MAX_SASL_LINE_OCTETS.
- Text. Keywords are case-insensitive ASCII. USER, PASS and the APOP name may be UTF-8
  (RFC 6856 §2 "UTF8 USER"); every other argument is printable ASCII. Control
  characters are refused everywhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from mailsuite.lib import sasl

# --- Limits ------------------------------------------------------------------------

MAX_COMMAND_OCTETS = 1024  # one command line, CRLF included (RFC 2449 §4 minimum: 255)
MAX_SASL_LINE_OCTETS = 8192  # RFC 5034 §4: as long as the mechanism needs (ours: 4096 octets, base64'd)
MAX_DIGITS = 10  # message numbers and TOP line counts
MAX_ARGUMENT_OCTETS = 255  # RFC 1939 §3 says 40; user names and passwords need more


class ParseError(Exception):
    """A line that is not a well-formed command. `message` is fit for the wire."""

    def __init__(self, message: str, *, unknown: bool = False):
        super().__init__(message)
        self.message = message
        self.unknown = unknown


@dataclass(frozen=True)
class Command:
    """A parsed command: the upper-cased keyword and its typed arguments.

    RETR/DELE: (msg,); TOP: (msg, lines); LIST/UIDL: () or (msg,); USER/PASS: (text,);
    APOP: (name, digest); AUTH: (mechanism,) or (mechanism, initial_response_bytes);
    the others: ().
    """

    name: str
    args: tuple = ()

    def __repr__(self):
        # Never let a password or an AUTH payload reach a log through repr().
        shown = self.args if self.name not in ("PASS", "AUTH", "APOP") else ("…",)
        return f"Command({self.name}, {shown!r})"


# --- Argument kinds ------------------------------------------------------------------

_KEYWORD = re.compile(rb"[A-Za-z0-9]{1,8}")
_DIGITS = re.compile(rb"[0-9]+")
_PRINTABLE = re.compile(rb"[\x21-\x7e]+")
_DIGEST = re.compile(rb"[0-9a-fA-F]{32}")  # RFC 1939 §7: 16 octets in hex
_MECHANISM = re.compile(rb"[A-Za-z0-9_-]{1,20}")  # RFC 4422 §3.1 sasl-mech
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _number(token: bytes, what: str) -> int:
    if not _DIGITS.fullmatch(token) or len(token) > MAX_DIGITS:
        raise ParseError(f"Invalid {what}")
    return int(token)


def _text(raw: bytes, what: str) -> str:
    """A UTF-8 argument (RFC 6856 §2): no control characters, bounded, not empty."""
    if not raw:
        raise ParseError(f"Missing {what}")
    if len(raw) > MAX_ARGUMENT_OCTETS:
        raise ParseError(f"{what.capitalize()} too long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{what.capitalize()} is not UTF-8") from None


def _tokens(rest: bytes) -> list[bytes]:
    """Space-separated arguments; runs of spaces count as one (some clients send two)."""
    return [token for token in rest.split(b" ") if token]


def _no_arguments(name, rest):
    if _tokens(rest):
        raise ParseError(f"{name} takes no arguments")
    return ()


def _message_number(name, rest):
    tokens = _tokens(rest)
    if len(tokens) != 1:
        raise ParseError(f"{name} needs a message number")
    return (_number(tokens[0], "message number"),)


def _optional_message_number(name, rest):
    tokens = _tokens(rest)
    if len(tokens) > 1:
        raise ParseError(f"{name} takes at most one message number")
    return tuple(_number(token, "message number") for token in tokens)


def _top(name, rest):
    # RFC 1939 §7: TOP msg n, n non-negative.
    tokens = _tokens(rest)
    if len(tokens) != 2:
        raise ParseError("TOP needs a message number and a number of lines")
    return _number(tokens[0], "message number"), _number(tokens[1], "number of lines")


def _user(name, rest):
    # RFC 1939 §7 USER name. Names do not contain spaces; surrounding ones are dropped.
    return (_text(rest.strip(b" "), "user name"),)


def _pass(name, rest):
    # RFC 1939 §7: "the PASS command has exactly one argument", so spaces inside it
    # (and at its ends) belong to the password.
    return (_text(rest, "password"),)


def _apop(name, rest):
    # RFC 1939 §7 APOP name digest; the digest is the last token, so a name may hold spaces.
    name_part, _, digest = rest.strip(b" ").rpartition(b" ")
    if not _DIGEST.fullmatch(digest):
        raise ParseError("APOP needs a name and a 32-digit hex digest")
    return _text(name_part.rstrip(b" "), "name"), digest.decode("ascii").lower()


def _auth(name, rest):
    # RFC 5034 §4: AUTH mechanism [initial-response], "=" for an empty initial response.
    tokens = _tokens(rest)
    if not tokens:
        raise ParseError("AUTH needs a mechanism")
    if len(tokens) > 2:
        raise ParseError("AUTH takes a mechanism and at most an initial response")
    if not _MECHANISM.fullmatch(tokens[0]):
        raise ParseError("Invalid mechanism name")
    mechanism = tokens[0].decode("ascii").upper()
    if len(tokens) == 1:
        return (mechanism,)
    try:
        initial = sasl.decode_response(tokens[1], initial=True)
    except sasl.SaslAborted:
        raise ParseError("Authentication cancelled") from None
    except sasl.SaslError:
        raise ParseError("Invalid base64 in initial response") from None
    return mechanism, initial


# Keyword → argument parser. Which state allows what is the session's table, not ours.
_ARGUMENTS = {
    "USER": _user,  # RFC 1939 §7
    "PASS": _pass,  # RFC 1939 §7
    "APOP": _apop,  # RFC 1939 §7
    "AUTH": _auth,  # RFC 5034 §4
    "STLS": _no_arguments,  # RFC 2595 §4
    "CAPA": _no_arguments,  # RFC 2449 §5
    "UTF8": _no_arguments,  # RFC 6856 §2
    "QUIT": _no_arguments,  # RFC 1939 §4, §6
    "STAT": _no_arguments,  # RFC 1939 §5
    "LIST": _optional_message_number,  # RFC 1939 §5
    "RETR": _message_number,  # RFC 1939 §5
    "DELE": _message_number,  # RFC 1939 §5
    "NOOP": _no_arguments,  # RFC 1939 §5
    "RSET": _no_arguments,  # RFC 1939 §5
    "TOP": _top,  # RFC 1939 §7
    "UIDL": _optional_message_number,  # RFC 1939 §7
}
KEYWORDS = frozenset(_ARGUMENTS)


def strip_line_end(line: bytes) -> bytes:
    """The line without its CRLF (or bare LF)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def parse_command(line: bytes) -> Command:
    """Parse one command line (CRLF optional). Raises ParseError."""
    line = strip_line_end(bytes(line))
    if len(line) + 2 > MAX_COMMAND_OCTETS:
        raise ParseError("Line too long")
    if _CONTROL.search(line):
        raise ParseError("Invalid characters in command")
    keyword, _, rest = line.partition(b" ")
    if not keyword:
        raise ParseError("Empty command")
    if not _PRINTABLE.fullmatch(keyword):
        raise ParseError("Invalid characters in command")
    if not _KEYWORD.fullmatch(keyword):
        raise ParseError("Unknown command", unknown=True)
    name = keyword.decode("ascii").upper()
    arguments = _ARGUMENTS.get(name)
    if arguments is None:
        raise ParseError("Unknown command", unknown=True)
    if name not in ("USER", "PASS", "APOP") and rest and not _PRINTABLE.fullmatch(rest.replace(b" ", b"!")):
        raise ParseError("Invalid characters in command")
    return Command(name, arguments(name, rest))


CANCELLED = object()  # the client's "*" (RFC 5034 §4)


def parse_sasl_line(line: bytes):
    """One AUTH continuation line (RFC 5034 §4): the decoded bytes, or CANCELLED for "*".

    Raises ParseError for anything that is not canonical base64 or is too long.
    """
    line = strip_line_end(bytes(line))
    if len(line) + 2 > MAX_SASL_LINE_OCTETS:
        raise ParseError("Line too long")
    try:
        return sasl.decode_response(line)
    except sasl.SaslAborted:
        return CANCELLED
    except sasl.SaslError:
        raise ParseError("Invalid base64 in response") from None
