"""Parse a message once, at delivery, into what IMAP and webmail read later.

`parse_message(raw)` walks the MIME tree of the raw bytes and records, for every
part, where its header and body lie in `raw`. An IMAP server answers ENVELOPE,
BODYSTRUCTURE and BODY[section] (RFC 9051 §7.5.2) from the stored result and byte
ranges of the stored blob; a webmail sorts, searches and previews from the decoded
summary fields. Nothing is parsed twice.

Implementation notes:
- Never raises, whatever the bytes: broken or hostile input gives a best-effort
  tree (the tests fuzz this).
- Every offset indexes the bytes given, whether lines end in CRLF or bare LF, and
  0 <= header_start <= body_start <= end <= len(raw) holds for every node.
- The MIME walk is our own because the stdlib `email` parser reports no offsets;
  only the date parser comes from `email`.
- Linear in the input: each nesting level scans its byte range a fixed number of
  times, in C (bytes.find, re). Nesting stops at MAX_DEPTH and the tree at
  MAX_PARTS; a part past either limit is kept whole, as application/octet-stream.
  Work done in Python per header field or address has a budget for the whole tree
  (MAX_HEADER_BYTES, MAX_ADDRESS_CHARS), text extraction reads a bounded prefix.
- Header bytes are read as UTF-8 (RFC 6532) with undecodable bytes and NUL replaced
  by U+FFFD, so every string is valid JSON and storable in any database.
- Envelope strings are raw (encoded words stay encoded; RFC 9051 §7.5.2 leaves
  decoding to the client). The summary fields (subject, from_, ...) are decoded.
"""
import binascii
import codecs
import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_to_bytes

MAX_DEPTH = 50  # nested multiparts and message/rfc822 parts
MAX_PARTS = 10_000  # nodes in one message's tree, nested messages included
MAX_LINE = 998  # RFC 5322 §2.1.1
# Header text tokenized in Python, for the whole tree. Far above real mail (Postfix
# truncates a header at 100 KiB by default), low enough to bound hostile input.
MAX_HEADER_BYTES = 2 << 20
MAX_ADDRESS_CHARS = 256 << 10
MAX_ADDRESS_FIELD_CHARS = 64 << 10  # about 1,500 recipients in one To or Cc
PREVIEW_CHARS = 200  # RFC 8970 suggests about 200 characters
SEARCH_TEXT_CHARS = 1 << 20
HEADER_TEXT_CHARS = 256 << 10  # searchable header text (IMAP SEARCH HEADER/TEXT)
# Raw bytes read per character of text wanted: covers quoted-printable (3 bytes
# per octet) of 4-octet UTF-8 with room to spare, so capping never cuts real text.
SOURCE_BYTES_PER_CHAR = 16
HTML_CHARS_PER_TEXT_CHAR = 4  # markup read per character of text wanted

_TEXT_PLAIN = ("text", "plain", [["charset", "us-ascii"]])  # RFC 2045 §5.2
_MESSAGE_RFC822 = ("message", "rfc822", [])  # RFC 2046 §5.1.5, inside multipart/digest
_IDENTITY_ENCODINGS = ("7bit", "8bit", "binary")


@dataclass
class ParsedMessage:
    header_size: int
    envelope: list
    structure: dict
    date: datetime | None
    subject: str
    from_: str
    to: str
    cc: str
    bcc: str
    from_address: str
    message_id: str
    in_reply_to: str
    references: list[str]
    has_attachments: bool
    preview: str
    search_text: str
    header_text: str = ""  # the header's fields decoded, one per line, for searching


def parse_message(raw: bytes) -> ParsedMessage:
    top = _Walker(raw).message(0, len(raw), depth=0)
    fields, addresses, structure = top.fields, top.addresses, top.structure
    preview, search_text = _texts(raw, structure)
    return ParsedMessage(
        header_size=structure["body_start"],
        envelope=top.envelope,
        structure=structure,
        date=_parse_date(fields.get("date")),
        subject=decode_words(fields.get("subject", "")),
        from_=_display(addresses["from"]),
        to=_display(addresses["to"]),
        cc=_display(addresses["cc"]),
        bcc=_display(addresses["bcc"]),
        from_address=_first_address(addresses["from"]),
        message_id="".join(fields.get("message-id", "").split()),
        in_reply_to=" ".join(_msg_ids(fields.get("in-reply-to", ""))),
        references=_msg_ids(fields.get("references", "")),
        has_attachments=any(_is_attachment(node) for node in _walk(structure)),
        preview=preview,
        search_text=search_text,
        header_text=searchable_header(raw[: structure["body_start"]]),
    )


