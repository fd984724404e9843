"""The message as Sieve tests see it: header fields, addresses, body parts. Pure.

Implementation notes
--------------------
- Built from the raw bytes; the header is split once, the body only parsed when a
  body test asks (most scripts never do).
- Header values are unfolded and their RFC 2047 encoded-words decoded (RFC 5228
  §2.7.2), leading whitespace removed. A field that cannot be decoded is compared as
  it is: a broken message must not fail a script.
- Addresses come from the decoded field by email.utils.getaddresses (groups give
  their members; RFC 5228 §5.1).
- Bounded: at most MAX_BODY_TEXT characters of body text per part are searched.
"""
import email
import email.policy
import email.utils
import re
from email.header import decode_header, make_header

MAX_BODY_TEXT = 1024 * 1024
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:(.*)", re.DOTALL)


def split_header(raw):
    """(header bytes, body bytes) at the first empty line."""
    if raw.startswith((b"\r\n", b"\n")):
        return b"", raw[2 if raw.startswith(b"\r\n") else 1 :]
    found = _BLANK_LINE.search(raw)
    if found is None:
        return raw, b""
    return raw[: found.start()], raw[found.end() :]


def parse_fields(header):
    """[(lower-cased name, raw value as str)] in order, values unfolded."""
    fields = []
    for line in re.split(rb"\r?\n(?![ \t])", header):
        match = _FIELD.match(line)
        if not match:
            continue
        name = match.group(1).decode("ascii").lower()
        value = re.sub(rb"\r?\n", b"", match.group(2)).decode("utf-8", "replace")
        fields.append((name, value))
    return fields


def decode_value(value):
    """A field value with encoded-words decoded, leading/trailing whitespace removed."""
    value = value.strip(" \t")
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value))).strip(" \t")
    except Exception:  # a broken encoded-word: compare the text as it came
        return value


class MessageView:
    def __init__(self, raw: bytes):
        self.raw = raw
        header, self.body_bytes = split_header(raw)
        self.fields = parse_fields(header)
        self._decoded = {}
        self._parts = None

    @property
    def size(self):
        return len(self.raw)

    def raw_values(self, name):
        name = name.lower()
        return [value for field, value in self.fields if field == name]

    def values(self, name):
        """Decoded values of every field called `name`, in order."""
        name = name.lower()
        cached = self._decoded.get(name)
        if cached is None:
            cached = self._decoded[name] = [decode_value(v) for v in self.raw_values(name)]
        return cached

    def has(self, name):
        name = name.lower()
        return any(field == name for field, _ in self.fields)

    def addresses(self, value):
        """addr-specs in one decoded field value ("" for an empty address such as <>)."""
        return [address for _, address in email.utils.getaddresses([value])]

    def _walk(self):
        if self._parts is None:
            try:
                parsed = email.message_from_bytes(self.raw, policy=email.policy.compat32)
                self._parts = [part for part in parsed.walk() if not part.is_multipart()]
            except Exception:
                self._parts = []
        return self._parts

    def body_raw(self):
        """RFC 5173 §5.1 :raw: the body as it is, undecoded."""
        return self.body_bytes.decode("utf-8", "replace")

    def body_parts(self, content_types):
        """RFC 5173 §5.3 :content: the decoded text of the parts whose type matches
        one of `content_types` ("type" or "type/subtype", "" for any part)."""
        texts = []
        for part in self._walk():
            ctype = part.get_content_type().lower()
            if not any(_type_matches(ctype, wanted.lower()) for wanted in content_types):
                continue
            texts.append(_part_text(part))
        return texts

    def body_text(self):
        """RFC 5173 §5.2 :text: the text parts (text/* decoded, HTML reduced to its text)."""
        texts = []
        for part in self._walk():
            maintype = part.get_content_maintype().lower()
            if maintype != "text":
                continue
            text = _part_text(part)
            if part.get_content_subtype().lower() == "html":
                text = _html_text(text)
            texts.append(text)
        return texts


def _type_matches(ctype, wanted):
    if not wanted:
        return True
    if "/" in wanted:
        return ctype == wanted
    return ctype.split("/", 1)[0] == wanted


def _part_text(part):
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:
        payload = b""
    payload = payload[: MAX_BODY_TEXT * 4]
    charset = part.get_content_charset() or "us-ascii"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    return text[:MAX_BODY_TEXT]


def _html_text(html):
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
    text = re.sub(r"(?s)<[^>]*>", " ", text)
    import html as html_module

    return " ".join(html_module.unescape(text).split())
