"""Reading a stored message: its parts, attachments, headers and trace, and the sanitised
HTML document shown in the reading view's sandboxed frame.

Implementation notes:
- Nothing is re-parsed: the MIME tree, offsets and summary fields were stored at
  delivery (mailstore.mime). Parts are byte ranges of the blob named by the stored
  offsets, found by IMAP part number with imap.fetch.find_part and decoded with
  imap.fetch.decode_transfer, so a download is byte-identical to what the sender attached.
- Charsets and RFC 2047 words are decoded the way the mail store decodes them
  (mailstore.mime), leniently and never raising.
- HTML is cleaned by nh3 (an allow-list: no script, no event handlers, no forms, links
  only http/https/mailto, styles filtered by property), and shown in an iframe sandboxed
  without scripts or same-origin, with its own CSP (webmail.security.body_policy). cid:
  images become data: URLs; remote images are removed unless the user allowed them, and
  counted so the page can offer to.
- Bounded: at most TEXT_LIMIT characters of text per part are shown (the rest is in
  the raw source), at most INLINE_IMAGE_BYTES of embedded images per message.
"""
import base64
import html
import re
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import nh3
from django.utils.safestring import mark_safe

from imap.fetch import UnknownTransferEncoding, decode_transfer, find_part
from mailstore import mime
from mailstore.actions import read_blob
from mailstore.storage import blob_storage

TEXT_LIMIT = 1 << 20  # characters of one text part shown
HTML_LIMIT = 100_000  # characters of one HTML part shown (Gmail clips at about 100 kB too)
INLINE_IMAGE_BYTES = 10 << 20  # cid: images embedded in one message's body
# What a browser shows inline safely (never SVG: it is a document that can script).
PREVIEWABLE = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf"}
EMBEDDABLE = PREVIEWABLE - {"application/pdf"}

# The decoder the mail store uses for text and RFC 2047 words: lenient, never raises.
decode_text = mime._decode_bytes  # noqa: SLF001 - the one charset decoder of the project
decode_words = mime.decode_words


@dataclass
class Part:
    number: tuple
    node: dict = field(repr=False)

    @property
    def content_type(self):
        return f"{self.node['type']}/{self.node['subtype']}"

    @property
    def number_text(self):
        return ".".join(map(str, self.number))

    @property
    def filename(self):
        name = decode_words(mime._filename(self.node) or "")  # noqa: SLF001
        if not name and self.node["type"] == "message":
            name = "message.eml"
        return safe_filename(name) or f"part-{self.number_text}"

    @property
    def content_id(self):
        value = (self.node.get("id") or "").strip()
        return value[1:-1] if value.startswith("<") and value.endswith(">") else value

    @property
    def size(self):
        """The decoded size, estimated from the encoded one without reading the part."""
        size = self.node["size"]
        if self.node["encoding"] == "base64":
            return size * 57 // 78  # 76 characters and CRLF for every 57 octets
        return size

    @property
    def previewable(self):
        return self.content_type in PREVIEWABLE

    @property
    def is_image(self):
        return self.content_type in EMBEDDABLE

    @property
    def is_attachment(self):
        disposition = self.node.get("disposition")
        return bool(disposition and disposition[0] == "attachment")

    @property
    def charset(self):
        return mime._param(self.node["params"], "charset")  # noqa: SLF001


_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def safe_filename(name):
    """A file name to offer for download: no directories, controls or reserved characters."""
    name = _UNSAFE_FILENAME.sub("_", name).strip(" .")
    return name[:200]


def leaves(structure):
    """(IMAP part number, node) of every non-multipart part, in order. A message/rfc822
    part is one leaf (an attached message), not descended into."""
    out = []

    def walk(node, number):
        if node["type"] == "multipart" and "parts" in node:
            for i, child in enumerate(node["parts"], 1):
                walk(child, number + (i,))
        else:
            out.append(Part(number or (1,), node))

    walk(structure, ())
    return out