# --- The MIME walk ---------------------------------------------------------------------


@dataclass
class _Message:
    fields: dict  # field name -> unfolded value of its first occurrence
    addresses: dict  # address field name -> parsed items ([] when absent)
    envelope: list
    structure: dict


_ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")


class _Walker:
    """Builds the structure tree of one raw message within the limits above.

    Splitting and scanning run in C and cost little per byte, but header fields
    and addresses are tokenized in Python, so each has a budget for the whole
    tree; what lies past it is read as absent. The outer header is read first,
    so a hostile attachment cannot starve it.
    """

    def __init__(self, raw):
        self.raw = raw
        self.parts = 0
        self.header_bytes = MAX_HEADER_BYTES
        self.address_chars = MAX_ADDRESS_CHARS
        self.delimiters = {}  # boundary -> compiled pattern; mailers reuse boundaries

    def message(self, start, end, depth):
        """The RFC 5322 message in raw[start:end]."""
        body_start = _header_end(self.raw, start, end)
        fields = self._fields(start, body_start)
        addresses = {name: self._addresses(fields.get(name)) for name in _ADDRESS_FIELDS}
        envelope = _envelope(fields, addresses)
        structure = self._entity(start, body_start, end, fields, depth, _TEXT_PLAIN)
        return _Message(fields, addresses, envelope, structure)

    def _fields(self, start, end):
        end = min(end, start + self.header_bytes)
        self.header_bytes -= end - start
        return _header_fields(self.raw, start, end)

    def _addresses(self, value):
        if value is None:
            return []
        value = value[: min(MAX_ADDRESS_FIELD_CHARS, self.address_chars)]
        self.address_chars -= len(value)
        return _parse_addresses(value)

    def _entity(self, header_start, body_start, end, fields, depth, default_type):
        self.parts += 1
        node = _node(fields, default_type, header_start, body_start, end)
        if node["type"] == "multipart":
            self._expand_multipart(node, depth)
        elif node["type"] == "message" and node["subtype"] in ("rfc822", "global"):
            self._expand_message(node, depth)
        # RFC 9051 §7.5.2: text and message/rfc822 (or global) bodies have a line count.
        if "message" in node:
            node["lines"] = _message_lines(self.raw, node["message"]["structure"])
        elif node["type"] == "text":
            node["lines"] = _line_count(self.raw, body_start, end)
        return node

    def _cannot_descend(self, depth):
        return depth >= MAX_DEPTH or self.parts >= MAX_PARTS

    def _expand_multipart(self, node, depth):
        boundary = _param(node["params"], "boundary").rstrip()
        if not boundary:
            # RFC 2046 §5.1.1 requires a boundary; without one the body cannot be
            # split, so it is shown as the text it is.
            node["type"], node["subtype"] = "text", "plain"
            return
        if self._cannot_descend(depth):
            _make_opaque(node)
            return
        node["parts"] = parts = []
        boundary = boundary.encode()
        if len(boundary) > MAX_LINE:
            return  # could never fit on a delimiter line
        if boundary not in self.delimiters:
            self.delimiters[boundary] = _delimiter_pattern(boundary)
        delimiter = self.delimiters[boundary]
        default = _MESSAGE_RFC822 if node["subtype"] == "digest" else _TEXT_PLAIN
        for start, end in _body_parts(self.raw, delimiter, node["body_start"], node["end"]):
            if self.parts >= MAX_PARTS:
                break
            body_start = _header_end(self.raw, start, end)
            fields = self._fields(start, body_start)
            parts.append(self._entity(start, body_start, end, fields, depth + 1, default))

    def _expand_message(self, node, depth):
        # A base64 or quoted-printable encapsulated message has no header at any
        # offset of raw: show it as an opaque attachment.
        if node["encoding"] not in _IDENTITY_ENCODINGS or self._cannot_descend(depth):
            _make_opaque(node)
            return
        inner = self.message(node["body_start"], node["end"], depth + 1)
        node["message"] = {
            "envelope": inner.envelope,
            "structure": inner.structure,
            "header_size": inner.structure["body_start"] - inner.structure["header_start"],
        }


