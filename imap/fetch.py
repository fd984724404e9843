"""FETCH response data for one message (RFC 9051 §6.4.5, §7.5.2).

`render(items, message=..., flags=..., modseq=..., raw=...)` returns what goes between
the parentheses of `* n FETCH (...)`.

Implementation notes
- Nothing is parsed at request time. ENVELOPE and BODYSTRUCTURE are serialised from the
  JSON that `mailstore.mime.parse_message` stored at delivery; body sections are byte
  ranges of the message named by the offsets stored with it. Only HEADER.FIELDS splits
  a header (into fields), and only BINARY decodes a transfer encoding.
- The bytes IMAP shows are `prefix + blob`. Every stored offset indexes the blob, so it
  shifts by len(prefix); the top-level header starts at 0 and so holds the prefix.
- Pure: no ORM query, no I/O, no clock. Nothing about a message outlives one call; the
  one memo kept maps media-type tokens ("TEXT", "7BIT") to their wire form. The caller
  reads the bytes (only when `needs_bytes(items)`; only the header when
  `header_only(items)`) and decides about \\Seen (`sets_seen(items)`).
- Strings go out through `imap.responses`, which picks quoted or literal. Section data
  is never sent quoted when it holds 8-bit octets, whatever `utf8` says: UTF8=ACCEPT
  relaxes quoting for text (RFC 6855 §3), not for message octets.
- BODY[...] data never holds NUL (sent as 0x80, as it cannot go in a literal); BINARY
  sends it in a literal8 (RFC 3516 §4.2).
- A section that does not exist is an empty string (RFC 9051 §6.4.5 allows it); a
  transfer encoding BINARY cannot undo raises UnknownTransferEncoding (RFC 3516 §4.2,
  NO [UNKNOWN-CTE], RFC 9051 §7.1).
"""
import binascii
import functools
import hashlib
import re
from typing import Iterable, Optional, Sequence

from imap.parser import (
    FetchAttribute, FetchBinary, FetchBinarySize, FetchBody, FetchItem, FetchPreview, Section,
)
from imap.responses import astring, flag_list, literal, nstring, quoted, string, text_nstring

NIL = b"NIL"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"})
# RFC 3501 §6.4.5: RFC822 is BODY[], RFC822.HEADER is BODY.PEEK[HEADER], RFC822.TEXT is BODY[TEXT].
_RFC822_SECTIONS = {
    "RFC822": Section(),
    "RFC822.HEADER": Section(text="HEADER"),
    "RFC822.TEXT": Section(text="TEXT"),
}
EMAILID_DIGITS = 24  # hex digits of the content hash in an EMAILID (96 bits)


class UnknownTransferEncoding(Exception):
    """BINARY[...] of a part whose Content-Transfer-Encoding we cannot decode.

    The session answers `tag NO [UNKNOWN-CTE] ...` (RFC 3516 §4.2, RFC 9051 §7.1).
    `message`, `code` and `status` mirror imap.parser.ParseError, so both can map to the
    wire in one place."""

    def __init__(self, encoding: str):
        super().__init__("unknown Content-Transfer-Encoding")
        self.message = "unknown Content-Transfer-Encoding"
        self.code = "UNKNOWN-CTE"
        self.status = "NO"
        self.encoding = encoding


# --- What a FETCH needs ---------------------------------------------------------------


def needs_bytes(items: Iterable[FetchItem]) -> bool:
    """True if any item reads the message bytes (sections, RFC822*, BINARY*)."""
    return any(_reads_bytes(item) for item in items)


# The message and blob columns (imap.mailbox.STORED_COLUMNS) each attribute renders from.
_STRUCTURE = ("b.structure", "b.size", "b.header_size")  # sizes: for a blob stored without a structure
_ATTRIBUTE_COLUMNS = {
    "UID": (), "FLAGS": (), "MODSEQ": (),  # the session's view has these
    "INTERNALDATE": ("m.internaldate",),
    "RFC822.SIZE": ("m.size",),
    "ENVELOPE": ("s.envelope",),
    "BODYSTRUCTURE": ("s.bodystructure",),
    "BODY": _STRUCTURE,
    "EMAILID": ("m.prefix", "b.sha256"),
    "THREADID": ("m.thread_key",),
}