def _body_parts(node, number):
    """The parts that make up what a reader shows as the body, as (number, node)."""
    if node["type"] == "multipart" and "parts" in node:
        children = [(number + (i,), child) for i, child in enumerate(node["parts"], 1)]
        subtype = node["subtype"]
        if subtype == "alternative":
            # RFC 2046 §5.1.4: the last alternative we can show is the best one.
            for child_number, child in reversed(children):
                found = _body_parts(child, child_number)
                if found and (any(n["subtype"] == "html" for _, n in found) or child["type"] != "multipart"):
                    if child["type"] == "text" and child["subtype"] not in ("plain", "html"):
                        continue
                    return found
            return []
        if subtype == "related":
            # RFC 2387: the root is the first part (a start parameter is rare enough to ignore).
            return _body_parts(*children[0][::-1]) if children else []
        found = []
        for child_number, child in children:
            disposition = child.get("disposition")
            if disposition and disposition[0] == "attachment":
                continue
            if child["type"] == "multipart" or (child["type"] == "text" and child["subtype"] in ("plain", "html")):
                found += _body_parts(child, child_number)
        return found
    if node["type"] == "text" and node["subtype"] in ("plain", "html"):
        disposition = node.get("disposition")
        if disposition and disposition[0] == "attachment" and number:
            return []
        return [(number or (1,), node)]
    return []


@dataclass
class BodyPiece:
    kind: str  # "plain" or "html"
    text: str
    truncated: bool = False


@dataclass
class Hop:
    sender: str
    receiver: str
    protocol: str
    date: object  # datetime or None
    delay: float | None  # seconds since the previous hop, None when unknown


class Reading:
    """One message opened for reading: lazily decoded pieces of it."""

    def __init__(self, message, blob_bytes=None):
        self.message = message
        self.blob = message.blob
        self._bytes = blob_bytes
        self.structure = self.blob.structure or {
            "type": "text", "subtype": "plain", "params": [], "id": None, "description": None,
            "encoding": "7bit", "size": self.blob.size - self.blob.header_size, "lines": None,
            "md5": None, "disposition": None, "language": None, "location": None,
            "header_start": 0, "body_start": self.blob.header_size, "end": self.blob.size,
        }

    # Bytes

    @property
    def bytes(self):
        if self._bytes is None:
            self._bytes = read_blob(self.blob)
        return self._bytes

    def raw(self):
        """The message as IMAP and a download show it: per-copy prefix, then the shared bytes."""
        return bytes(self.message.prefix or b"") + self.bytes

    def part(self, number):
        node = find_part(self.structure, tuple(number))
        return Part(tuple(number), node) if node is not None and node["type"] != "multipart" else None

    def part_bytes(self, part):
        """The part's content, transfer encoding undone."""
        data = self.bytes[part.node["body_start"] : part.node["end"]]
        try:
            return decode_transfer(data, part.node["encoding"])
        except UnknownTransferEncoding:
            return data

    def part_text(self, part, limit=TEXT_LIMIT):
        data = self.part_bytes(part)
        text = decode_text(data[: limit * 4], part.charset)
        truncated = len(data) > limit * 4 or len(text) > limit
        return text[:limit].replace("\r\n", "\n"), truncated

    # Header

    @property
    def headers(self):
        """[(name, decoded value)] of the top-level header, prefix included, in order."""
        raw_header = bytes(self.message.prefix or b"") + self.bytes[: self.blob.header_size]
        fields = []
        for line in mime.searchable_header(raw_header).split("\n"):
            name, colon, value = line.partition(": ")
            if colon:
                fields.append((name, value))
        return fields

    def header(self, name):
        name = name.lower()
        return next((value for field_name, value in self.headers if field_name.lower() == name), "")

    @property
    def trace(self):
        """The Received: fields as hops, oldest first (RFC 5321 §4.4)."""
        received = [value for name, value in self.headers if name.lower() == "received"]
        hops, previous = [], None
        for value in reversed(received):
            hop = parse_received(value)
            if hop.date is not None and previous is not None:
                hop.delay = (hop.date - previous).total_seconds()
            previous = hop.date or previous
            hops.append(hop)
        return hops

    # Body and attachments

    @property
    def parts(self):
        return leaves(self.structure)

    def body(self):
        """[BodyPiece] in order."""
        pieces = []
        for number, node in _body_parts(self.structure, ()):
            part = Part(number, node)
            text, truncated = self.part_text(part, HTML_LIMIT if node["subtype"] == "html" else TEXT_LIMIT)
            pieces.append(BodyPiece("html" if node["subtype"] == "html" else "plain", text, truncated))
        return pieces

    @property
    def body_numbers(self):
        return {number for number, _ in _body_parts(self.structure, ())}

    def attachments(self, referenced_cids=()):
        """Parts offered for download: everything but the body text (and the other
        alternatives of it) and images the HTML shows inline through cid: links."""
        body = self.body_numbers
        listed = []
        for part in self.parts:
            if part.number in body:
                continue
            text_alternative = (
                part.node["type"] == "text" and part.node["subtype"] in ("plain", "html")
                and not part.is_attachment and not mime._filename(part.node)  # noqa: SLF001
            )
            shown_inline = part.content_id and part.content_id in referenced_cids and not part.is_attachment
            if not text_alternative and not shown_inline:
                listed.append(part)
        return listed

    def cid_images(self):
        """content-id -> data: URL of the message's embeddable images, within the budget."""
        images, budget = {}, INLINE_IMAGE_BYTES
        for part in self.parts:
            if part.content_id and part.is_image and part.size <= budget:
                data = self.part_bytes(part)
                budget -= len(data)
                images[part.content_id] = f"data:{part.content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return images

    @property
    def clipped(self):
        """Whether some of the body is not shown (the raw source has it all)."""
        return any(piece.truncated for piece in self.body())

    def html_summary(self, *, allow_remote):
        """CleanHtml (without the markup) of the HTML body: remote images, cid: references."""
        remote, cids = 0, set()
        for piece in self.body():
            if piece.kind == "html":
                clean = clean_html(piece.text, cid_images={}, allow_remote=allow_remote)
                remote += clean.remote_images
                cids |= clean.cids
        return CleanHtml("", remote, cids)

    @property
    def has_html(self):
        return any(node["subtype"] == "html" for _, node in _body_parts(self.structure, ()))