def _make_opaque(node):
    node["type"], node["subtype"] = "application", "octet-stream"


def _header_end(raw, start, end):
    """Offset just past the blank line ending the header at raw[start:end], or end."""
    if raw.startswith(b"\r\n", start, end):
        return start + 2
    if raw.startswith(b"\n", start, end):
        return start + 1
    crlf = raw.find(b"\n\r\n", start, end)
    # Search for the bare-LF form only up to the CRLF one, so a CRLF message with no
    # "\n\n" anywhere does not cost a second scan of its whole body.
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf + 2)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return end


_FIELD_SPLIT = re.compile(rb"\r?\n(?![ \t])")
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §2.2: printable, no colon


def _header_fields(raw, start, end):
    """Field name (lower-case) -> unfolded value of its first occurrence."""
    fields = {}
    block = raw[start:end].rstrip(b"\r\n")
    if not block:
        return fields
    for chunk in _FIELD_SPLIT.split(block):
        name, colon, value = chunk.partition(b":")
        name = name.rstrip(b" \t")  # RFC 5322 §4.5 allows WSP before the colon
        if not colon or not _FIELD_NAME.fullmatch(name):
            continue
        key = name.decode("ascii").lower()
        if key not in fields:
            # Every line break left inside a chunk starts a folded line
            # (RFC 5322 §2.2.3): drop the break, keep the whitespace.
            value = value.replace(b"\r\n", b"").replace(b"\n", b"")
            fields[key] = _header_text(value.strip())
    return fields


def _header_text(value):
    return _clean(value.decode("utf-8", "replace"))


def searchable_header(header):
    """The fields of a raw header block as "Name: value" lines, unfolded, encoded words
    decoded, in their order: what IMAP SEARCH HEADER, FROM... and TEXT look in."""
    block = header[: HEADER_TEXT_CHARS * 2].rstrip(b"\r\n")
    lines = []
    for chunk in _FIELD_SPLIT.split(block) if block else ():
        name, colon, value = chunk.partition(b":")
        name = name.rstrip(b" \t")
        if colon and _FIELD_NAME.fullmatch(name):
            value = decode_words(_header_text(value.replace(b"\r", b"").replace(b"\n", b"").strip()))
            lines.append(f"{name.decode('ascii')}: {' '.join(value.splitlines())}")
    return "\n".join(lines)[:HEADER_TEXT_CHARS]


def _body_parts(raw, delimiter, start, end):
    """(start, end) of each body part of the multipart body raw[start:end].

    RFC 2046 §5.1.1: a delimiter is "--boundary" at the start of a line, then
    optional transport padding; "--boundary--" closes. The line break before a
    delimiter belongs to it, not to the part. Preamble and epilogue are skipped;
    a missing close delimiter lets the last part run to the end.
    """
    # The pattern starts at the line break before "--" so the regex engine can
    # search for its literal prefix; a body begins just after a line break, so
    # starting one byte early also finds a delimiter on its first line.
    search_from = start - 1 if start > 0 and raw[start - 1] == 0x0A else start
    part_start = None
    for match in delimiter.finditer(raw, search_from, end):
        line_start = match.start() + 1
        if part_start is not None:
            yield part_start, max(part_start, _before_line_break(raw, line_start))
        if match.group(1):
            return
        part_start = min(match.end() + 1, end)  # past the delimiter line's "\n"
    if part_start is not None:
        yield part_start, end


def _delimiter_pattern(boundary):
    return re.compile(rb"\n--" + re.escape(boundary) + rb"(--)?[ \t]*\r?(?=\n|\Z)")


def _before_line_break(raw, pos):
    if pos >= 2 and raw[pos - 2 : pos] == b"\r\n":
        return pos - 2
    if pos >= 1 and raw[pos - 1] == 0x0A:
        return pos - 1
    return pos


def _message_lines(raw, inner):
    """Lines of an encapsulated message, reusing its body's count when it has one,
    so a chain of nested messages is not recounted at every level."""
    header_start, body_start = inner["header_start"], inner["body_start"]
    if inner["lines"] is None or (body_start > header_start and raw[body_start - 1] != 0x0A):
        return _line_count(raw, header_start, inner["end"])
    return raw.count(b"\n", header_start, body_start) + inner["lines"]