# A blob without a BlobSummary row (stored before they existed) renders ENVELOPE and
# BODYSTRUCTURE from its JSON: imap.mailbox.stored_messages() reads these columns then.
# {summary column: (the StoredBlob attribute it fills, the columns to read without it)}
SUMMARY_FALLBACK = {
    "s.envelope": ("imap_envelope", ("b.envelope",)),
    "s.bodystructure": ("imap_bodystructure", _STRUCTURE),
}
_WHOLE = ("m.prefix", "b.name", "b.size")  # what reading the whole message takes


def columns_needed(items: Iterable[FetchItem]) -> Optional[frozenset]:
    """The stored columns the items render from; None (all of them) once an item reads
    a part of the message, which takes its structure."""
    needed = set()
    for item in items:
        if isinstance(item, FetchPreview):
            needed.add("b.preview")
        elif isinstance(item, FetchAttribute) and item.name in _ATTRIBUTE_COLUMNS:
            needed.update(_ATTRIBUTE_COLUMNS[item.name])
        elif _is_whole(item):
            needed.update(_WHOLE)
        else:
            return None
    return frozenset(needed)


def _is_whole(item: FetchItem) -> bool:
    """Whether the item is the whole message: BODY[] (BODY.PEEK[]), RFC822, BINARY[]."""
    if isinstance(item, FetchBody):
        return not item.section.part and item.section.text is None
    if isinstance(item, FetchBinary):
        return not item.part
    return isinstance(item, FetchAttribute) and item.name == "RFC822"


def header_only(items: Iterable[FetchItem]) -> bool:
    """True if the only bytes the items read are the top-level header: the caller may
    then pass `raw = prefix + blob[:blob.header_size]`. The common client request
    `BODY.PEEK[HEADER.FIELDS (...)]` over a whole mailbox needs no more."""
    return all(not _reads_bytes(item) or _is_top_header(_section_of(item)) for item in items)


def sets_seen(items: Iterable[FetchItem]) -> bool:
    """True if the FETCH sets \\Seen (RFC 9051 §6.4.5, RFC 3516 §4.2): BODY[...] and
    BINARY[...] without .PEEK, RFC822 and RFC822.TEXT (RFC 3501 §6.4.5)."""
    for item in items:
        if isinstance(item, (FetchBody, FetchBinary)) and not item.peek:
            return True
        if isinstance(item, FetchAttribute) and item.name in ("RFC822", "RFC822.TEXT"):
            return True
    return False


def _reads_bytes(item: FetchItem) -> bool:
    if isinstance(item, (FetchBody, FetchBinary, FetchBinarySize)):
        return True
    return isinstance(item, FetchAttribute) and item.name in _RFC822_SECTIONS


def _section_of(item: FetchItem) -> Optional[Section]:
    if isinstance(item, FetchBody):
        return item.section
    if isinstance(item, FetchAttribute):
        return _RFC822_SECTIONS.get(item.name)
    return None


def _is_top_header(section: Optional[Section]) -> bool:
    return (
        section is not None
        and not section.part
        and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
    )


# --- Rendering ------------------------------------------------------------------------


def render(
    items: Sequence[FetchItem],
    *,
    message,
    flags: Sequence[str],
    modseq: int,
    raw: Optional[bytes] = None,
    utf8: bool = False,
    uid: bool = True,
) -> bytes:
    """The msg-att of `* n FETCH (...)` for `message` (an imap.mailbox.StoredMessage, or a
    Message with its blob loaded, whose ENVELOPE and BODYSTRUCTURE then render from its JSON).

    `flags` and `modseq` are the session's view of the message; `raw` is its full bytes
    (prefix + blob) when needs_bytes(items), else None; `utf8` is true once the client
    enabled UTF8=ACCEPT or IMAP4rev2; `uid` is true for UID FETCH, whose replies always
    carry UID (RFC 9051 §6.4.8): it comes first when the client did not ask for it.
    Items come out in the order asked, each once. Raises UnknownTransferEncoding.
    """
    return render_planned(plan(items, uid=uid), message=message, flags=flags, modseq=modseq, raw=raw, utf8=utf8)


