"""Byte-exact MIME handling for signatures: signed content must be hashed exactly as sent.

The email package re-folds and re-encodes what it serialises, so signing and verifying
work on raw bytes here: split a message into its outer header fields and its MIME entity,
and a multipart body into its parts, without touching a byte in between.

- RFC 8551 §3.1.1 and RFC 3156 §5: signed content is in canonical form, lines ending CRLF;
  `canonical()` turns bare LF (as a Unix mailbox or a tool's output has it) into CRLF.
- RFC 2046 §5.1.1: the CRLF before a boundary delimiter belongs to the delimiter, not to
  the part before it; anything after the delimiter on its line is transport padding.
"""
import email.parser
import email.policy
import re
import secrets

_FIELD_START = re.compile(rb"^[!-9;-~]+:")


class MimeError(ValueError):
    pass


def canonical(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", bytes(data))


def split_header_body(entity: bytes):
    """(header block without the empty line, body). An entity without a body is all header."""
    if entity.startswith(b"\r\n"):
        return b"", entity[2:]
    head, sep, body = entity.partition(b"\r\n\r\n")
    if not sep:
        return entity, b""
    return head + b"\r\n", body


def header_fields(head: bytes):
    """The header block as raw fields (each with its continuation lines and CRLFs)."""
    fields = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif line.strip():
            fields.append(line)
    return fields


def field_name(raw_field: bytes) -> str:
    return raw_field.split(b":", 1)[0].decode("ascii", "replace").strip().lower()


def parse_headers(head: bytes):
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head + b"\r\n")


def content_type(head: bytes):
    """(lower-case type/subtype, params dict) of an entity's header block; text/plain by default."""
    headers = parse_headers(head)
    value = headers.get("Content-Type")
    if value is None:
        return "text/plain", {}
    try:
        params = {k.lower(): v for k, v in value.params.items()}
    except Exception:  # a malformed parameter list is as good as none
        params = {}
    return value.content_type.lower(), params


def split_message(message: bytes):
    """(outer header fields, entity): Content-* fields and the body form the MIME entity that
    is signed or encrypted; the rest (From, To, Subject, …) stays outside. MIME-Version goes
    with neither: join_message writes it once."""
    head, body = split_header_body(canonical(message))
    outer, inner = [], []
    for raw in header_fields(head):
        name = field_name(raw)
        if name.startswith("content-"):
            inner.append(raw)
        elif name != "mime-version":
            outer.append(raw)
    if not inner:
        inner = [b"Content-Type: text/plain; charset=us-ascii\r\n"]
    return outer, b"".join(inner) + b"\r\n" + body


def join_message(outer_fields, entity: bytes) -> bytes:
    return b"".join(outer_fields) + b"MIME-Version: 1.0\r\n" + entity


def split_multipart(body: bytes, boundary: str):
    """The parts of a multipart body (RFC 2046 §5.1.1), each exactly as it stands in `body`."""
    delimiter = b"--" + boundary.encode("ascii", "replace")
    text = b"\r\n" + body  # so that a delimiter on the first line is found like the others
    positions = []
    start = 0
    while True:
        at = text.find(b"\r\n" + delimiter, start)
        if at < 0:
            break
        after = at + 2 + len(delimiter)
        line_end = text.find(b"\r\n", after)
        if line_end < 0:
            line_end = len(text)
        closing = text[after : after + 2] == b"--"
        rest_of_line = text[after + (2 if closing else 0) : line_end]
        if rest_of_line.strip(b" \t"):  # "--boundaryX" is a different boundary
            start = after
            continue
        positions.append((at, line_end + 2, closing))
        if closing:
            break
        start = line_end
    parts = []
    for (_, part_start, closing), (next_at, _, _) in zip(positions, positions[1:]):
        if closing:
            break
        parts.append(text[part_start:next_at])
    if not positions or not positions[-1][2]:
        raise MimeError("multipart body without its closing delimiter")
    return parts


def new_boundary(prefix="=_secmail_"):
    return prefix + secrets.token_hex(12)


def base64_lines(data: bytes) -> bytes:
    import base64

    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))
