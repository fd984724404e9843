"""ManageSieve (RFC 5804) commands and responses on the wire: pure functions over bytes.

    parse_command(data) -> Command        raises ProtocolError
    ok(...), no(...), bye(...), string(...)   the bytes of responses

Implementation notes
--------------------
- Pure: the I/O layer (sieve.server) reads a command's line and the literals it
  announces ("{12+}" CRLF and 12 octets, RFC 5804 §4; the synchronizing "{12}" is taken
  the same way, as no continuation response exists in ManageSieve) and passes the
  whole command, CRLF included. literal_length() tells it how much more to read.
- Arguments are strings (quoted or literal) and numbers; the command name is an atom,
  case-insensitive (RFC 5804 §4). Strings must be UTF-8 (RFC 5804 §4: "UTF-8 strings"),
  except SASL data, which is base64 and so ASCII.
- Errors: every failure is a ProtocolError with a constant message fit for the wire.
- Responses quote what fits a quoted string and use a literal otherwise (line ends,
  long text); texts from exceptions never reach here unfiltered: callers pass their own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE_OCTETS = 8 * 1024
MAX_ARGUMENTS = 8
MAX_NUMBER = 2**32 - 1


class ProtocolError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple  # str, or int for numbers

    def __repr__(self):
        # AUTHENTICATE carries credentials: never let them reach a log through repr().
        shown = self.args[:1] if self.name == "AUTHENTICATE" else self.args
        return f"Command({self.name}, {shown!r})"


_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?\n\Z")
_ATOM = re.compile(rb"[A-Za-z]+")
_NUMBER = re.compile(rb"[0-9]+")


def literal_length(line: bytes):
    """The length of the literal a line announces at its end ("{n+}" CRLF), or None."""
    match = _LITERAL_AT_END.search(line)
    return int(match.group(1)) if match else None


def _text(data, what):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} must be UTF-8") from None


def parse_command(data: bytes) -> Command:
    """A complete command: its line(s) and literals, ending with CRLF (or LF)."""
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    match = _ATOM.match(data)
    if not match:
        raise ProtocolError("Expected a command name")
    name = match.group().decode("ascii").upper()
    pos = match.end()
    args = []
    while pos < len(data):
        if data[pos : pos + 1] != b" ":
            raise ProtocolError("Expected a space between arguments")
        pos += 1
        if len(args) >= MAX_ARGUMENTS:
            raise ProtocolError("Too many arguments")
        value, pos = _argument(data, pos)
        args.append(value)
    return Command(name, tuple(args))


def parse_string(data: bytes) -> str:
    """A line holding one string and nothing else (a SASL response, RFC 5804 §2.1)."""
    data = data[:-2] if data.endswith(b"\r\n") else data.rstrip(b"\n")
    if not data:
        raise ProtocolError("Expected a string")
    value, end = _argument(data, 0)
    if not isinstance(value, str) or end != len(data):
        raise ProtocolError("Expected a string")
    return value


def _argument(data, pos):
    char = data[pos : pos + 1]
    if char == b'"':
        return _quoted(data, pos + 1)
    if char == b"{":
        return _literal(data, pos)
    match = _NUMBER.match(data, pos)
    if match:
        if len(match.group()) > 10 or int(match.group()) > MAX_NUMBER:
            raise ProtocolError("Number too large")
        return int(match.group()), match.end()
    raise ProtocolError("Expected a string or a number")


def _quoted(data, pos):
    # RFC 5804 §4: quoted = DQUOTE *QUOTED-CHAR DQUOTE, with \" and \\ as escapes; no CR/LF.
    out = bytearray()
    while True:
        if pos >= len(data):
            raise ProtocolError("Unterminated quoted string")
        char = data[pos]
        if char == 0x22:
            return _text(bytes(out), "A string"), pos + 1
        if char in (0x0D, 0x0A, 0x00):
            raise ProtocolError("Line ends are not allowed in a quoted string")
        if char == 0x5C:
            if pos + 1 >= len(data) or data[pos + 1] not in (0x22, 0x5C):
                raise ProtocolError("Invalid escape in a quoted string")
            out.append(data[pos + 1])
            pos += 2
            continue
        out.append(char)
        pos += 1


_LITERAL = re.compile(rb"\{([0-9]{1,10})\+?\}\r?\n")


def _literal(data, pos):
    match = _LITERAL.match(data, pos)
    if not match:
        raise ProtocolError("Invalid literal")
    length = int(match.group(1))
    start = match.end()
    if start + length > len(data):
        raise ProtocolError("Literal shorter than announced")
    return _text(data[start : start + length], "A string"), start + length


# --- Responses (RFC 5804 §4) ----------------------------------------------------------------


def string(text: str) -> str:
    """A quoted string, or a literal when the text cannot be quoted."""
    if len(text) <= 1024 and not any(c in text for c in "\r\n\x00"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    encoded = text.encode("utf-8")
    return "{%d}\r\n%s" % (len(encoded), text)


def _response(kind, code, text):
    parts = [kind]
    if code:
        parts.append(f"({code})")
    if text:
        parts.append(string(text))
    return (" ".join(parts) + "\r\n").encode("utf-8")


def ok(text="", code=None) -> bytes:
    return _response("OK", code, text)


def no(text="", code=None) -> bytes:
    return _response("NO", code, text)


def bye(text="", code=None) -> bytes:
    return _response("BYE", code, text)


def line(*values) -> bytes:
    """An untagged data line: strings quoted (or literal), bare words as they are."""
    return (" ".join(values) + "\r\n").encode("utf-8")