def plan(items: Sequence[FetchItem], *, uid: bool = True) -> tuple:
    """render()'s work for `items` that is the same for every message, done once for a
    whole FETCH: each item's label and how its value is rendered."""
    steps = []
    seen = set()
    if uid and _UID not in items:
        steps.append((b"UID ", _Renderer.uid))
    for item in items:
        label = _label(item)
        if label not in seen:
            seen.add(label)
            steps.append((label + b" ", _value_of(item)))
    return tuple(steps)


def render_planned(steps: tuple, *, message, flags, modseq, raw=None, utf8=False) -> bytes:
    """render() with its plan() made beforehand."""
    renderer = _Renderer(message, flags, modseq, raw, utf8)
    return b" ".join([label + value(renderer) for label, value in steps])


# What the session's view (UID, FLAGS, MODSEQ) and the stored summaries (ENVELOPE,
# BODYSTRUCTURE: mailstore.models.BlobSummary) answer alone: what clients ask of lists.
_SUMMARY_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ", "ENVELOPE", "BODYSTRUCTURE"})


def summary_plan(items: Sequence[FetchItem], *, uid: bool = True) -> Optional[tuple]:
    """plan() for render_summaries(): the items' names in render()'s order, when every
    item is one the summaries and the session's view answer; else None."""
    if not all(isinstance(item, FetchAttribute) and item.name in _SUMMARY_ITEMS for item in items):
        return None
    first = ("UID",) if uid and _UID not in items else ()
    return tuple(dict.fromkeys(first + tuple(item.name for item in items)))


def render_summaries(names: tuple, rows, views, *, utf8: bool) -> Optional[list]:
    """render()'s `* n FETCH (...)` lines for summary_plan() `names`, made straight from
    rows of (uid, stored ENVELOPE, stored BODYSTRUCTURE) and `views` {uid: (seq, flags,
    modseq)}: a copy of stored bytes a message, no render() machinery. None when a row
    needs render() after all: its blob has no summary, or a UTF-8 session is to get 8-bit
    text differently (see _Renderer._summary)."""
    out = []
    flag_lists = {}  # flag tuples are interned: each distinct one rendered once
    for uid, stored_envelope, stored_structure in rows:
        seq, flags, modseq = views[uid]
        parts = []
        for name in names:
            if name == "UID":
                parts.append(b"UID %d" % uid)
            elif name == "FLAGS":
                text = flag_lists.get(id(flags))
                if text is None:
                    text = flag_lists[id(flags)] = b"FLAGS " + flag_list(flags)
                parts.append(text)
            elif name == "MODSEQ":
                parts.append(b"MODSEQ (%d)" % modseq)
            else:
                stored = stored_envelope if name == "ENVELOPE" else stored_structure
                if stored is None:
                    return None
                stored = bytes(stored)  # PostgreSQL's bytea comes as a memoryview
                if utf8 and not stored.isascii():
                    return None
                parts.append(b"ENVELOPE " + stored if name == "ENVELOPE" else b"BODYSTRUCTURE " + stored)
        out.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts)))
    return out


def _value_of(item: FetchItem):
    """How the item's value is rendered: a function of a _Renderer."""
    if isinstance(item, FetchAttribute):
        return _ATTRIBUTES[item.name]
    if isinstance(item, FetchBody):
        if _is_whole(item) and item.partial is None:
            return _Renderer.whole  # what clients download mail with: the shortest way
        return lambda renderer: renderer.section(item.section, item.partial)
    if isinstance(item, FetchBinary):
        return lambda renderer: renderer.binary(item.part, item.partial)
    if isinstance(item, FetchBinarySize):
        return lambda renderer: b"%d" % len(renderer.decoded(item.part))
    if isinstance(item, FetchPreview):
        # RFC 8970 §3.1: NIL when there is no preview; we always have one computed.
        return lambda renderer: nstring(renderer.blob.preview or None, utf8=renderer.utf8)
    raise TypeError(f"not a fetch item: {item!r}")


_UID = FetchAttribute("UID")


def _label(item: FetchItem) -> bytes:
    """The item's name in the response: BODY[1.HEADER]<0>, BINARY.SIZE[2], FLAGS..."""
    if isinstance(item, FetchAttribute):
        return item.name.encode("ascii")
    if isinstance(item, FetchBody):
        return b"BODY" + _section_spec(item.section) + _origin(item.partial)
    if isinstance(item, FetchBinary):
        return b"BINARY[" + _part_spec(item.part) + b"]" + _origin(item.partial)
    if isinstance(item, FetchBinarySize):
        return b"BINARY.SIZE[" + _part_spec(item.part) + b"]"
    if isinstance(item, FetchPreview):
        return b"PREVIEW"
    raise TypeError(f"not a fetch item: {item!r}")