def _line_count(raw, start, end):
    """Lines in raw[start:end], counting a last line that lacks its line break."""
    lines = raw.count(b"\n", start, end)
    if end > start and raw[end - 1] != 0x0A:
        lines += 1
    return lines


# --- Structure nodes -------------------------------------------------------------------


def _node(fields, default_type, header_start, body_start, end):
    content_type = _parse_content_type(fields.get("content-type"))
    type_, subtype, params = content_type or default_type
    return {
        "type": type_,
        "subtype": subtype,
        "params": [list(pair) for pair in params],
        "id": fields.get("content-id"),
        "description": fields.get("content-description"),
        "encoding": _parse_encoding(fields.get("content-transfer-encoding")),
        "size": end - body_start,
        "lines": None,
        "md5": fields.get("content-md5"),
        "disposition": _parse_disposition(fields.get("content-disposition")),
        "language": _parse_language(fields.get("content-language")),
        "location": fields.get("content-location"),
        "header_start": header_start,
        "body_start": body_start,
        "end": end,
    }


_TOKEN = r'[^\s()<>@,;:\\"/\[\]?=]+'  # RFC 2045 §5.1 token
_MEDIA_TYPE = re.compile(rf"\s*({_TOKEN})\s*/\s*({_TOKEN})")
_ENCODING = re.compile(_TOKEN)


def _parse_content_type(value):
    """(type, subtype, params), or None when absent or unparseable (RFC 2045 §5.2)."""
    if value is None:
        return None
    segments = _split_structured(value, ";")
    match = _MEDIA_TYPE.match(segments[0])
    if match is None:
        return None
    return match.group(1).lower(), match.group(2).lower(), _parse_params(segments[1:])


def _parse_encoding(value):
    match = _ENCODING.search(_strip_comments(value or ""))
    return match.group().lower() if match else "7bit"  # RFC 2045 §6.1 default


def _parse_disposition(value):
    """[type, params] per RFC 2183, or None when absent or without a type."""
    if value is None:
        return None
    segments = _split_structured(value, ";")
    disposition_type = segments[0].strip().lower()
    if not disposition_type:
        return None
    return [disposition_type, _parse_params(segments[1:])]


def _parse_language(value):
    """Language tags of Content-Language (RFC 3282), or None."""
    if value is None:
        return None
    tags = [tag.strip() for tag in _split_structured(value, ",")]
    return [tag for tag in tags if tag] or None


def _param(params, name):
    for key, value in params:
        if key == name:
            return value
    return ""


