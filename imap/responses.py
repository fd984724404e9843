"""Serialising IMAP responses: strings, literals, lists, status lines.

Implementation notes
- Every function returns bytes ready for the wire and never ends a line itself, except
  `status_line`, which returns one whole response line with its CRLF.
- A string goes out quoted when RFC 9051 §4.3 allows it (no CR, LF or NUL, and ASCII
  unless the session enabled UTF-8, RFC 6855 §3 / RFC 9051 §5.1), else as a literal. The
  choice is made here, once, so no caller quotes by hand.
- Text in status lines (human-readable) is ours, never client bytes: RFC 9051 §7.1 text
  cannot hold CR/LF, and we never echo what a client sent.
"""
import re
from typing import Iterable, Optional

from imap.parser import SequenceSet, encode_modified_utf7

_ATOM_SAFE = re.compile(rb"[!#&'+,\-.0-9:;<=>?@A-Z^_`a-z|}~$/]+\Z")  # atom-char minus specials
_QUOTABLE_ASCII = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")
_QUOTABLE_UTF8 = re.compile(rb"[^\x00\r\n]*\Z")
MAX_QUOTED = 1024  # longer strings go as literals: easier on clients' line buffers


def _bytes(value) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """RFC 9051 §4.3 literal; literal8 (RFC 3516 §4.2) when `binary`."""
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def quoted(value) -> bytes:
    data = _bytes(value)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(value, *, utf8: bool = False) -> bytes:
    """A quoted string when allowed, else a literal."""
    data = _bytes(value)
    pattern = _QUOTABLE_UTF8 if utf8 else _QUOTABLE_ASCII
    if len(data) <= MAX_QUOTED and pattern.match(data):
        return quoted(data)
    return literal(data)


def nstring(value, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8=utf8)


def astring(value, *, utf8: bool = False) -> bytes:
    data = _bytes(value)
    if data and _ATOM_SAFE.match(data):
        return data
    return string(data, utf8=utf8)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name as sent to the client: modified UTF-7 (RFC 3501 §5.1.3) unless
    UTF-8 was enabled (RFC 6855 §3, RFC 9051 §5.1)."""
    data = name.encode("utf-8") if utf8 else encode_modified_utf7(name)
    return astring(data, utf8=utf8)


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in flags) + b")"


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def sequence_set(numbers: Iterable[int]) -> bytes:
    """The compact form of a set of numbers: 1:3,5,9:10 (RFC 9051 §9 sequence-set)."""
    parts = []
    for first, last in SequenceSet.from_numbers(numbers).ranges:
        parts.append(b"%d" % first if first == last else b"%d:%d" % (first, last))
    return b",".join(parts)


def status_line(tag: Optional[str], status: str, text: str, code: Optional[str] = None) -> bytes:
    """`tag OK [CODE] text` (or `* ...` when tag is None) with its CRLF."""
    head = (tag or "*").encode("ascii") + b" " + status.encode("ascii")
    if code:
        head += b" [" + code.encode("utf-8") + b"]"
    return head + b" " + text.encode("utf-8") + b"\r\n"


_PLAIN_TEXT = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*\Z')  # printable ASCII but " and \


def text_nstring(value: Optional[str], *, utf8: bool = False) -> bytes:
    """nstring() of a str, the same bytes, faster for the short printable ASCII text that
    ENVELOPE and BODYSTRUCTURE are mostly made of (a FETCH of 500 of them calls it
    thousands of times)."""
    if value is None:
        return b"NIL"
    if len(value) <= MAX_QUOTED and _PLAIN_TEXT.match(value):
        return b'"' + value.encode("ascii") + b'"'
    return string(value, utf8=utf8)