def _part_spec(part: tuple[int, ...]) -> bytes:
    return b".".join(b"%d" % number for number in part)


def _section_spec(section: Section) -> bytes:
    spec = _part_spec(section.part)
    if section.text:
        spec += (b"." if spec else b"") + section.text.encode("ascii")
    if section.fields:
        # Echoed as the client sent them (RFC 9051 §7.5.2: the section spec of the request).
        spec += b" (" + b" ".join(astring(name) for name in section.fields) + b")"
    return b"[" + spec + b"]"


def _origin(partial) -> bytes:
    # RFC 9051 §7.5.2: the response names only the origin octet: BODY[]<0>.
    return b"" if partial is None else b"<%d>" % partial.start


class _Renderer:
    """One message's values; lives for one render_planned() call."""

    def __init__(self, message, flags, modseq, raw, utf8):
        self.message = message
        self.blob = message.blob
        self.flags = flags
        self.modseq = modseq
        self.raw = raw
        self.utf8 = utf8
        self.shift = len(message.prefix) if message.prefix is not None else 0
        self._structure = None

    @property
    def structure(self):
        if self._structure is None:
            self._structure = self.blob.structure or _fallback_structure(self.blob)
        return self._structure

    # Attributes

    def uid(self) -> bytes:
        return b"%d" % self.message.uid

    def flags_value(self) -> bytes:
        return flag_list(self.flags)

    def internaldate(self) -> bytes:
        return quoted(format_internaldate(self.message.internaldate))

    def rfc822_size(self) -> bytes:
        return b"%d" % self.message.size

    def modseq_value(self) -> bytes:
        return b"(%d)" % self.modseq  # RFC 7162 §3.1.4.1

    def envelope(self) -> bytes:
        stored = self._summary(getattr(self.blob, "imap_envelope", None))  # a Blob model has none
        return stored if stored is not None else envelope(self.blob.envelope, utf8=self.utf8)

    def bodystructure(self) -> bytes:
        stored = self._summary(getattr(self.blob, "imap_bodystructure", None))
        return stored if stored is not None else body_structure(self.structure, extensible=True, utf8=self.utf8)

    def _summary(self, stored) -> Optional[bytes]:
        """What render_summary() stored, where it is what this session is to get: it was
        rendered without UTF-8, which is the same bytes with UTF-8 when all ASCII (only
        8-bit text goes out differently, quoted instead of in a literal)."""
        if stored is None:
            return None
        stored = bytes(stored)  # PostgreSQL's bytea comes as a memoryview
        return stored if not self.utf8 or stored.isascii() else None

    def body(self) -> bytes:
        return body_structure(self.structure, extensible=False, utf8=self.utf8)

    def emailid(self) -> bytes:
        return b"(" + email_id(self.message).encode("ascii") + b")"  # RFC 8474 §5.1

    def threadid(self) -> bytes:
        return b"(" + thread_id(self.message).encode("ascii") + b")"  # RFC 8474 §5.2

    def rfc822(self, name: str) -> bytes:
        return self.section(_RFC822_SECTIONS[name], None)

    # Sections

    def section(self, section: Section, partial) -> bytes:
        return _section_string(_cut(self.section_bytes(section), partial))

    def whole(self) -> bytes:
        """section() of the whole message, without a partial."""
        return _section_string(self._raw())

    def section_bytes(self, section: Section) -> bytes:
        raw = self._raw()
        span = self.section_span(section)
        if span is None:
            return b""
        data = raw[span[0] : span[1]]
        if section.text == "HEADER.FIELDS":
            return select_fields(data, section.fields, keep=True)
        if section.text == "HEADER.FIELDS.NOT":
            return select_fields(data, section.fields, keep=False)
        return bytes(data)

    def section_span(self, section: Section) -> Optional[tuple[int, int]]:
        """(start, end) of the section in raw, or None if it does not exist."""
        if not section.part and section.text is None:
            return 0, len(self._raw())
        top = self.structure
        node = find_part(top, section.part)
        if node is None:
            return None
        if section.text == "MIME":
            return self._offset(node, "header_start", top), self._offset(node, "body_start", top)
        if section.text in _HEADER_TEXTS:
            if section.part:
                if "message" not in node:  # only a message/rfc822 part has a header and text
                    return None
                node = node["message"]["structure"]
            if section.text == "TEXT":
                return self._offset(node, "body_start", top), self._offset(node, "end", top)
            return self._offset(node, "header_start", top), self._offset(node, "body_start", top)
        return self._offset(node, "body_start", top), self._offset(node, "end", top)

    def _offset(self, node, key, top) -> int:
        if key == "header_start" and node is top:
            return 0  # the top-level header includes the prefix
        return node[key] + self.shift

    def _raw(self) -> bytes:
        if self.raw is None:
            raise ValueError("render() needs raw bytes for these items (see needs_bytes)")
        return self.raw

    # BINARY (RFC 3516)

    def binary(self, part, partial) -> bytes:
        data = _cut(self.decoded(part), partial)
        if b"\0" in data:
            return literal(data, binary=True)  # RFC 3516 §4.2: literal8 only when needed
        return string(data)

    def decoded(self, part) -> bytes:
        """The part's content with its transfer encoding undone; b"" if it does not exist."""
        raw = self._raw()
        if not part:
            return bytes(raw)  # the whole message: it has no transfer encoding of its own
        top = self.structure
        node = find_part(top, part)
        if node is None:
            return b""
        data = raw[self._offset(node, "body_start", top) : self._offset(node, "end", top)]
        return decode_transfer(bytes(data), node["encoding"])


