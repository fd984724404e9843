"""Serialising POP3 replies: status lines, multi-line responses, message bytes on the wire.

Implementation notes
--------------------
- Pure: bytes and strings in, bytes out.
- Status lines are ASCII, at most MAX_STATUS_OCTETS with CRLF (RFC 1939 §3: 512), and
  carry no client bytes; a response code goes in brackets after the indicator
  (RFC 2449 §8).
- Message bytes are sent in canonical form: every line ends in CRLF (a bare LF becomes
  CRLF; a lone CR is left alone) and a last line without a line end gets one. `octets`
  is the length of exactly that form, so LIST/STAT sizes equal the octets RETR sends
  before dot-stuffing (RFC 1939 §11).
- Multi-line responses are dot-stuffed and end with "." CRLF (RFC 1939 §3).
"""
import re

MAX_STATUS_OCTETS = 512  # RFC 1939 §3, CRLF included

_BARE_LF = re.compile(rb"(?<!\r)\n")


def ok(text: str = "", code: str | None = None) -> bytes:
    return _status("+OK", text, code)


def err(text: str, code: str | None = None) -> bytes:
    return _status("-ERR", text, code)


def _status(indicator, text, code):
    parts = [indicator]
    if code:
        parts.append(f"[{code}]")  # RFC 2449 §8
    if text:
        parts.append(text)
    line = " ".join(parts).encode("ascii", "replace")[: MAX_STATUS_OCTETS - 2]
    return line + b"\r\n"


def multiline(first: bytes, lines) -> bytes:
    """A status line, then `lines` (str or bytes, no line ends), dot-stuffed, then "."."""
    body = b"".join(
        (b"." + line if line[:1] == b"." else line) + b"\r\n"
        for line in (item.encode("ascii") if isinstance(item, str) else item for item in lines)
    )
    return first + body + b".\r\n"


def fix_line_ends(data: bytes) -> bytes:
    """Bare LFs as CRLF; nothing else changed (the same object when nothing needs it)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def canonical(data: bytes) -> bytes:
    """The message as POP3 sends it (before dot-stuffing): CRLF line ends, a final CRLF."""
    data = fix_line_ends(data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def octets(data: bytes) -> int:
    """len(canonical(data)) without building it."""
    if not data:
        return 0
    bare = data.count(b"\n") - data.count(b"\r\n")
    complete = data.endswith(b"\n")
    return len(data) + bare + (0 if complete else 2)


def line_end_octets(data: bytes) -> int:
    """len(fix_line_ends(data)): a complete head (a trace prefix) before other bytes."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def dot_stuff(data: bytes) -> bytes:
    """RFC 1939 §3: a line that starts with "." gets another "." in front (canonical input)."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    return stuffed


def message_response(first: bytes, *parts: bytes) -> bytes:
    """A status line, then the canonical message dot-stuffed, then the terminating ".".

    The message may come in parts that each start a line (a trace prefix, then the stored
    bytes): stuffing them one by one is stuffing the whole, and they are copied once.
    """
    return b"".join([first, *(dot_stuff(part) for part in parts), b".\r\n"])


def top(canonical_bytes: bytes, lines: int) -> bytes:
    """RFC 1939 §7 TOP: the header, the blank line after it, and `lines` lines of the body.

    A message without a blank line is all header, and is sent whole.
    """
    if canonical_bytes.startswith(b"\r\n"):
        body_start = 2
    else:
        end = canonical_bytes.find(b"\r\n\r\n")
        if end < 0:
            return canonical_bytes
        body_start = end + 4
    position = body_start
    for _ in range(lines):
        next_end = canonical_bytes.find(b"\r\n", position)
        if next_end < 0:
            return canonical_bytes
        position = next_end + 2
    return canonical_bytes[:position]
