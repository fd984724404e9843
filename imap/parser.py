"""IMAP command parser: pure functions over bytes.

Grammar: RFC 9051 (IMAP4rev2) §9 and RFC 3501 (IMAP4rev1) §9, with RFC 4466's collected
extension syntax and the extensions cited beside each rule below.

Implementation notes
--------------------
- Pure. Bytes in, frozen dataclasses out: no sockets, no Django, no clock, no session
  state. Whether a command is allowed now, whether CONDSTORE/QRESYNC/UTF8=ACCEPT was
  enabled, whether a message number exists: the session decides all of that.
- Framing. The I/O layer reads a line; when `literal_announcement(line)` finds a
  `{n}`, `{n+}`, `~{n}` or `~{n+}` at its end it sends a continuation (synchronising
  literals only), reads exactly n octets, reads the next line, and repeats. It then hands
  the WHOLE command (lines, CRLFs and literal octets, concatenated) to `parse_command`.
  The final CRLF may be present or not; nothing may follow it.
- Errors. Every failure is a `ParseError`, whatever the bytes (the fuzz tests hold us to
  it). `tag` is set once the tag could be read, so the server answers `tag BAD ...`
  rather than `* BAD ...`. `message` is a short constant fit for the wire: it never
  echoes client bytes. `status` is "BAD" except for the few refusals RFCs answer with NO
  (an unsupported SEARCH charset, a too-big synchronising literal).
- Bounded. Nesting of parentheses/NOT/OR (MAX_DEPTH), items in any list (MAX_ITEMS),
  search keys (MAX_SEARCH_KEYS), sequence-set ranges, APPEND messages, digits in a
  number (never a giant int conversion), literal sizes (checked against the octets
  actually present, and against `max_literal` at framing time).
- Text. Mailbox names are modified UTF-7 (RFC 3501 §5.1.3) unless the session passes
  `utf8=True` (after ENABLE UTF8=ACCEPT, RFC 6855 §3, or ENABLE IMAP4rev2, RFC 9051
  §5.1), and then UTF-8. Decoding is strict and canonical so that two spellings never
  name one mailbox. Search strings are decoded with the SEARCH/SORT/THREAD charset;
  everything else is UTF-8.
- Values are immutable: lists are tuples, so a command can be hashed, logged and
  compared in tests.
"""
from __future__ import annotations

import binascii
import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, ClassVar, Iterable, Iterator, NoReturn, Optional, Union

# --- Limits ------------------------------------------------------------------------

MAX_DEPTH = 64  # nested parentheses, NOT and OR
MAX_ITEMS = 1000  # entries in any one parenthesised list (flags, fetch items, ...)
MAX_SEARCH_KEYS = 1000  # search keys in one SEARCH/SORT/THREAD
MAX_SEQUENCE_RANGES = 100_000  # comma-separated parts of one sequence set
MAX_APPEND_MESSAGES = 1000  # messages in one MULTIAPPEND
MAX_TAG_LENGTH = 256  # a longer tag is not echoed back: the error is untagged
MAX_NUMBER = 2**32 - 1  # RFC 9051 §9 "number": unsigned 32-bit
MAX_NUMBER64 = 2**63 - 1  # RFC 9051 §9 "number64"; RFC 7162 §7 mod-sequence-value
MAX_ID_PAIRS = 30  # RFC 2971 §3.3
MAX_ID_FIELD = 30  # RFC 2971 §3.3, octets
MAX_ID_VALUE = 1024  # RFC 2971 §3.3, octets
DEFAULT_MAX_LITERAL = 64 * 1024 * 1024
LITERAL_MINUS_LIMIT = 4096  # RFC 7888 §4: LITERAL- caps non-synchronising literals


# --- Errors ------------------------------------------------------------------------


class ParseError(Exception):
    """A command the parser refuses.

    `tag` is the command's tag when it could be read (answer `tag BAD ...`), else None
    (answer `* BAD ...`). `code` is a response code to put in brackets (TOOBIG,
    BADCHARSET) or None. `status` is the response to send: "BAD" for syntax errors,
    "NO" where the RFC says so.
    """

    def __init__(
        self,
        message: str,
        *,
        tag: Optional[str] = None,
        code: Optional[str] = None,
        status: str = "BAD",
    ):
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.code = code
        self.status = status

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.message!r}, tag={self.tag!r}, "
            f"code={self.code!r}, status={self.status!r})"
        )


class LiteralTooBig(ParseError):
    """A literal announcement over the limit (RFC 7888 §4, RFC 9051 §7.1 TOOBIG).

    Synchronising: answer `tag NO [TOOBIG] ...` and send no continuation; the client
    abandons the command. Non-synchronising: the octets are already on their way, so
    answer `tag BAD [TOOBIG] ...` and then read and discard `literal.size` octets, or
    (when that is absurd) send BYE and close.
    """

    def __init__(self, message: str, *, literal: Literal, tag: Optional[str] = None):
        super().__init__(
            message, tag=tag, code="TOOBIG", status="NO" if literal.synchronizing else "BAD"
        )
        self.literal = literal


# --- Character classes (RFC 9051 §9) --------------------------------------------------


def _class_re(chars: Iterable[int]) -> re.Pattern:
    body = b"".join(re.escape(bytes([c])) for c in sorted(set(chars)))
    return re.compile(b"[" + body + b"]+")


_CTL = set(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS = set(b'(){ %*"\\]') | _CTL
_ATOM_CHARS = frozenset(c for c in range(0x01, 0x80) if c not in _ATOM_SPECIALS)
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}
_LIST_CHARS = _ASTRING_CHARS | {ord("%"), ord("*")}
_TAG_CHARS = _ASTRING_CHARS - {ord("+")}

_ATOM_RE = _class_re(_ATOM_CHARS)
_ASTRING_RE = _class_re(_ASTRING_CHARS)
_LIST_RE = _class_re(_LIST_CHARS)
_TAG_RE = _class_re(_TAG_CHARS)
_DIGITS_RE = re.compile(rb"[0-9]+")
_SEQSET_RE = re.compile(rb"[0-9*:,$]+")
_FETCH_NAME_RE = re.compile(rb"[A-Za-z0-9.\-]+")
_SECTION_PART_RE = re.compile(rb"[0-9]+(?:\.[0-9]+)*")
_SECTION_TEXT_RE = re.compile(rb"[A-Za-z.]+")
_STORE_ITEM_RE = re.compile(rb"[+\-]?[A-Za-z.]+")
_BASE64_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_OBJECTID_RE = re.compile(rb"[A-Za-z0-9_\-]{1,255}")  # RFC 8474 §4
# One alternative per character, so a failed match backtracks in linear time.
_QUOTED_RE = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(rb'\\(["\\])')
_LITERAL_RE = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\r\n")
_DATE_RE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME_RE = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+\-])([0-9]{2})([0-9]{2})"'
)
# RFC 9051 §5.1: no C0/C1 controls, DEL, LINE or PARAGRAPH SEPARATOR in mailbox names.
_MAILBOX_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")
_MUTF7_BASE64 = re.compile(rb"[A-Za-z0-9+,]+")

SP, LPAREN, RPAREN, DQUOTE, LBRACE, BACKSLASH = 0x20, 0x28, 0x29, 0x22, 0x7B, 0x5C
_DIGIT_BYTES = frozenset(b"0123456789")
_SEQ_START = _DIGIT_BYTES | frozenset(b"*$")