_ATTRIBUTES = {
    "UID": _Renderer.uid,
    "FLAGS": _Renderer.flags_value,
    "INTERNALDATE": _Renderer.internaldate,
    "RFC822.SIZE": _Renderer.rfc822_size,
    "MODSEQ": _Renderer.modseq_value,
    "ENVELOPE": _Renderer.envelope,
    "BODYSTRUCTURE": _Renderer.bodystructure,
    "BODY": _Renderer.body,
    "EMAILID": _Renderer.emailid,
    "THREADID": _Renderer.threadid,
    **{name: (lambda r, name=name: r.rfc822(name)) for name in _RFC822_SECTIONS},
}


def _section_string(data: bytes) -> bytes:
    if b"\0" in data:
        # A literal cannot carry NUL (RFC 9051 §4.3, CHAR8); only BINARY may send it,
        # as literal8. Replacing it keeps every size and offset true.
        data = data.replace(b"\0", b"\x80")
    return string(data)


def _cut(data: bytes, partial) -> bytes:
    if partial is None:
        return data
    return data[partial.start : partial.start + partial.length]  # past the end: b""


def _fallback_structure(blob) -> dict:
    """A row parsed before structures were stored: one opaque body after the header."""
    return {
        "type": "application", "subtype": "octet-stream", "params": [], "id": None,
        "description": None, "encoding": "7bit", "size": blob.size - blob.header_size,
        "lines": None, "md5": None, "disposition": None, "language": None,
        "location": None, "header_start": 0, "body_start": blob.header_size, "end": blob.size,
    }


# --- Part numbers (RFC 9051 §6.4.5) -------------------------------------------------------


def find_part(top: dict, part: tuple[int, ...]) -> Optional[dict]:
    """The structure node that part number `part` (1.2.3 → (1, 2, 3)) names, or None.

    The parts of a message are those of its body when it is multipart; otherwise its
    body is part 1. Below a message/rfc822 part, numbers continue into the embedded
    message the same way. () is the top message itself.
    """
    node, is_message = top, True  # is_message: node is a message whose parts we number
    for number in part:
        if not is_message and "message" in node:
            node, is_message = node["message"]["structure"], True
        parts = node.get("parts") if node["type"] == "multipart" else None
        if parts is not None:
            if not 1 <= number <= len(parts):
                return None
            node, is_message = parts[number - 1], False
        elif is_message and number == 1:
            is_message = False  # a non-multipart message's body is its part 1
        else:
            return None
    return node


# --- HEADER.FIELDS (RFC 9051 §6.4.5) ------------------------------------------------------

_FIELD_BREAK = re.compile(rb"\n(?![ \t])")