_STRUCTURED_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|\(|[;,]|[^";,(]+', re.DOTALL)
_COMMENT_CHAR = re.compile(r"[()\\]")


def _split_structured(value, separator):
    """Split a MIME header value at `separator` outside quoted strings, dropping comments.

    Quoted strings are kept with their quotes, for _unquote to undo.
    """
    segments, current, pos = [], [], 0
    while pos < len(value):
        match = _STRUCTURED_TOKEN.match(value, pos)
        token = match.group()
        if token == "(":
            pos = _comment_end(value, pos)[0]
            current.append(" ")
            continue
        pos = match.end()
        if token == separator:
            segments.append("".join(current))
            current = []
        else:
            current.append(token)
    segments.append("".join(current))
    return segments


def _strip_comments(value):
    return _split_structured(value, separator=None)[0]


def _comment_end(text, pos):
    """For the comment opening at text[pos]: (offset past it, its inner text).

    Comments nest and take backslash escapes (RFC 5322 §3.2.2); an unclosed one
    runs to the end of the text.
    """
    depth, search = 0, pos
    while True:
        match = _COMMENT_CHAR.search(text, search)
        if match is None:
            return len(text), text[pos + 1 :]
        char = match.group()
        search = match.end()
        if char == "\\":
            search += 1
        elif char == "(":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return search, text[pos + 1 : search - 1]


_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _unquote(text):
    """The content of a quoted string (RFC 5322 §3.2.4), tolerating a missing close quote."""
    if not text.startswith('"'):
        return text
    inner = text[1:]
    if inner.endswith('"') and not _ends_with_escape(inner[:-1]):
        inner = inner[:-1]
    return _QUOTED_PAIR.sub(r"\1", inner)


def _ends_with_escape(text):
    backslashes = len(text) - len(text.rstrip("\\"))
    return backslashes % 2 == 1


# RFC 2231 §3-4: name*0, name*1*, ... are sections of one value; a trailing "*"
# marks a percent-encoded section, the first of which starts with charset'lang'.
_PARAM_SECTION = re.compile(r"(.+?)(?:\*(\d{1,4}))?(\*)?", re.DOTALL)


def _parse_params(segments):
    """[[name, value], ...] in order of first appearance, RFC 2231 sections combined."""
    order, plain, extended, sections = [], {}, {}, {}
    for segment in segments:
        name, equals, value = segment.partition("=")
        name = name.strip().lower()
        if not name or not equals:
            continue
        value = _unquote(value.strip())
        base, index, star = _PARAM_SECTION.fullmatch(name).groups()
        if base not in plain and base not in extended and base not in sections:
            order.append(base)
        if index is not None:
            sections.setdefault(base, {}).setdefault(int(index), (value, bool(star)))
        elif star:
            extended.setdefault(base, value)
        else:
            plain.setdefault(base, value)
    params = []
    for base in order:
        # An RFC 2231 value wins over a plain one given alongside it for old readers.
        if base in sections:
            value = _join_sections(sections[base])
        elif base in extended:
            value = _join_sections({0: (extended[base], True)})
        else:
            value = plain[base]
        params.append([base, value])
    return params


def _join_sections(sections):
    charset, data = None, bytearray()
    for index in sorted(sections):
        value, encoded = sections[index]
        if not encoded:
            data += value.encode("utf-8")
            continue
        if index == 0:
            pieces = value.split("'", 2)
            if len(pieces) == 3:
                charset, _language, value = pieces
        data += unquote_to_bytes(value)
    return _decode_bytes(bytes(data), charset)


# --- Envelope and addresses ------------------------------------------------------------


def _envelope(fields, addresses):
    """IMAP ENVELOPE (RFC 9051 §7.5.2) from a message's fields and parsed addresses."""
    from_ = _envelope_addresses(addresses["from"])
    # RFC 3501 §7.4.2: an absent or empty Sender or Reply-To is taken from From.
    sender = _envelope_addresses(addresses["sender"]) or _copy(from_)
    reply_to = _envelope_addresses(addresses["reply-to"]) or _copy(from_)
    return [
        fields.get("date"),
        fields.get("subject"),
        from_,
        sender,
        reply_to,
        _envelope_addresses(addresses["to"]),
        _envelope_addresses(addresses["cc"]),
        _envelope_addresses(addresses["bcc"]),
        fields.get("in-reply-to"),
        fields.get("message-id"),
    ]


def _copy(addresses):
    return None if addresses is None else [list(address) for address in addresses]


@dataclass
class _Mailbox:
    name: str | None
    route: str | None
    local: str | None
    domain: str | None


@dataclass
class _Group:
    name: str
    members: list


def _envelope_addresses(items):
    """ENVELOPE address list: [name, adl, mailbox, host] per address, None if empty.

    A group is a [None, None, name, None] start marker, its members, then
    [None, None, None, None] (RFC 9051 §7.5.2).
    """
    out = []
    for item in items:
        if isinstance(item, _Group):
            out.append([None, None, item.name, None])
            out.extend(_envelope_mailbox(member) for member in item.members)
            out.append([None, None, None, None])
        else:
            out.append(_envelope_mailbox(item))
    return out or None


# A NIL host reads as group syntax in an ENVELOPE (RFC 9051 §7.5.2), so "To: bob" gets
# the placeholder host that IMAP clients already know from other servers.
MISSING_HOST = ".MISSING-HOST-NAME."


def _envelope_mailbox(mailbox):
    host = mailbox.domain if mailbox.domain is not None or mailbox.local is None else MISSING_HOST
    return [mailbox.name, mailbox.route, mailbox.local, host]


@dataclass
class _Token:
    kind: str  # "atom", "quoted", "literal", "special" or "comment"
    text: str  # quoted strings and comments without their delimiters
    spaced: bool  # whitespace or a comment came before it


_ADDRESS_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<quoted>"[^"\\]*(?:\\.[^"\\]*)*"?)
    | (?P<comment>\()
    | (?P<literal>\[[^\]\\]*(?:\\.[^\]\\]*)*\]?)
    | (?P<special>[<>@,;:])
    | (?P<atom>[^\s"(<>@,;:\[]+)
    """,
    re.VERBOSE | re.DOTALL,
)


def _address_tokens(value):
    tokens, pos, spaced = [], 0, False
    while pos < len(value):
        match = _ADDRESS_TOKEN.match(value, pos)
        kind = match.lastgroup
        if kind == "space":
            pos, spaced = match.end(), True
            continue
        if kind == "comment":
            pos, text = _comment_end(value, pos)
            tokens.append(_Token("comment", text.strip(), spaced))
            spaced = True
            continue
        text = _unquote(match.group()) if kind == "quoted" else match.group()
        tokens.append(_Token(kind, text, spaced))
        pos, spaced = match.end(), False
    return tokens


def _parse_addresses(value):
    """RFC 5322 §3.4 address-list as _Mailbox and _Group items, tolerating anything.

    Obsolete routes (RFC 5322 §4.4) become the route; a missing domain leaves it
    None; an unclosed quote, comment, angle bracket or group ends with the text.
    """
    items, pending = [], []
    group = None
    in_angle = angle_empty = in_route = False

    def finish_mailbox():
        mailbox = _mailbox(pending)
        pending.clear()
        if mailbox is not None:
            (group.members if group is not None else items).append(mailbox)

    for token in _address_tokens(value):
        special = token.text if token.kind == "special" else None
        if special == "<" and not in_angle:
            in_angle = angle_empty = True
            in_route = False
        elif special == ">" and in_angle:
            in_angle = in_route = False
        elif special == "@" and in_angle and angle_empty:
            in_route = True
        elif special in (",", ":") and in_route:
            in_route = special == ","
        elif special in (",", ";"):
            in_angle = False  # a separator also ends an unclosed "<"
            finish_mailbox()
            if special == ";" and group is not None:
                items.append(group)
                group = None
            continue
        elif special == ":" and group is None and not in_angle:
            group = _Group(_phrase(pending), [])
            pending.clear()
            continue
        if in_angle and token.kind != "comment" and special != "<":
            angle_empty = False
        pending.append(token)
    finish_mailbox()
    if group is not None:
        items.append(group)
    return items


def _mailbox(tokens):
    """A _Mailbox from the tokens of one address, or None if they hold no address."""
    comments = [token.text for token in tokens if token.kind == "comment" and token.text]
    words = [token for token in tokens if token.kind != "comment"]
    opening = next((i for i, t in enumerate(words) if _is_special(t, "<")), None)
    route = None
    if opening is None:
        name, spec = None, words
    else:
        name = _phrase(words[:opening]) or None
        closing = next(
            (i for i, t in enumerate(words) if i > opening and _is_special(t, ">")), len(words)
        )
        spec = words[opening + 1 : closing]
        if spec and _is_special(spec[0], "@"):
            colon = next((i for i, t in enumerate(spec) if _is_special(t, ":")), None)
            if colon is not None:
                route = "".join(token.text for token in spec[:colon]) or None
                spec = spec[colon + 1 :]
    local, domain = _addr_spec([t for t in spec if not (t.kind == "special" and t.text in "<>")])
    if local is None and domain is None:
        # Would read as an end-of-group marker ([NIL NIL NIL NIL]) on the wire.
        return None
    if name is None and comments:
        name = comments[0]  # "user@host (Real Name)", the obsolete display form
    return _Mailbox(name, route, local, domain)


def _addr_spec(tokens):
    """(local part, domain) of an addr-spec, split at its last "@"; None for a missing piece."""
    at = next((i for i in range(len(tokens) - 1, -1, -1) if _is_special(tokens[i], "@")), None)
    if at is None:
        return _phrase(tokens) or None, None
    domain = "".join(token.text for token in tokens[at + 1 :])
    return _phrase(tokens[:at]) or None, domain or None


def _is_special(token, char):
    return token.kind == "special" and token.text == char


def _phrase(tokens):
    """Words of a phrase, unquoted, one space where the source had whitespace."""
    out = []
    for token in tokens:
        if token.kind == "comment":
            continue
        if out and token.spaced:
            out.append(" ")
        out.append(token.text)
    return "".join(out)


def _display(items):
    """Decoded human form of an address list: 'Name <local@domain>, ...'."""
    shown = []
    for item in items:
        if isinstance(item, _Group):
            members = ", ".join(_display_mailbox(member) for member in item.members)
            name = decode_words(item.name)
            shown.append(f"{name}: {members};" if members else f"{name}:;")
        else:
            shown.append(_display_mailbox(item))
    return ", ".join(shown)


def _display_mailbox(mailbox):
    address = _address(mailbox)
    name = decode_words(mailbox.name) if mailbox.name else ""
    if name and address:
        return f"{name} <{address}>"
    return address or name


def _address(mailbox):
    if mailbox.domain is None:
        return mailbox.local or ""
    return f"{mailbox.local or ''}@{mailbox.domain}"


def _first_address(items):
    for item in items:
        for mailbox in item.members if isinstance(item, _Group) else [item]:
            if mailbox.local:
                return _address(mailbox).lower()
    return ""


_MSG_ID = re.compile(r"<[^<>]*>")


def _msg_ids(value):
    """The <msg-id>s of In-Reply-To or References (RFC 5322 §3.6.4), in order."""
    ids = ["".join(found.split()) for found in _MSG_ID.findall(value)]
    ids = [msg_id for msg_id in ids if msg_id != "<>"]
    return ids or value.split()


def _parse_date(value):
    """Date: header (RFC 5322 §3.3) as an aware UTC datetime, or None."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:  # "-0000": no zone information; take it as UTC
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# --- Decoding ------------------------------------------------------------------------------

# RFC 2047 §2: encoded-text holds no "?"; a charset may carry *language (RFC 2231 §5).
_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?]*)\?=")


def decode_words(text):
    """RFC 2047 encoded words in `text` decoded; other text left as it is.

    Whitespace between adjacent encoded words is dropped (§6.2), and adjacent words
    in one charset are decoded together, since mailers split multi-byte characters
    across them.
    """
    if "=?" not in text:
        return text
    out, pending, pending_charset = [], bytearray(), None
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        charset = match.group(1).partition("*")[0].lower()
        joins_previous = pending_charset is not None and (not gap or gap.isspace())
        if pending_charset is not None and (not joins_previous or charset != pending_charset):
            out.append(_decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None
        if not joins_previous:
            out.append(gap)
        encoded = match.group(3).encode("utf-8")
        if match.group(2) in "bB":
            pending += _decode_base64(encoded)
        else:
            pending += binascii.a2b_qp(encoded, header=True)
        pending_charset = charset
        pos = match.end()
    if pending_charset is not None:
        out.append(_decode_bytes(bytes(pending), pending_charset))
    out.append(text[pos:])
    return "".join(out)


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _decode_base64(data):
    """Base64 decoded leniently: stray characters skipped, padding repaired."""
    data = _NOT_BASE64.sub(b"", data)
    data = data[: len(data) - 1] if len(data) % 4 == 1 else data
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _decode_transfer(data, encoding):
    if encoding == "base64":
        return _decode_base64(data)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


# Labels mailers use for a superset they actually send (as the WHATWG Encoding
# Standard maps them); US-ASCII text with 8-bit bytes is most often UTF-8.
_CHARSET_ALIASES = {
    "": "utf-8",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
}


# Python codecs that are no mail charset; punycode also decodes in quadratic time.
_NOT_CHARSETS = {"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"}


def _decode_bytes(data, charset):
    """Bytes to str in `charset`, falling back to UTF-8; never raises."""
    name = (charset or "").strip().lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        if codecs.lookup(name).name in _NOT_CHARSETS:
            name = "utf-8"
        text = data.decode(name, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # Unknown labels, and codecs that are not text encodings (base64, zlib...).
        text = data.decode("utf-8", "replace")
    return _clean(text)


def _clean(text):
    """Text safe for JSON and databases: no NUL, no lone surrogates (UTF-7 makes them)."""
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


# --- Attachments, preview and search text --------------------------------------------------


def _walk(structure):
    """Every node of the tree, nested messages included, in document order."""
    stack = [structure]
    while stack:
        node = stack.pop()
        yield node
        if "message" in node:
            stack.append(node["message"]["structure"])
        stack.extend(reversed(node.get("parts", ())))


def _is_attachment(node):
    disposition = node["disposition"]
    if disposition and disposition[0] == "attachment":
        return True
    if node["type"] in ("text", "multipart"):
        return False
    return bool(_filename(node))


def _filename(node):
    disposition = node["disposition"]
    if disposition and _param(disposition[1], "filename"):
        return _param(disposition[1], "filename")
    return _param(node["params"], "name")


def _texts(raw, structure):
    """(preview, search_text) from the text/* leaves of the tree.

    The preview comes from the first text/plain leaf with visible text, else the
    first such text/html one; attachments are skipped for it, but searched.
    """
    pieces, used = [], 0
    plain_preview = html_preview = ""
    for node in _walk(structure):
        if node["type"] != "text":
            continue
        remaining = SEARCH_TEXT_CHARS - used
        wants_preview = (
            not plain_preview
            and node["subtype"] in ("plain", "html")
            and not (node["subtype"] == "html" and html_preview)
            and not (node["disposition"] and node["disposition"][0] == "attachment")
        )
        if remaining <= 0 and not wants_preview:
            if plain_preview:
                break
            continue
        text = _part_text(raw, node, max(remaining, PREVIEW_CHARS * 16))
        if remaining > 0 and text:
            pieces.append(text[:remaining])
            used += len(pieces[-1]) + 1
        if wants_preview:
            preview = _preview(text)
            if node["subtype"] == "plain":
                plain_preview = preview
            else:
                html_preview = preview
    return plain_preview or html_preview, "\n".join(pieces)[:SEARCH_TEXT_CHARS]


def _part_text(raw, node, limit):
    """Up to `limit` characters of a text/* part, transfer- and charset-decoded."""
    start = node["body_start"]
    data = raw[start : min(node["end"], start + limit * SOURCE_BYTES_PER_CHAR)]
    charset = _param(node["params"], "charset")
    text = _decode_bytes(_decode_transfer(data, node["encoding"]), charset)
    if node["subtype"] == "html":
        return html_to_text(text, limit)
    return text.replace("\r\n", "\n")[:limit]


# Each pattern consumes all it scans (an unclosed comment or tag runs to the end),
# so every pass is linear, and all run in C with no per-match Python callback.
_HTML_HIDDEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<(script|style|title)\b.*?(?:</\1\s*>|\Z)",
    re.DOTALL | re.IGNORECASE,
)
_HTML_BREAK = re.compile(
    r"<\s*/?\s*(?:br|p|div|li|tr|td|th|h[1-6]|table|ul|ol|dl|dt|dd|blockquote|pre|hr"
    r"|section|article|header|footer|address)\b[^>]*>?",
    re.IGNORECASE,
)
_HTML_TAG = re.compile(r"<[/!?a-zA-Z][^>]*>?")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_LINE_BREAKS = re.compile(r" ?\n\s*")


def html_to_text(markup, limit=SEARCH_TEXT_CHARS):
    """Readable text of an HTML document: no tags, scripts or styles; entities decoded.

    Reads at most HTML_CHARS_PER_TEXT_CHAR * limit characters of markup: far more
    than any real mail (Gmail clips at about 100 kB), and it bounds the regex passes
    and the per-entity callbacks of html.unescape on hostile input.
    """
    text = _HTML_HIDDEN.sub(" ", markup[: limit * HTML_CHARS_PER_TEXT_CHAR])
    text = _HTML_BREAK.sub("\n", text)
    text = _HTML_TAG.sub("", text)
    text = html.unescape(text)
    text = _INLINE_SPACE.sub(" ", text)
    text = _LINE_BREAKS.sub("\n", text)
    return _clean(text.strip()[:limit])


# Besides whitespace and controls, the invisible characters newsletters pad their
# hidden preheader with (soft hyphen, zero-width joiners, byte order mark...).
_PREVIEW_WORD = re.compile(r"[^\s\x00-\x1f\x7f-\x9f\xad\u034f\u200b-\u200f\u2060\ufeff]+")


def _preview(text):
    """RFC 8970 preview: blank or invisible runs as one space, PREVIEW_CHARS at most."""
    words, size = [], 0
    for match in _PREVIEW_WORD.finditer(text):
        words.append(match.group())
        size += len(words[-1]) + 1
        if size > PREVIEW_CHARS:
            break
    return " ".join(words)[:PREVIEW_CHARS]