# Received: fields ------------------------------------------------------------------------

_RECEIVED_CLAUSE = re.compile(r"\b(from|by|with|via|id|for)\s+((?:\([^)]*\)|[^\s;()])+(?:\s+\([^)]*\))?)", re.IGNORECASE)


def parse_received(value):
    """A Hop from a Received: field value (RFC 5321 §4.4); unknown parts left empty."""
    clauses_text, _, date_text = value.rpartition(";")
    if not clauses_text:
        clauses_text, date_text = value, ""
    clauses = {}
    for match in _RECEIVED_CLAUSE.finditer(clauses_text):
        clauses.setdefault(match.group(1).lower(), match.group(2).strip())
    try:
        date = parsedate_to_datetime(date_text.strip()) if date_text.strip() else None
        if date is not None and date.tzinfo is None:
            date = None
    except (TypeError, ValueError, IndexError, OverflowError):
        date = None
    return Hop(clauses.get("from", ""), clauses.get("by", ""), clauses.get("with", ""), date, None)


# Plain text --------------------------------------------------------------------------------

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


def linkify(text):
    """Plain text as HTML: escaped, with http(s) links that open in a new tab."""
    out, pos = [], 0
    for match in _URL.finditer(text):
        url = match.group()
        stripped = url.rstrip(_TRAILING)
        # Keep a closing bracket that belongs to the URL: (see https://x/a_(b))
        while stripped != url and url[len(stripped)] == ")" and stripped.count("(") > stripped.count(")"):
            stripped += ")"
        end = match.start() + len(stripped)
        out.append(html.escape(text[pos : match.start()]))
        href = stripped if stripped.lower().startswith("http") else "https://" + stripped
        out.append(
            f'<a href="{html.escape(href)}" target="_blank" rel="noopener noreferrer">{html.escape(stripped)}</a>'
        )
        pos = end
    out.append(html.escape(text[pos:]))
    return mark_safe("".join(out))