def select_fields(header: bytes, names: Iterable[str], *, keep: bool) -> bytes:
    """The fields of `header` named in `names` (keep=True) or not named (keep=False), in
    the header's order, folded lines and line ends as stored, then the blank line that
    ends the header (absent when the header has none: a message without a body)."""
    wanted = {name.encode("utf-8", "surrogateescape").lower() for name in names}
    header = bytes(header)
    if header.endswith(b"\n\r\n") or header == b"\r\n":
        fields, blank = header[:-2], b"\r\n"
    elif header.endswith(b"\n\n") or header == b"\n":
        fields, blank = header[:-1], b"\n"
    else:
        fields, blank = header, b""
    out = []
    start = 0
    for match in _FIELD_BREAK.finditer(fields):
        _keep_field(out, fields[start : match.end()], wanted, keep)
        start = match.end()
    if start < len(fields):
        _keep_field(out, fields[start:], wanted, keep)
    out.append(blank)
    return b"".join(out)


def _keep_field(out: list, field: bytes, wanted: set, keep: bool) -> None:
    name, colon, _ = field.partition(b":")
    named = bool(colon) and name.rstrip(b" \t").lower() in wanted
    if named == keep:
        out.append(field)


# --- Transfer encodings (RFC 2045 §6, RFC 3516) ------------------------------------------

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def decode_transfer(data: bytes, encoding: str) -> bytes:
    """`data` with Content-Transfer-Encoding `encoding` undone; raises
    UnknownTransferEncoding for an encoding RFC 2045 does not define."""
    if encoding in _IDENTITY_ENCODINGS:
        return data
    if encoding == "base64":
        # Lenient, as mail readers are: stray characters skipped, padding repaired.
        data = _NOT_BASE64.sub(b"", data)
        data = data[: len(data) - 1] if len(data) % 4 == 1 else data
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    raise UnknownTransferEncoding(encoding)


# --- ENVELOPE and BODYSTRUCTURE (RFC 9051 §7.5.2) ----------------------------------------


def render_summary(envelope_data: Optional[list], structure: dict) -> tuple[bytes, bytes]:
    """ENVELOPE and BODYSTRUCTURE of a message as sent to a client without UTF-8, from what
    mailstore.mime.parse_message found: stored with the blob, which never changes, so a FETCH
    of them is a copy (mailstore.models.BlobSummary)."""
    return envelope(envelope_data), body_structure(structure, extensible=True)


def envelope(stored: Optional[list], *, utf8: bool = False) -> bytes:
    """ENVELOPE from Blob.envelope: date, subject, from, sender, reply-to, to, cc, bcc,
    in-reply-to, message-id; strings raw as in the header, address lists NIL when empty."""
    if not stored:
        return b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = stored
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        text_nstring(date, utf8=utf8),
        text_nstring(subject, utf8=utf8),
        _addresses(from_, utf8),
        _addresses(sender, utf8),
        _addresses(reply_to, utf8),
        _addresses(to, utf8),
        _addresses(cc, utf8),
        _addresses(bcc, utf8),
        text_nstring(in_reply_to, utf8=utf8),
        text_nstring(message_id, utf8=utf8),
    )


def _addresses(addresses: Optional[list], utf8: bool) -> bytes:
    if not addresses:
        return NIL
    # RFC 9051 §9: "(" 1*address ")", each address (name adl mailbox host), no spaces between.
    return b"(" + b"".join(
        b"(%s %s %s %s)" % tuple(text_nstring(value, utf8=utf8) for value in address)
        for address in addresses
    ) + b")"


_EMPTY_TEXT_PART = {
    "type": "text", "subtype": "plain", "params": [], "id": None, "description": None,
    "encoding": "7bit", "size": 0, "lines": 0, "md5": None, "disposition": None,
    "language": None, "location": None,
}