_MONTHS = {
    name: number
    for number, name in enumerate(
        (b"jan", b"feb", b"mar", b"apr", b"may", b"jun",
         b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"),
        start=1,
    )
}

# RFC 9051 §2.3.2 system flags, case-insensitive; stored in their canonical spelling.
_SYSTEM_FLAGS = {
    name.lower(): "\\" + name
    for name in ("Answered", "Flagged", "Deleted", "Seen", "Draft", "Recent")
}
# RFC 6154 §2 and RFC 8457 §3 special-use attributes.
_USE_ATTRIBUTES = {
    name.lower(): "\\" + name
    for name in ("All", "Archive", "Drafts", "Flagged", "Junk", "Sent", "Trash", "Important")
}

# Search charsets (RFC 9051 §6.4.4) → Python codec. US-ASCII is read as UTF-8: a client
# that sends 8-bit text under US-ASCII means UTF-8 far more often than anything else.
_CHARSETS = {
    "UTF-8": "utf-8",
    "US-ASCII": "utf-8",
    **{f"ISO-8859-{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)},
    **{f"WINDOWS-{n}": f"cp{n}" for n in range(1250, 1259)},
    "KOI8-R": "koi8-r",
    "KOI8-U": "koi8-u",
    "ISO-2022-JP": "iso2022-jp",
    "SHIFT_JIS": "shift-jis",
    "EUC-JP": "euc-jp",
    "EUC-KR": "euc-kr",
    "GB2312": "gb2312",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "BIG5": "big5",
}
SEARCH_CHARSETS = tuple(_CHARSETS)  # for `NO [BADCHARSET (...)]`


# --- Framing helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """A literal announced at the end of a line (RFC 9051 §4.3, RFC 7888, RFC 3516)."""

    size: int
    synchronizing: bool  # `{n}`: send "+ ..." before reading; `{n+}`: read at once
    binary: bool = False  # literal8 `~{n}`: may hold NUL octets


def literal_announcement(
    line: bytes,
    *,
    max_literal: int = DEFAULT_MAX_LITERAL,
    max_nonsync: Optional[int] = None,
    tag: Optional[str] = None,
) -> Optional[Literal]:
    """The literal announced at the end of `line` (which ends with CRLF), or None.

    Raises LiteralTooBig (a ParseError, code TOOBIG) when the size exceeds
    `max_literal`, or when a non-synchronising literal exceeds `max_nonsync` (pass
    LITERAL_MINUS_LIMIT when advertising LITERAL- rather than LITERAL+). The error's
    tag is `tag` if given (pass the first line's tag for the lines after a literal),
    else the tag that starts `line`, if any.
    """
    if not line.endswith(b"}\r\n"):
        return None
    start = line.rfind(b"{", 0, len(line) - 3)
    if start < 0:
        return None
    digits = line[start + 1 : -3]
    synchronizing = not digits.endswith(b"+")
    if not synchronizing:
        digits = digits[:-1]
    if not digits or not digits.isdigit():
        return None
    binary = line[start - 1 : start] == b"~"
    # A size with more digits than any limit is absurd; don't build a huge int from it.
    size = int(digits) if len(digits) <= 30 else 10**30
    literal = Literal(size=size, synchronizing=synchronizing, binary=binary)
    if tag is None:
        tag = peek_tag(line)
    if size > max_literal:
        raise LiteralTooBig("literal too big", literal=literal, tag=tag)
    if not synchronizing and max_nonsync is not None and size > max_nonsync:
        raise LiteralTooBig("non-synchronizing literal too big", literal=literal, tag=tag)
    return literal


def peek_tag(data: bytes) -> Optional[str]:
    """The tag that starts `data`, if it is a well-formed one; for error replies."""
    match = _TAG_RE.match(data)
    if not match or match.end() > MAX_TAG_LENGTH:
        return None
    if match.end() < len(data) and data[match.end()] not in b" \r\n":
        return None
    return match.group().decode("ascii")


def is_idle_done(line: bytes) -> bool:
    """True for the line that ends IDLE (RFC 2177 §3, RFC 9051 §6.3.13)."""
    return line.upper() in (b"DONE\r\n", b"DONE")


# --- Modified UTF-7 (RFC 3501 §5.1.3) -------------------------------------------------


def encode_modified_utf7(name: str) -> bytes:
    """A mailbox name in modified UTF-7, for IMAP4rev1 clients without UTF8=ACCEPT."""
    out = bytearray()
    pending: list[str] = []
    for char in name + "\x20":  # the sentinel flushes the last shifted run
        if "\x20" <= char <= "\x7e":
            if pending:
                utf16 = "".join(pending).encode("utf-16-be", "surrogatepass")
                encoded = binascii.b2a_base64(utf16, newline=False).rstrip(b"=")
                out += b"&" + encoded.replace(b"/", b",") + b"-"
                pending.clear()
            out += b"&-" if char == "&" else char.encode("ascii")
        else:
            pending.append(char)
    return bytes(out[:-1])


def decode_modified_utf7(raw: bytes) -> str:
    """The mailbox name `raw` spells in modified UTF-7. Strict: only the canonical
    spelling of a name is accepted (RFC 3501 §5.1.3 "MUST"s), so no two byte strings
    decode to the same name."""
    parts = []
    position = 0
    while position < len(raw):
        shift = raw.find(b"&", position)
        plain = raw[position:] if shift < 0 else raw[position:shift]
        if not _PRINTABLE_ASCII.fullmatch(plain):
            raise ParseError("mailbox name must be modified UTF-7")
        parts.append(plain.decode("ascii"))
        if shift < 0:
            break
        end = raw.find(b"-", shift + 1)
        if end < 0:
            raise ParseError("unterminated modified UTF-7 in mailbox name")
        parts.append(_decode_mutf7_run(raw[shift + 1 : end]) if end > shift + 1 else "&")
        position = end + 1
    name = "".join(parts)
    if encode_modified_utf7(name) != raw:
        raise ParseError("mailbox name is not canonical modified UTF-7")
    return name


def _decode_mutf7_run(run: bytes) -> str:
    if not _MUTF7_BASE64.fullmatch(run) or len(run) % 4 == 1:
        raise ParseError("invalid modified UTF-7 in mailbox name")
    padded = run.replace(b",", b"/") + b"=" * (-len(run) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True).decode("utf-16-be")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise ParseError("invalid modified UTF-7 in mailbox name") from None


# --- Sequence sets (RFC 9051 §9 sequence-set, RFC 5182 "$") -----------------------------


@dataclass(frozen=True)
class SequenceSet:
    """A set of message sequence numbers or UIDs, as the client wrote it.

    `ranges` holds (first, last) pairs in the client's order; None stands for "*" (the
    largest number in use) and first may exceed last ("5:2" is "2:5"). A single number n
    is (n, n). `saved` is RFC 5182's "$": the result kept by SEARCH RETURN (SAVE).
    Nothing is materialised until `resolve`, which works on ranges, so 1:* over 100k
    messages costs one range.
    """

    ranges: tuple[tuple[Optional[int], Optional[int]], ...] = ()
    saved: bool = False

    @classmethod
    def parse(cls, text: Union[str, bytes]) -> SequenceSet:
        """Parse "1:4,7,9:*" or "$"; ParseError if malformed."""
        token = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
        if token == b"$":
            return cls(saved=True)
        parts = token.split(b",")
        if len(parts) > MAX_SEQUENCE_RANGES:
            raise ParseError("sequence set too long")
        ranges = []
        for part in parts:
            first, colon, last = part.partition(b":")
            start = _sequence_number(first)
            ranges.append((start, _sequence_number(last) if colon else start))
        return cls(tuple(ranges))

    @classmethod
    def from_numbers(cls, numbers: Iterable[int]) -> SequenceSet:
        """The compact set holding exactly `numbers` (for ESEARCH ALL, COPYUID...)."""
        ranges: list[tuple[Optional[int], Optional[int]]] = []
        for number in sorted(set(numbers)):
            if ranges and ranges[-1][1] == number - 1:
                ranges[-1] = (ranges[-1][0], number)
            else:
                ranges.append((number, number))
        return cls(tuple(ranges))

    @classmethod
    def from_ranges(cls, ranges: Iterable[range]) -> SequenceSet:
        """The set holding the numbers of step-1 `ranges` (e.g. a `resolve` result)."""
        return cls(tuple((r.start, r.stop - 1) for r in ranges if len(r)))

    @property
    def uses_star(self) -> bool:
        return any(first is None or last is None for first, last in self.ranges)

    def highest(self) -> int:
        """The largest number written explicitly (0 if none): a sequence number above
        the message count makes the command invalid (RFC 9051 §9 seq-number)."""
        return max(
            (n for pair in self.ranges for n in pair if n is not None), default=0
        )

    def resolve(
        self, max_value: int, *, saved: Optional[Iterable[range]] = None
    ) -> list[range]:
        """Sorted, disjoint, merged ranges within 1..max_value.

        `max_value` is the message count (sequence numbers) or the highest UID in use;
        "*" stands for it, so for UIDs "n:*" includes the highest UID even when n is
        above it (RFC 9051 §6.4.8). `saved` is the saved search result "$" refers to
        (RFC 5182 §2.1: empty if none was saved); ranges must have step 1.
        """
        pairs: list[tuple[int, int]] = []
        if self.saved:
            for piece in saved or ():
                if len(piece):
                    pairs.append((min(piece[0], piece[-1]), max(piece[0], piece[-1])))
        else:
            for first, last in self.ranges:
                a = max_value if first is None else first
                b = max_value if last is None else last
                pairs.append((a, b) if a <= b else (b, a))
        merged: list[list[int]] = []
        for low, high in sorted(pairs):
            low, high = max(low, 1), min(high, max_value)
            if low > high:
                continue
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        return [range(low, high + 1) for low, high in merged]

    def contains(
        self, number: int, max_value: int, *, saved: Optional[Iterable[range]] = None
    ) -> bool:
        return _ranges_contain(self.resolve(max_value, saved=saved), number)

    def count(self, max_value: int, *, saved: Optional[Iterable[range]] = None) -> int:
        return sum(len(r) for r in self.resolve(max_value, saved=saved))

    def numbers(
        self, max_value: int, *, saved: Optional[Iterable[range]] = None
    ) -> Iterator[int]:
        """Every number in the set, ascending, lazily."""
        for piece in self.resolve(max_value, saved=saved):
            yield from piece

    def __str__(self) -> str:
        if self.saved:
            return "$"
        return ",".join(
            _seq_text(first) if first == last else f"{_seq_text(first)}:{_seq_text(last)}"
            for first, last in self.ranges
        )


def _ranges_contain(ranges: list[range], number: int) -> bool:
    index = bisect_right([r.start for r in ranges], number) - 1
    return index >= 0 and number in ranges[index]


def _seq_text(number: Optional[int]) -> str:
    return "*" if number is None else str(number)


def _sequence_number(token: bytes) -> Optional[int]:
    if token == b"*":
        return None
    if not token.isdigit() or len(token) > 10:
        raise ParseError("invalid sequence set")
    number = int(token)
    if not 0 < number <= MAX_NUMBER:
        raise ParseError("invalid sequence set")
    return number


# --- Search keys (RFC 9051 §6.4.4) --------------------------------------------------------
# Synonyms are folded on parsing: UNSEEN is Not(Flag("\\Seen")), NEW is
# And(Flag("\\Recent"), Not(Flag("\\Seen"))), OLD is Not(Flag("\\Recent")), UNKEYWORD k
# is Not(Flag(k)), FROM/TO/CC/BCC/SUBJECT are Header(...), and a list of keys (at the
# top level or in parentheses) is an And, flattened, or the key itself when alone.


class SearchKey:
    """Base of the search-key tree nodes."""

    __slots__ = ()


@dataclass(frozen=True)
class All(SearchKey):
    pass


@dataclass(frozen=True)
class Flag(SearchKey):
    """Messages with this flag set: a system flag ("\\Seen") or a keyword ("$Junk")."""

    name: str


@dataclass(frozen=True)
class Not(SearchKey):
    key: SearchKey


@dataclass(frozen=True)
class And(SearchKey):
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True)
class Or(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class Header(SearchKey):
    """`value` is a substring of header field `name` (lower case); "" matches any
    message that has the field (RFC 9051 §6.4.4 HEADER)."""

    name: str
    value: str


@dataclass(frozen=True)
class Body(SearchKey):
    value: str


@dataclass(frozen=True)
class Text(SearchKey):
    """`value` in the header or the body."""

    value: str


@dataclass(frozen=True)
class InternalDate(SearchKey):
    """BEFORE / ON / SINCE: `op` is "before", "on" or "since"; dates ignore time zones."""

    op: str
    date: date


@dataclass(frozen=True)
class SentDate(SearchKey):
    """SENTBEFORE / SENTON / SENTSINCE, on the Date: header."""

    op: str
    date: date


@dataclass(frozen=True)
class Larger(SearchKey):
    size: int


@dataclass(frozen=True)
class Smaller(SearchKey):
    size: int


@dataclass(frozen=True)
class SequenceKey(SearchKey):
    """Messages whose sequence numbers are in the set (possibly "$")."""

    sequence: SequenceSet


@dataclass(frozen=True)
class UidKey(SearchKey):
    sequence: SequenceSet


@dataclass(frozen=True)
class ModSeq(SearchKey):
    """RFC 7162 §3.1.5: mod-sequence >= `modseq`; optionally of flag `entry`
    ("\\Seen", a keyword) with `entry_type` "priv", "shared" or "all"."""

    modseq: int
    entry: Optional[str] = None
    entry_type: Optional[str] = None


@dataclass(frozen=True)
class EmailId(SearchKey):
    """RFC 8474 §6: EMAILID."""

    id: str


@dataclass(frozen=True)
class ThreadId(SearchKey):
    """RFC 8474 §6: THREADID."""

    id: str


# --- Fetch items (RFC 9051 §6.4.5) -------------------------------------------------------


class FetchItem:
    """Base of the fetch items."""

    __slots__ = ()


@dataclass(frozen=True)
class FetchAttribute(FetchItem):
    """An item without a section: ENVELOPE, FLAGS, INTERNALDATE, RFC822.SIZE, BODY
    (the non-extensible BODYSTRUCTURE), BODYSTRUCTURE, UID, MODSEQ (RFC 7162), RFC822,
    RFC822.HEADER, RFC822.TEXT (RFC 3501), EMAILID, THREADID (RFC 8474)."""

    name: str


@dataclass(frozen=True)
class Section:
    """A body section spec. `part` is the part path (1.2.3 → (1, 2, 3); () is the whole
    message); `text` is None (the whole part), "HEADER", "HEADER.FIELDS",
    "HEADER.FIELDS.NOT", "TEXT" or "MIME"; `fields` lists HEADER.FIELDS names as sent."""

    part: tuple[int, ...] = ()
    text: Optional[str] = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Partial:
    """<start.length>: octets from `start`, at most `length` of them."""

    start: int
    length: int


@dataclass(frozen=True)
class FetchBody(FetchItem):
    """BODY[section]<partial> and BODY.PEEK[...] (peek: don't set \\Seen)."""

    section: Section
    partial: Optional[Partial] = None
    peek: bool = False


@dataclass(frozen=True)
class FetchBinary(FetchItem):
    """RFC 3516 BINARY[part]<partial> and BINARY.PEEK[...]."""

    part: tuple[int, ...] = ()
    partial: Optional[Partial] = None
    peek: bool = False


@dataclass(frozen=True)
class FetchBinarySize(FetchItem):
    """RFC 3516 BINARY.SIZE[part]."""

    part: tuple[int, ...] = ()


@dataclass(frozen=True)
class FetchPreview(FetchItem):
    """RFC 8970 PREVIEW, PREVIEW (LAZY)."""

    lazy: bool = False


_FETCH_ATTRIBUTES = frozenset(
    {
        "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY", "BODYSTRUCTURE",
        "UID", "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "EMAILID", "THREADID",
    }
)
_FAST = (FetchAttribute("FLAGS"), FetchAttribute("INTERNALDATE"), FetchAttribute("RFC822.SIZE"))
_FETCH_MACROS = {  # RFC 9051 §6.4.5
    "FAST": _FAST,
    "ALL": _FAST + (FetchAttribute("ENVELOPE"),),
    "FULL": _FAST + (FetchAttribute("ENVELOPE"), FetchAttribute("BODY")),
}


# --- Commands --------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """Base of every command; `name` is the command word, for logs and state tables."""

    tag: str
    name: ClassVar[str] = ""


@dataclass(frozen=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True)
class Authenticate(Command):
    """RFC 9051 §6.2.2, RFC 4959 SASL-IR. `initial_response` is decoded: None when
    absent (send an empty challenge), b"" for "=" (an empty initial response)."""

    mechanism: str  # upper case
    initial_response: Optional[bytes] = None
    name: ClassVar[str] = "AUTHENTICATE"


@dataclass(frozen=True)
class Login(Command):
    userid: str
    password: str
    name: ClassVar[str] = "LOGIN"


@dataclass(frozen=True)
class Enable(Command):
    """RFC 5161: capability names, upper case, in order sent."""

    capabilities: tuple[str, ...]
    name: ClassVar[str] = "ENABLE"


@dataclass(frozen=True)
class Id(Command):
    """RFC 2971: (field, value-or-None) pairs in order sent; None for ID NIL."""

    parameters: Optional[tuple[tuple[str, Optional[str]], ...]]
    name: ClassVar[str] = "ID"


@dataclass(frozen=True)
class Compress(Command):
    """RFC 4978: the algorithm, upper case (DEFLATE)."""

    mechanism: str
    name: ClassVar[str] = "COMPRESS"


@dataclass(frozen=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True)
class QResync:
    """RFC 7162 §3.2.5 SELECT/EXAMINE (QRESYNC (...)) parameters."""

    uidvalidity: int
    modseq: int
    known_uids: Optional[SequenceSet] = None
    known_sequences: Optional[SequenceSet] = None  # seq-match-data: message numbers...
    known_sequence_uids: Optional[SequenceSet] = None  # ...and their UIDs


@dataclass(frozen=True)
class Select(Command):
    """SELECT, or EXAMINE when `readonly`. `condstore` is the CONDSTORE parameter
    (RFC 7162 §3.1.8); `qresync` the QRESYNC one (which implies CONDSTORE)."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: Optional[QResync] = None
    name: ClassVar[str] = "SELECT"


@dataclass(frozen=True)
class Create(Command):
    """`special_use`: RFC 6154 §3 CREATE ... (USE (\\Drafts)), canonical spelling."""

    mailbox: str
    special_use: tuple[str, ...] = ()
    name: ClassVar[str] = "CREATE"


@dataclass(frozen=True)
class Delete(Command):
    mailbox: str
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True)
class Rename(Command):
    mailbox: str
    new_name: str
    name: ClassVar[str] = "RENAME"


@dataclass(frozen=True)
class Subscribe(Command):
    mailbox: str
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True)
class Unsubscribe(Command):
    mailbox: str
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True)
class List(Command):
    """LIST, with RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE and RFC 5819 LIST-STATUS.

    `reference` and `patterns` are decoded like mailbox names (wildcards kept; INBOX
    not folded). `select_options` ⊆ SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE and
    `return_options` ⊆ SUBSCRIBED CHILDREN SPECIAL-USE STATUS, upper case, in order, no
    duplicates; `status_items` are the RETURN (STATUS (...)) items. `extended` is true
    when the extended syntax was used (selection options, a pattern list or RETURN),
    which allows extended data in the replies (RFC 5258 §3).
    """

    reference: str
    patterns: tuple[str, ...]
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: Optional[tuple[str, ...]] = None
    extended: bool = False
    name: ClassVar[str] = "LIST"


@dataclass(frozen=True)
class Lsub(Command):
    reference: str
    pattern: str
    name: ClassVar[str] = "LSUB"


@dataclass(frozen=True)
class Status(Command):
    """Items upper case, in order, no duplicates: MESSAGES RECENT UIDNEXT UIDVALIDITY
    UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT MAILBOXID DELETED-STORAGE."""

    mailbox: str
    items: tuple[str, ...]
    name: ClassVar[str] = "STATUS"


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND (RFC 3502 MULTIAPPEND: one or more).

    `binary` when sent as literal8 (RFC 3516: may contain NUL); `utf8` when wrapped
    as UTF8 (~{n}) (RFC 6855 §4: the message may carry UTF-8 headers)."""

    data: bytes
    flags: tuple[str, ...] = ()
    internaldate: Optional[datetime] = None  # time-zone aware
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    messages: tuple[AppendMessage, ...]
    name: ClassVar[str] = "APPEND"


@dataclass(frozen=True)
class Idle(Command):
    """RFC 2177; the session then waits for a line where `is_idle_done` is true."""

    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE <uids> (RFC 4315 §2.1) when `uid`."""

    uid: bool = False
    sequence: Optional[SequenceSet] = None
    name: ClassVar[str] = "EXPUNGE"


@dataclass(frozen=True)
class Search(Command):
    """`key` is the search tree; `charset` the CHARSET given (upper case) or None.
    `return_options` is None for a plain SEARCH (answer `* SEARCH`), else the RFC 4731
    RETURN options ⊆ MIN MAX ALL COUNT SAVE (RFC 5182), upper case, no duplicates;
    RETURN () is ("ALL",) (RFC 4731 §3.1)."""

    key: SearchKey
    uid: bool = False
    charset: Optional[str] = None
    return_options: Optional[tuple[str, ...]] = None
    name: ClassVar[str] = "SEARCH"


@dataclass(frozen=True)
class Fetch(Command):
    """Macros ALL/FAST/FULL are expanded. RFC 7162 §3.1.4/§3.2.6 modifiers:
    `changedsince` (CHANGEDSINCE n) and `vanished` (only in UID FETCH, with
    CHANGEDSINCE). UID FETCH replies include UID whether or not it was asked for."""

    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    uid: bool = False
    changedsince: Optional[int] = None
    vanished: bool = False
    name: ClassVar[str] = "FETCH"


@dataclass(frozen=True)
class Store(Command):
    """`mode` is "" (replace), "+" (add) or "-" (remove); `silent` for FLAGS.SILENT;
    `unchangedsince` is RFC 7162 §3.1.3 (UNCHANGEDSINCE n)."""

    sequence: SequenceSet
    mode: str
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False
    unchangedsince: Optional[int] = None
    name: ClassVar[str] = "STORE"


@dataclass(frozen=True)
class Copy(Command):
    sequence: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "COPY"


@dataclass(frozen=True)
class Move(Command):
    """RFC 6851."""

    sequence: SequenceSet
    mailbox: str
    uid: bool = False
    name: ClassVar[str] = "MOVE"


@dataclass(frozen=True)
class SortCriterion:
    """RFC 5256 §3: `key` ∈ ARRIVAL CC DATE FROM SIZE SUBJECT TO."""

    key: str
    reverse: bool = False


@dataclass(frozen=True)
class Sort(Command):
    """RFC 5256 SORT; `charset` is mandatory there, upper case."""

    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    uid: bool = False
    name: ClassVar[str] = "SORT"


@dataclass(frozen=True)
class Thread(Command):
    """RFC 5256 THREAD; `algorithm` is REFERENCES or ORDEREDSUBJECT."""

    algorithm: str
    charset: str
    key: SearchKey
    uid: bool = False
    name: ClassVar[str] = "THREAD"


@dataclass(frozen=True)
class GetQuota(Command):
    """RFC 9208 §4.2."""

    root: str
    name: ClassVar[str] = "GETQUOTA"


@dataclass(frozen=True)
class GetQuotaRoot(Command):
    """RFC 9208 §4.3."""

    mailbox: str
    name: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True)
class SetQuota(Command):
    """RFC 9208 §4.1: (resource name upper case, limit) pairs; () removes limits."""

    root: str
    limits: tuple[tuple[str, int], ...]
    name: ClassVar[str] = "SETQUOTA"


_STATUS_ITEMS = frozenset(
    {
        "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",  # RFC 3501 §6.3.10
        "DELETED", "SIZE",  # RFC 9051 §6.3.11
        "HIGHESTMODSEQ",  # RFC 7162 §3.1.9
        "APPENDLIMIT",  # RFC 7889 §3
        "MAILBOXID",  # RFC 8474 §4.3
        "DELETED-STORAGE",  # RFC 9208 §5.1
    }
)
_LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
_SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
_SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})
_THREAD_ALGORITHMS = frozenset({"REFERENCES", "ORDEREDSUBJECT"})


# --- The reader -------------------------------------------------------------------------


class _Reader:
    """A cursor over one command, with the grammar's terminals. Every error goes
    through `fail`, which carries the tag once it is known."""

    def __init__(self, data: bytes, *, utf8: bool):
        self.data = data
        self.pos = 0
        self.utf8 = utf8
        self.tag: Optional[str] = None
        self.depth = 0
        self.search_keys = 0
        self.codec = "utf-8"

    # Errors and lookahead

    def fail(self, message: str, *, code: Optional[str] = None, status: str = "BAD") -> NoReturn:
        raise ParseError(message, tag=self.tag, code=code, status=status)

    def peek(self, offset: int = 0) -> int:
        index = self.pos + offset
        return self.data[index] if index < len(self.data) else -1

    def peek_word(self, word: bytes) -> bool:
        """The next atom is `word` (case-insensitive)."""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() != word:
            return False
        return end >= len(self.data) or self.data[end] not in _ATOM_CHARS

    def at_end(self) -> bool:
        return self.pos == len(self.data) or self.data[self.pos :] == b"\r\n"

    def end(self) -> None:
        if not self.at_end():
            self.fail("unexpected characters at end of command")

    def expect(self, char: bytes, message: str) -> None:
        if not self.data.startswith(char, self.pos):
            self.fail(message)
        self.pos += len(char)

    def sp(self) -> None:
        if self.peek() != SP:
            self.fail("expected a space" if not self.at_end() else "missing arguments")
        self.pos += 1

    def take(self, pattern: re.Pattern) -> bytes:
        match = pattern.match(self.data, self.pos)
        if not match:
            return b""
        self.pos = match.end()
        return match.group()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail("too deeply nested")

    def leave(self) -> None:
        self.depth -= 1

    def open(self) -> None:
        self.expect(b"(", "expected '('")
        self.enter()

    def close(self) -> None:
        self.expect(b")", "expected ')'")
        self.leave()

    def paren_list(self, item: Callable[[], object], *, empty: bool) -> tuple:
        """"(" [item *(SP item)] ")"; `empty` allows "()"."""
        self.open()
        items = []
        if self.peek() != RPAREN:
            items.append(item())
            while self.peek() == SP:
                self.pos += 1
                items.append(item())
                if len(items) > MAX_ITEMS:
                    self.fail("too many items in list")
        elif not empty:
            self.fail("empty list")
        self.close()
        return tuple(items)

    # Terminals

    def atom(self, what: str = "atom") -> bytes:
        token = self.take(_ATOM_RE)
        if not token:
            self.fail(f"expected {what}")
        return token

    def keyword(self, what: str) -> str:
        return self.atom(what).decode("ascii").upper()

    def keyword_in(self, allowed: frozenset, what: str) -> str:
        word = self.keyword(what)
        if word not in allowed:
            self.fail(f"unknown {what}")
        return word

    def number(self, what: str = "number", *, nonzero: bool = False, limit: int = MAX_NUMBER) -> int:
        digits = self.take(_DIGITS_RE)
        if not digits:
            self.fail(f"expected {what}")
        if len(digits) > 20 or int(digits) > limit:
            self.fail(f"{what} too large")
        value = int(digits)
        if nonzero and value == 0:
            self.fail(f"{what} must not be zero")
        return value

    def quoted(self) -> bytes:
        match = _QUOTED_RE.match(self.data, self.pos)
        if not match:
            self.fail("invalid quoted string")
        self.pos = match.end()
        body = match.group(1)
        return _UNESCAPE_RE.sub(rb"\1", body) if b"\\" in body else body

    def literal(self, *, binary: bool = False) -> tuple[bytes, bool]:
        match = _LITERAL_RE.match(self.data, self.pos)
        if not match:
            self.fail("invalid literal")
        if match.group(1) and not binary:
            self.fail("literal8 not allowed here")
        start = match.end()
        end = start + int(match.group(2))
        if end > len(self.data):
            self.fail("literal data truncated")
        self.pos = end
        return self.data[start:end], bool(match.group(1))

    def string(self) -> bytes:
        char = self.peek()
        if char == DQUOTE:
            return self.quoted()
        if char == LBRACE or self.data.startswith(b"~{", self.pos):
            return self.literal()[0]
        self.fail("expected a string")

    def astring(self) -> bytes:
        char = self.peek()
        if char in (DQUOTE, LBRACE) or self.data.startswith(b"~{", self.pos):
            return self.string()
        token = self.take(_ASTRING_RE)
        if not token:
            self.fail("expected a string")
        return token

    def nstring(self) -> Optional[bytes]:
        if self.peek_word(b"NIL"):
            self.pos += 3
            return None
        return self.string()

    def text(self, raw: bytes, what: str = "string") -> str:
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8")
        if "\x00" in value:
            self.fail(f"{what} contains NUL")
        return value

    # Mailboxes and flags

    def mailbox_name(self, raw: bytes) -> str:
        if self.utf8:
            name = self.text(raw, "mailbox name")
        else:
            try:
                name = decode_modified_utf7(raw)
            except ParseError as error:
                self.fail(error.message)
        if _MAILBOX_FORBIDDEN.search(name):
            self.fail("mailbox name contains control characters")
        return name

    def mailbox(self, *, fold_inbox: bool = True) -> str:
        name = self.mailbox_name(self.astring())
        # RFC 9051 §5.1: INBOX is case-insensitive; isascii() keeps "ınbox" out.
        if fold_inbox and name.isascii() and name.upper() == "INBOX":
            return "INBOX"
        return name

    def list_mailbox(self) -> str:
        char = self.peek()
        if char in (DQUOTE, LBRACE) or self.data.startswith(b"~{", self.pos):
            raw = self.string()
        else:
            raw = self.take(_LIST_RE)
            if not raw:
                self.fail("expected a mailbox pattern")
        return self.mailbox_name(raw)

    def flag(self) -> str:
        if self.peek() == BACKSLASH:
            self.pos += 1
            word = self.atom("flag").decode("ascii")
            return _SYSTEM_FLAGS.get(word.lower(), "\\" + word)
        return self.atom("flag").decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        return self.paren_list(self.flag, empty=True)

    def use_attribute(self) -> str:
        if self.peek() != BACKSLASH:
            self.fail("expected a special-use attribute")
        self.pos += 1
        word = self.atom("special-use attribute").decode("ascii")
        return _USE_ATTRIBUTES.get(word.lower(), "\\" + word)

    # Numbers, sets and dates

    def sequence_set(self, *, plain: bool = False) -> SequenceSet:
        """A sequence-set; `plain` refuses "*" and "$" (RFC 7162 known-uids)."""
        token = self.take(_SEQSET_RE)
        if not token:
            self.fail("expected a sequence set")
        try:
            result = SequenceSet.parse(token)
        except ParseError as error:
            self.fail(error.message)
        if plain and (result.saved or result.uses_star):
            self.fail("'*' and '$' not allowed here")
        return result

    def date(self) -> date:
        quoted = self.peek() == DQUOTE
        self.pos += quoted
        match = _DATE_RE.match(self.data, self.pos)
        if not match:
            self.fail("invalid date")
        self.pos = match.end()
        if quoted:
            self.expect(b'"', "invalid date")
        day, month, year = match.groups()
        try:
            return date(int(year), _MONTHS.get(month.lower(), 0), int(day))
        except ValueError:
            self.fail("invalid date")

    def date_time(self) -> datetime:
        """RFC 9051 date-time: "17-Jul-1996 02:44:25 -0700"."""
        match = _DATE_TIME_RE.match(self.data, self.pos)
        if not match:
            self.fail("invalid date-time")
        self.pos = match.end()
        day, month, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
        zone_hours, zone_minutes = int(zone_h), int(zone_m)
        if zone_hours > 23 or zone_minutes > 59:
            self.fail("invalid time zone")
        offset = timedelta(hours=zone_hours, minutes=zone_minutes)
        try:
            return datetime(
                int(year), _MONTHS.get(month.lower(), 0), int(day),
                int(hour), int(minute), min(int(second), 59),  # a leap second lands on :59
                tzinfo=timezone(-offset if sign == b"-" else offset),
            )
        except ValueError:
            self.fail("invalid date-time")

    # Search

    def charset(self) -> str:
        """A SEARCH/SORT/THREAD charset; sets the codec for the search strings."""
        raw = self.quoted() if self.peek() == DQUOTE else self.atom("charset")
        name = raw.decode("ascii", "replace").upper()
        codec = _CHARSETS.get(name)
        if codec is None:
            # RFC 9051 §6.4.4: an unknown charset is NO [BADCHARSET], not BAD.
            self.fail("unsupported charset", code="BADCHARSET", status="NO")
        self.codec = codec
        return name

    def search_string(self) -> str:
        raw = self.astring()
        try:
            value = raw.decode(self.codec)
        except (UnicodeError, LookupError):
            self.fail("search string does not match the charset")
        if "\x00" in value:
            self.fail("search string contains NUL")
        return value

    def search_program(self) -> SearchKey:
        keys = [self.search_key()]
        while self.peek() == SP:
            self.pos += 1
            keys.append(self.search_key())
        return _conjunction(keys)

    def search_key(self) -> SearchKey:
        self.search_keys += 1
        if self.search_keys > MAX_SEARCH_KEYS:
            self.fail("too many search keys")
        char = self.peek()
        if char == LPAREN:
            self.open()
            keys = [self.search_key()]
            while self.peek() == SP:
                self.pos += 1
                keys.append(self.search_key())
            self.close()
            return _conjunction(keys)
        if char in _SEQ_START:
            return SequenceKey(self.sequence_set())
        word = self.keyword("search key")
        handler = _SEARCH_KEYS.get(word)
        if handler is None:
            self.fail("unknown search key")
        return handler(self)

    def search_argument(self) -> SearchKey:
        self.sp()
        self.enter()
        key = self.search_key()
        self.leave()
        return key

    # Fetch

    def fetch_items(self) -> tuple[FetchItem, ...]:
        if self.peek() == LPAREN:
            return self.paren_list(self.fetch_item, empty=False)
        for macro, expansion in _FETCH_MACROS.items():
            if self.peek_word(macro.encode("ascii")):
                self.pos += len(macro)
                return expansion
        return (self.fetch_item(),)

    def fetch_item(self) -> FetchItem:
        name = self.take(_FETCH_NAME_RE).decode("ascii").upper()
        if not name:
            self.fail("expected a fetch item")
        if name in ("BODY", "BODY.PEEK") and self.peek() == ord("["):
            section = self.section()
            return FetchBody(section, self.partial(), peek=name == "BODY.PEEK")
        if name in ("BINARY", "BINARY.PEEK"):
            part = self.section_binary()
            return FetchBinary(part, self.partial(), peek=name == "BINARY.PEEK")
        if name == "BINARY.SIZE":
            return FetchBinarySize(self.section_binary())
        if name == "PREVIEW":
            return FetchPreview(lazy=self.preview_modifiers())
        if name not in _FETCH_ATTRIBUTES:
            self.fail("unknown fetch item")
        return FetchAttribute(name)

    def preview_modifiers(self) -> bool:
        """RFC 8970 §3: PREVIEW [SP "(" preview-mod *(SP preview-mod) ")"]. At the top
        level "PREVIEW (CHANGEDSINCE 1)" is a fetch modifier instead; LAZY decides."""
        if not (self.peek() == SP and self.peek(1) == LPAREN):
            return False
        saved = self.pos
        self.pos += 2
        if not self.peek_word(b"LAZY"):
            self.pos = saved
            return False
        self.pos = saved + 1
        self.paren_list(lambda: self.keyword_in(frozenset({"LAZY"}), "preview modifier"), empty=False)
        return True

    def section(self) -> Section:
        self.expect(b"[", "expected '['")
        part: tuple[int, ...] = ()
        text = None
        if self.peek() in _DIGIT_BYTES:
            part = self.section_part()
            if self.peek() == ord("."):
                self.pos += 1
                text = self.section_text(mime=True)
        elif self.peek() != ord("]"):
            text = self.section_text(mime=False)
        fields: tuple[str, ...] = ()
        if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            self.sp()
            fields = self.paren_list(
                lambda: self.text(self.astring(), "header field name"), empty=False
            )
        self.expect(b"]", "expected ']'")
        return Section(part, text, fields)

    def section_part(self) -> tuple[int, ...]:
        pieces = self.take(_SECTION_PART_RE).split(b".")
        if len(pieces) > MAX_DEPTH:
            self.fail("section part too deep")
        part = []
        for piece in pieces:
            if len(piece) > 10 or not 0 < int(piece) <= MAX_NUMBER:
                self.fail("invalid section part")
            part.append(int(piece))
        return tuple(part)

    def section_text(self, *, mime: bool) -> str:
        text = self.take(_SECTION_TEXT_RE).decode("ascii").upper()
        allowed = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT") + (("MIME",) if mime else ())
        if text not in allowed:
            self.fail("invalid section")
        return text

    def section_binary(self) -> tuple[int, ...]:
        self.expect(b"[", "expected '['")
        part = self.section_part() if self.peek() in _DIGIT_BYTES else ()
        self.expect(b"]", "expected ']'")
        return part

    def partial(self) -> Optional[Partial]:
        if self.peek() != ord("<"):
            return None
        self.pos += 1
        start = self.number("partial start", limit=MAX_NUMBER64)
        self.expect(b".", "invalid partial")
        length = self.number("partial length", nonzero=True, limit=MAX_NUMBER64)
        self.expect(b">", "invalid partial")
        return Partial(start, length)

    # Shared by several commands

    def status_items(self) -> tuple[str, ...]:
        items = self.paren_list(lambda: self.keyword_in(_STATUS_ITEMS, "status item"), empty=False)
        return tuple(dict.fromkeys(items))


def _conjunction(keys: list[SearchKey]) -> SearchKey:
    if len(keys) == 1:
        return keys[0]
    flat: list[SearchKey] = []
    for key in keys:
        flat.extend(key.keys if isinstance(key, And) else (key,))
    return And(tuple(flat))


# --- Search key handlers ---------------------------------------------------------------


def _flag_key(flag: str, negate: bool = False) -> Callable[[_Reader], SearchKey]:
    key: SearchKey = Not(Flag(flag)) if negate else Flag(flag)
    return lambda r: key


def _header_key(field: str) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        return Header(field, r.search_string())

    return parse


def _date_key(kind: type, op: str) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        return kind(op, r.date())

    return parse


def _search_header(r: _Reader) -> SearchKey:
    r.sp()
    field = r.text(r.astring(), "header field name").lower()
    r.sp()
    return Header(field, r.search_string())


def _search_keyword(negate: bool) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        key = Flag(r.atom("keyword").decode("ascii"))
        return Not(key) if negate else key

    return parse


def _search_size(kind: type) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        return kind(r.number("size", limit=MAX_NUMBER64))

    return parse


def _search_uid(r: _Reader) -> SearchKey:
    r.sp()
    return UidKey(r.sequence_set())


def _search_not(r: _Reader) -> SearchKey:
    return Not(r.search_argument())


def _search_or(r: _Reader) -> SearchKey:
    left = r.search_argument()
    return Or(left, r.search_argument())


def _search_modseq(r: _Reader) -> SearchKey:
    """RFC 7162 §3.1.5: MODSEQ ["/flags/<flag>" SP ("priv" / "shared" / "all")] SP n."""
    r.sp()
    entry = entry_type = None
    if r.peek() == DQUOTE:
        name = r.quoted()
        if not name.lower().startswith(b"/flags/") or len(name) == 7:
            r.fail("invalid MODSEQ entry name")
        flag = name[7:]
        if flag.startswith(b"\\"):
            word = flag[1:]
            if not _ATOM_RE.fullmatch(word):
                r.fail("invalid MODSEQ entry name")
            entry = _SYSTEM_FLAGS.get(word.decode("ascii").lower(), "\\" + word.decode("ascii"))
        elif _ATOM_RE.fullmatch(flag):
            entry = flag.decode("ascii")
        else:
            r.fail("invalid MODSEQ entry name")
        r.sp()
        entry_type = r.keyword_in(frozenset({"PRIV", "SHARED", "ALL"}), "MODSEQ entry type").lower()
        r.sp()
    return ModSeq(r.number("mod-sequence", limit=MAX_NUMBER64), entry, entry_type)


def _search_object_id(kind: type) -> Callable[[_Reader], SearchKey]:
    def parse(r: _Reader) -> SearchKey:
        r.sp()
        token = r.astring()
        if not _OBJECTID_RE.fullmatch(token):
            r.fail("invalid object id")
        return kind(token.decode("ascii"))

    return parse


_SEARCH_KEYS: dict[str, Callable[[_Reader], SearchKey]] = {
    "ALL": lambda r: All(),
    "ANSWERED": _flag_key("\\Answered"),
    "DELETED": _flag_key("\\Deleted"),
    "DRAFT": _flag_key("\\Draft"),
    "FLAGGED": _flag_key("\\Flagged"),
    "RECENT": _flag_key("\\Recent"),
    "SEEN": _flag_key("\\Seen"),
    "UNANSWERED": _flag_key("\\Answered", negate=True),
    "UNDELETED": _flag_key("\\Deleted", negate=True),
    "UNDRAFT": _flag_key("\\Draft", negate=True),
    "UNFLAGGED": _flag_key("\\Flagged", negate=True),
    "UNSEEN": _flag_key("\\Seen", negate=True),
    "OLD": _flag_key("\\Recent", negate=True),
    "NEW": lambda r: And((Flag("\\Recent"), Not(Flag("\\Seen")))),
    "KEYWORD": _search_keyword(negate=False),
    "UNKEYWORD": _search_keyword(negate=True),
    "BCC": _header_key("bcc"),
    "CC": _header_key("cc"),
    "FROM": _header_key("from"),
    "TO": _header_key("to"),
    "SUBJECT": _header_key("subject"),
    "HEADER": _search_header,
    "BODY": lambda r: (r.sp(), Body(r.search_string()))[1],
    "TEXT": lambda r: (r.sp(), Text(r.search_string()))[1],
    "BEFORE": _date_key(InternalDate, "before"),
    "ON": _date_key(InternalDate, "on"),
    "SINCE": _date_key(InternalDate, "since"),
    "SENTBEFORE": _date_key(SentDate, "before"),
    "SENTON": _date_key(SentDate, "on"),
    "SENTSINCE": _date_key(SentDate, "since"),
    "LARGER": _search_size(Larger),
    "SMALLER": _search_size(Smaller),
    "UID": _search_uid,
    "NOT": _search_not,
    "OR": _search_or,
    "MODSEQ": _search_modseq,
    "EMAILID": _search_object_id(EmailId),
    "THREADID": _search_object_id(ThreadId),
}


# --- Command handlers ------------------------------------------------------------------


def _no_arguments(kind: type) -> Callable[[_Reader, str], Command]:
    return lambda r, tag: kind(tag)


def _authenticate(r: _Reader, tag: str) -> Authenticate:
    r.sp()
    mechanism = r.keyword("SASL mechanism")
    if r.at_end():
        return Authenticate(tag, mechanism)
    r.sp()
    token = r.take(_BASE64_RE)
    if token == b"=":  # RFC 4959 §3: an empty initial response
        return Authenticate(tag, mechanism, b"")
    try:
        decoded = binascii.a2b_base64(token, strict_mode=True)
    except binascii.Error:
        decoded = None
    if not token or decoded is None or binascii.b2a_base64(decoded, newline=False) != token:
        r.fail("invalid base64 initial response")
    return Authenticate(tag, mechanism, decoded)


def _login(r: _Reader, tag: str) -> Login:
    r.sp()
    userid = r.text(r.astring(), "user name")
    r.sp()
    return Login(tag, userid, r.text(r.astring(), "password"))


def _enable(r: _Reader, tag: str) -> Enable:
    capabilities = []
    r.sp()
    capabilities.append(r.keyword("capability"))
    while r.peek() == SP:
        r.pos += 1
        capabilities.append(r.keyword("capability"))
        if len(capabilities) > MAX_ITEMS:
            r.fail("too many capabilities")
    return Enable(tag, tuple(capabilities))


def _id(r: _Reader, tag: str) -> Id:
    r.sp()
    if r.peek_word(b"NIL"):
        r.pos += 3
        return Id(tag, None)

    def pair() -> tuple[str, Optional[str]]:
        field = r.string()
        r.sp()
        value = r.nstring()
        if len(field) > MAX_ID_FIELD or (value is not None and len(value) > MAX_ID_VALUE):
            r.fail("ID field or value too long")
        return r.text(field, "ID field"), None if value is None else r.text(value, "ID value")

    r.open()
    pairs = []
    if r.peek() != RPAREN:
        pairs.append(pair())
        while r.peek() == SP:
            r.pos += 1
            pairs.append(pair())
            if len(pairs) > MAX_ID_PAIRS:
                r.fail("too many ID parameters")
    r.close()
    return Id(tag, tuple(pairs))


def _compress(r: _Reader, tag: str) -> Compress:
    r.sp()
    return Compress(tag, r.keyword("compression algorithm"))


def _select(readonly: bool) -> Callable[[_Reader, str], Select]:
    def parse(r: _Reader, tag: str) -> Select:
        r.sp()
        mailbox = r.mailbox()
        condstore = False
        qresync = None
        if not r.at_end():
            r.sp()
            seen: set[str] = set()

            def parameter() -> None:
                nonlocal condstore, qresync
                word = r.keyword_in(frozenset({"CONDSTORE", "QRESYNC"}), "SELECT parameter")
                if word in seen:
                    r.fail("duplicate SELECT parameter")
                seen.add(word)
                if word == "CONDSTORE":
                    condstore = True
                else:
                    r.sp()
                    qresync = _qresync(r)

            r.paren_list(parameter, empty=False)
        return Select(tag, mailbox, readonly=readonly, condstore=condstore, qresync=qresync)

    return parse


def _qresync(r: _Reader) -> QResync:
    """RFC 7162 §3.2.5: "(" uidvalidity SP modseq [SP known-uids] [SP seq-match-data] ")"."""
    r.open()
    uidvalidity = r.number("UIDVALIDITY", nonzero=True)
    r.sp()
    modseq = r.number("mod-sequence", nonzero=True, limit=MAX_NUMBER64)
    known_uids = known_sequences = known_sequence_uids = None
    if r.peek() == SP and r.peek(1) != LPAREN:
        r.sp()
        known_uids = r.sequence_set(plain=True)
    if r.peek() == SP:
        r.sp()
        r.open()
        known_sequences = r.sequence_set(plain=True)
        r.sp()
        known_sequence_uids = r.sequence_set(plain=True)
        r.close()
    r.close()
    return QResync(uidvalidity, modseq, known_uids, known_sequences, known_sequence_uids)


def _create(r: _Reader, tag: str) -> Create:
    r.sp()
    mailbox = r.mailbox()
    uses: tuple[str, ...] = ()
    if not r.at_end():
        r.sp()

        def parameter() -> None:
            nonlocal uses
            r.keyword_in(frozenset({"USE"}), "CREATE parameter")
            r.sp()
            uses = tuple(dict.fromkeys(r.paren_list(r.use_attribute, empty=True)))

        r.paren_list(parameter, empty=False)
    return Create(tag, mailbox, uses)


def _one_mailbox(kind: type) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        return kind(tag, r.mailbox())

    return parse


def _rename(r: _Reader, tag: str) -> Rename:
    r.sp()
    old = r.mailbox()
    r.sp()
    return Rename(tag, old, r.mailbox())


def _list(r: _Reader, tag: str) -> List:
    """RFC 9051 §6.3.9 and RFC 5258 §6:
    LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]."""
    r.sp()
    extended = False
    select: tuple[str, ...] = ()
    if r.peek() == LPAREN:
        extended = True
        select = tuple(dict.fromkeys(
            r.paren_list(lambda: r.keyword_in(_LIST_SELECT_OPTIONS, "LIST selection option"), empty=True)
        ))
        # RFC 5258 §3: RECURSIVEMATCH alone (or with only REMOTE) is an error.
        if "RECURSIVEMATCH" in select and not set(select) - {"RECURSIVEMATCH", "REMOTE"}:
            r.fail("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = r.mailbox(fold_inbox=False)
    r.sp()
    if r.peek() == LPAREN:
        extended = True
        patterns = r.paren_list(r.list_mailbox, empty=False)
    else:
        patterns = (r.list_mailbox(),)
    returns: list[str] = []
    status_items = None
    if r.peek() == SP:
        r.pos += 1
        if not r.peek_word(b"RETURN"):
            r.fail("expected RETURN")
        r.pos += 6
        r.sp()
        extended = True

        def option() -> None:
            nonlocal status_items
            word = r.keyword_in(_LIST_RETURN_OPTIONS | {"STATUS"}, "LIST return option")
            if word == "STATUS":  # RFC 5819 §2
                if status_items is not None:
                    r.fail("duplicate STATUS return option")
                r.sp()
                status_items = r.status_items()
            if word not in returns:
                returns.append(word)

        r.paren_list(option, empty=True)
    return List(tag, reference, patterns, select, tuple(returns), status_items, extended)


def _lsub(r: _Reader, tag: str) -> Lsub:
    r.sp()
    reference = r.mailbox(fold_inbox=False)
    r.sp()
    return Lsub(tag, reference, r.list_mailbox())


def _status(r: _Reader, tag: str) -> Status:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    return Status(tag, mailbox, r.status_items())


def _append(r: _Reader, tag: str) -> Append:
    """RFC 9051 §6.3.12 with RFC 3502 MULTIAPPEND, RFC 3516 literal8 and RFC 6855 UTF8."""
    r.sp()
    mailbox = r.mailbox()
    messages = []
    while not r.at_end() or not messages:
        if len(messages) >= MAX_APPEND_MESSAGES:
            r.fail("too many messages")
        r.sp()
        flags: tuple[str, ...] = ()
        internaldate = None
        if r.peek() == LPAREN:
            flags = tuple(dict.fromkeys(r.flag_list()))
            r.sp()
        if r.peek() == DQUOTE:
            internaldate = r.date_time()
            r.sp()
        utf8 = r.peek_word(b"UTF8")
        if utf8:
            r.pos += 4
            r.sp()
            r.open()
            if not r.data.startswith(b"~{", r.pos):
                r.fail("UTF8 needs a literal8")
            data, binary = r.literal(binary=True)
            r.close()
        elif r.peek() == LBRACE or r.data.startswith(b"~{", r.pos):
            data, binary = r.literal(binary=True)
        else:
            r.fail("expected the message as a literal")
        messages.append(AppendMessage(data, flags, internaldate, binary=binary, utf8=utf8))
    return Append(tag, mailbox, tuple(messages))


def _expunge(r: _Reader, tag: str) -> Expunge:
    return Expunge(tag)


def _uid_expunge(r: _Reader, tag: str) -> Expunge:
    r.sp()
    return Expunge(tag, uid=True, sequence=r.sequence_set())


def _search_command(uid: bool) -> Callable[[_Reader, str], Search]:
    def parse(r: _Reader, tag: str) -> Search:
        r.sp()
        return_options = None
        if r.peek_word(b"RETURN"):  # RFC 4731 §3.1
            r.pos += 6
            r.sp()
            options = r.paren_list(
                lambda: r.keyword_in(_SEARCH_RETURN_OPTIONS, "SEARCH return option"), empty=True
            )
            return_options = tuple(dict.fromkeys(options)) or ("ALL",)
            r.sp()
        charset = None
        if r.peek_word(b"CHARSET"):
            r.pos += 7
            r.sp()
            charset = r.charset()
            r.sp()
        key = r.search_program()
        return Search(tag, key, uid=uid, charset=charset, return_options=return_options)

    return parse


def _fetch(uid: bool) -> Callable[[_Reader, str], Fetch]:
    def parse(r: _Reader, tag: str) -> Fetch:
        r.sp()
        sequence = r.sequence_set()
        r.sp()
        items = r.fetch_items()
        changedsince = None
        vanished = False
        if not r.at_end():
            r.sp()
            seen: set[str] = set()

            def modifier() -> None:  # RFC 7162 §3.1.4, §3.2.6
                nonlocal changedsince, vanished
                word = r.keyword_in(frozenset({"CHANGEDSINCE", "VANISHED"}), "FETCH modifier")
                if word in seen:
                    r.fail("duplicate FETCH modifier")
                seen.add(word)
                if word == "CHANGEDSINCE":
                    r.sp()
                    # mod-sequence-value is >= 1, but CHANGEDSINCE 0 ("every change")
                    # is harmless and some clients send it.
                    changedsince = r.number("mod-sequence", limit=MAX_NUMBER64)
                else:
                    vanished = True

            r.paren_list(modifier, empty=False)
        if vanished and not (uid and changedsince is not None):
            r.fail("VANISHED needs UID FETCH and CHANGEDSINCE")
        return Fetch(tag, sequence, items, uid=uid, changedsince=changedsince, vanished=vanished)

    return parse


def _store(uid: bool) -> Callable[[_Reader, str], Store]:
    def parse(r: _Reader, tag: str) -> Store:
        r.sp()
        sequence = r.sequence_set()
        r.sp()
        unchangedsince = None
        if r.peek() == LPAREN:  # RFC 7162 §3.1.3 store-modifiers

            def modifier() -> None:
                nonlocal unchangedsince
                r.keyword_in(frozenset({"UNCHANGEDSINCE"}), "STORE modifier")
                if unchangedsince is not None:
                    r.fail("duplicate STORE modifier")
                r.sp()
                unchangedsince = r.number("mod-sequence", limit=MAX_NUMBER64)

            r.paren_list(modifier, empty=False)
            r.sp()
        item = r.take(_STORE_ITEM_RE).decode("ascii").upper()
        mode = item[:1] if item[:1] in ("+", "-") else ""
        if item[len(mode):] not in ("FLAGS", "FLAGS.SILENT"):
            r.fail("expected FLAGS, +FLAGS or -FLAGS")
        silent = item.endswith(".SILENT")
        r.sp()
        if r.peek() == LPAREN:
            flags = r.flag_list()
        else:
            flag_items = [r.flag()]
            while r.peek() == SP:
                r.pos += 1
                flag_items.append(r.flag())
                if len(flag_items) > MAX_ITEMS:
                    r.fail("too many flags")
            flags = tuple(flag_items)
        return Store(
            tag, sequence, mode, silent, tuple(dict.fromkeys(flags)),
            uid=uid, unchangedsince=unchangedsince,
        )

    return parse


def _copy_or_move(kind: type, uid: bool) -> Callable[[_Reader, str], Command]:
    def parse(r: _Reader, tag: str) -> Command:
        r.sp()
        sequence = r.sequence_set()
        r.sp()
        return kind(tag, sequence, r.mailbox(), uid=uid)

    return parse


def _sort(uid: bool) -> Callable[[_Reader, str], Sort]:
    def parse(r: _Reader, tag: str) -> Sort:
        def criterion() -> SortCriterion:  # RFC 5256 §5 sort-criterion
            word = r.keyword("sort key")
            reverse = word == "REVERSE"
            if reverse:
                r.sp()
                word = r.keyword("sort key")
            if word not in _SORT_KEYS:
                r.fail("unknown sort key")
            return SortCriterion(word, reverse)

        r.sp()
        criteria = r.paren_list(criterion, empty=False)
        r.sp()
        charset = r.charset()
        r.sp()
        return Sort(tag, criteria, charset, r.search_program(), uid=uid)

    return parse


def _thread(uid: bool) -> Callable[[_Reader, str], Thread]:
    def parse(r: _Reader, tag: str) -> Thread:
        r.sp()
        algorithm = r.keyword_in(_THREAD_ALGORITHMS, "THREAD algorithm")
        r.sp()
        charset = r.charset()
        r.sp()
        return Thread(tag, algorithm, charset, r.search_program(), uid=uid)

    return parse


def _getquota(r: _Reader, tag: str) -> GetQuota:
    r.sp()
    return GetQuota(tag, r.text(r.astring(), "quota root"))


def _setquota(r: _Reader, tag: str) -> SetQuota:
    r.sp()
    root = r.text(r.astring(), "quota root")
    r.sp()
    r.open()
    limits = []
    while r.peek() != RPAREN:
        if limits:
            r.sp()
        resource = r.keyword("quota resource")
        r.sp()
        limits.append((resource, r.number("quota limit", limit=MAX_NUMBER64)))
        if len(limits) > MAX_ITEMS:
            r.fail("too many quota resources")
    r.close()
    return SetQuota(tag, root, tuple(limits))


_UID_COMMANDS: dict[str, Callable[[_Reader, str], Command]] = {
    "COPY": _copy_or_move(Copy, uid=True),
    "MOVE": _copy_or_move(Move, uid=True),
    "FETCH": _fetch(uid=True),
    "SEARCH": _search_command(uid=True),
    "STORE": _store(uid=True),
    "EXPUNGE": _uid_expunge,
    "SORT": _sort(uid=True),
    "THREAD": _thread(uid=True),
}


def _uid(r: _Reader, tag: str) -> Command:
    r.sp()
    handler = _UID_COMMANDS.get(r.keyword("UID command"))
    if handler is None:
        r.fail("unknown UID command")
    return handler(r, tag)


_COMMANDS: dict[str, Callable[[_Reader, str], Command]] = {
    # RFC 9051 §6.1: any state
    "CAPABILITY": _no_arguments(Capability),
    "NOOP": _no_arguments(Noop),
    "LOGOUT": _no_arguments(Logout),
    "ID": _id,  # RFC 2971
    # §6.2: not authenticated
    "STARTTLS": _no_arguments(StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    # §6.3: authenticated
    "ENABLE": _enable,  # RFC 5161
    "SELECT": _select(readonly=False),
    "EXAMINE": _select(readonly=True),
    "CREATE": _create,
    "DELETE": _one_mailbox(Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,  # RFC 3501 §6.3.9
    "NAMESPACE": _no_arguments(Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_arguments(Idle),
    "COMPRESS": _compress,  # RFC 4978
    "GETQUOTA": _getquota,  # RFC 9208
    "GETQUOTAROOT": _one_mailbox(GetQuotaRoot),
    "SETQUOTA": _setquota,
    # §6.4: selected
    "CHECK": _no_arguments(Check),  # RFC 3501 §6.4.1
    "CLOSE": _no_arguments(Close),
    "UNSELECT": _no_arguments(Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search_command(uid=False),
    "FETCH": _fetch(uid=False),
    "STORE": _store(uid=False),
    "COPY": _copy_or_move(Copy, uid=False),
    "MOVE": _copy_or_move(Move, uid=False),  # RFC 6851
    "SORT": _sort(uid=False),  # RFC 5256
    "THREAD": _thread(uid=False),
    "UID": _uid,
}
COMMAND_NAMES = frozenset(_COMMANDS)


def parse_command(data: bytes, *, utf8: bool = False) -> Command:
    """Parse one complete command (see the module notes on framing).

    `utf8`: mailbox names are UTF-8 (after ENABLE UTF8=ACCEPT or ENABLE IMAP4rev2)
    rather than modified UTF-7. Raises ParseError, and only ParseError.
    """
    r = _Reader(bytes(data), utf8=utf8)
    tag = r.take(_TAG_RE)
    if not tag or len(tag) > MAX_TAG_LENGTH:
        raise ParseError("missing or invalid tag")
    r.tag = tag.decode("ascii")
    if r.at_end():
        r.fail("missing command")
    r.sp()
    handler = _COMMANDS.get(r.keyword("command name"))
    if handler is None:
        r.fail("unknown command")
    command = handler(r, r.tag)
    r.end()
    return command