# HTML ------------------------------------------------------------------------------------

_TAGS = (nh3.ALLOWED_TAGS | {"font", "center", "big", "tfoot", "address"}) - {"map", "area"}
_GLOBAL_ATTRIBUTES = {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor"}
_ATTRIBUTES = {tag: set(values) for tag, values in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = _GLOBAL_ATTRIBUTES
_ATTRIBUTES["font"] = {"color", "face", "size"}
_ATTRIBUTES["table"] = _ATTRIBUTES.get("table", set()) | {"border", "cellpadding", "cellspacing"}
_ATTRIBUTES["td"] = _ATTRIBUTES.get("td", set()) | {"nowrap"}
_ATTRIBUTES["img"] = {"src", "alt", "width", "height", "align", "border"}
_ATTRIBUTES["a"] = {"href", "name"}
# Inline style properties kept (nh3 drops the others): layout and type, nothing that
# loads a resource (background-image, list-style-image, content, cursor...).
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "font-variant", "text-align", "text-decoration", "text-indent", "text-transform", "line-height",
    "letter-spacing", "word-spacing", "white-space", "word-break", "overflow-wrap", "vertical-align",
    "direction", "unicode-bidi", "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
    "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
    "border-width", "border-collapse", "border-spacing", "border-radius", "width", "max-width",
    "min-width", "height", "max-height", "min-height", "display", "float", "clear", "table-layout",
    "list-style-type", "opacity", "visibility",
}
_REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)


@dataclass
class CleanHtml:
    html: str
    remote_images: int  # remote images removed (0 when they were allowed)
    cids: set  # content-ids the body refers to


def clean_html(markup, *, cid_images, allow_remote):
    """`markup` made safe to show (see the module notes)."""
    remote, cids = [0], set()

    def filter_attribute(tag, attribute, value):
        if tag == "img" and attribute == "src":
            if value[:4].lower() == "cid:":
                cid = value[4:].strip().strip("<>")
                cids.add(cid)
                return cid_images.get(cid)
            if _REMOTE.match(value):
                if allow_remote:
                    return value if not value.lstrip().startswith("//") else "https:" + value.lstrip()
                remote[0] += 1
                return None
            if value[:11].lower() == "data:image/" and not value[:15].lower().startswith("data:image/svg"):
                return value
            return None
        return value

    cleaned = nh3.clean(
        markup,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "head", "template", "noscript", "textarea", "select", "iframe", "object", "embed", "svg", "math"},
        attributes=_ATTRIBUTES,
        attribute_filter=filter_attribute,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=_STYLE_PROPERTIES,
        strip_comments=True,
    )
    return CleanHtml(cleaned, remote[0], cids)


DOCUMENT_STYLE = (
    "body{margin:0;padding:12px;font:15px/1.5 system-ui,sans-serif;color:#1d1d1f;background:#fff;"
    "overflow-wrap:break-word}img{max-width:100%;height:auto}table{max-width:100%}"
    "pre.plain{white-space:pre-wrap;font:inherit;margin:0}blockquote{margin:0 0 0 .8em;padding-left:.8em;"
    "border-left:3px solid #ccc}"
)


def body_document(reading, *, allow_remote):
    """(the HTML document for the body frame, CleanHtml summary of its HTML parts)."""
    cid_images = reading.cid_images()
    chunks, remote, cids = [], 0, set()
    for piece in reading.body():
        if piece.kind == "html":
            clean = clean_html(piece.text, cid_images=cid_images, allow_remote=allow_remote)
            chunks.append(f'<div dir="auto">{clean.html}</div>')
            remote += clean.remote_images
            cids |= clean.cids
        else:
            chunks.append(f'<pre class="plain" dir="auto">{linkify(piece.text)}</pre>')
    document = (
        '<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
        f"<style>{DOCUMENT_STYLE}</style></head><body>{''.join(chunks)}</body></html>"
    )
    return document, CleanHtml("", remote, cids)