def body_structure(node: dict, *, extensible: bool, utf8: bool = False) -> bytes:
    """BODYSTRUCTURE (extensible=True) or BODY (False) of a stored structure node."""
    if node["type"] == "multipart" and "parts" in node:
        # RFC 9051 §9 body-type-mpart needs one part at least; a multipart whose
        # delimiters were never found shows one empty text part, as it reads.
        parts = node["parts"] or [_EMPTY_TEXT_PART]
        out = [
            b"(",
            b"".join(body_structure(part, extensible=extensible, utf8=utf8) for part in parts),
            b" ",
            _token(node["subtype"]),
        ]
        if extensible:
            out += [b" ", _params(node["params"], utf8), b" ", _extension(node, utf8)]
        out.append(b")")
        return b"".join(out)
    out = [
        b"(",
        _token(node["type"]),
        b" ",
        _token(node["subtype"]),
        b" ",
        _params(_with_default_charset(node), utf8),
        b" ",
        text_nstring(node["id"], utf8=utf8),
        b" ",
        text_nstring(node["description"], utf8=utf8),
        b" ",
        _token(node["encoding"]),
        b" %d" % node["size"],
    ]
    if "message" in node:  # message/rfc822 or message/global, RFC 9051 §7.5.2
        inner = node["message"]
        out += [
            b" ",
            envelope(inner["envelope"], utf8=utf8),
            b" ",
            body_structure(inner["structure"], extensible=extensible, utf8=utf8),
            b" %d" % (node["lines"] or 0),
        ]
    elif node["type"] == "text":
        out.append(b" %d" % (node["lines"] or 0))
    if extensible:
        out += [b" ", text_nstring(node["md5"], utf8=utf8), b" ", _extension(node, utf8)]
    out.append(b")")
    return b"".join(out)


@functools.lru_cache(maxsize=1024)
def _token(value: str) -> bytes:
    """A media type, subtype, parameter name or encoding: case-insensitive, sent upper-case
    as in RFC 9051's examples. Few distinct values recur in every message, so the
    serialised form is memoised (it depends on the value alone and cannot go stale)."""
    return text_nstring(value.upper())


def _with_default_charset(node: dict) -> list:
    params = node["params"]
    # RFC 2046 §4.1.2: text without a charset parameter is US-ASCII.
    if node["type"] == "text" and not any(name == "charset" for name, _ in params):
        return [["charset", "us-ascii"], *params]
    return params


def _params(params: list, utf8: bool) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(
        _token(name) + b" " + text_nstring(value, utf8=utf8) for name, value in params
    ) + b")"


def _extension(node: dict, utf8: bool) -> bytes:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc, shared by both kinds of body."""
    disposition = node["disposition"]
    if disposition:
        dsp = b"(" + _token(disposition[0]) + b" " + _params(disposition[1], utf8) + b")"
    else:
        dsp = NIL
    language = node["language"]
    if not language:
        lang = NIL
    elif len(language) == 1:
        lang = text_nstring(language[0], utf8=utf8)
    else:
        lang = b"(" + b" ".join(text_nstring(tag, utf8=utf8) for tag in language) + b")"
    return b"%s %s %s" % (dsp, lang, text_nstring(node["location"], utf8=utf8))


# --- Simple attributes ------------------------------------------------------------------


def format_internaldate(value) -> str:
    """RFC 9051 §9 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz", month names in English
    whatever the locale."""
    offset = value.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return "%02d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        value.day, _MONTHS[value.month - 1], value.year,
        value.hour, value.minute, value.second, sign, minutes // 60, minutes % 60,
    )


def thread_id(message) -> str:
    """RFC 8474 §5.2 THREADID: the conversation the mail store files the message under
    (Message.thread_key, from the root its References, In-Reply-To or Message-ID
    names), so every message of a thread has it in every mailbox, and it never changes."""
    return "T" + format(message.thread_key & 0xFFFF_FFFF_FFFF_FFFF, "016x")


def thread_key_of(thread_id: str):
    """The Message.thread_key a THREADID names, or None if no message can have it."""
    if not re.fullmatch(r"T[0-9a-f]{16}", thread_id):
        return None
    value = int(thread_id[1:], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def email_id(message) -> str:
    """RFC 8474 §5.1 EMAILID: the same for the same bytes, so it survives COPY and MOVE
    (which keep prefix and blob) and needs no column. The blob's SHA-256 names the shared
    bytes; a prefix (per-recipient trace fields) is mixed in, since it is content too."""
    digest = message.blob.sha256
    prefix = bytes(message.prefix or b"")
    if prefix:
        digest = hashlib.sha256(prefix + digest.encode("ascii")).hexdigest()
    return "M" + digest[:EMAILID_DIGITS]
