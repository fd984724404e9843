"""Byte-exact edits of a message's header section.

The body and every header field we do not touch stay byte for byte as received.
"""
import email.utils
import re

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_header(raw):
    """(header bytes including the final line break of the last field, rest of the message)."""
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    cut = match.start() + (2 if raw[match.start() : match.start() + 2] == b"\r\n" else 1)
    return raw[:cut], raw[cut:]


def _fields(header):
    """Yield each header field with its continuation lines, as bytes."""
    current = b""
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and current:
            current += line
        else:
            if current:
                yield current
            current = line
    if current:
        yield current


def remove_fields(raw, names):
    """Drop every header field whose name is in `names` (case-insensitive)."""
    wanted = {name.lower().encode("ascii") for name in names}
    header, rest = split_header(raw)
    kept = []
    removed = False
    for field in _fields(header):
        name = field.split(b":", 1)[0].strip().lower()
        if b":" in field and name in wanted:
            removed = True
        else:
            kept.append(field)
    return b"".join(kept) + rest if removed else raw


def received_field(*, helo, client_ip, hostname, protocol, queue_id, recipient=None, when=None):
    """A Received: trace field (RFC 5321 §4.4), folded, ending in CRLF."""
    helo = "".join(ch for ch in (helo or "unknown") if 32 < ord(ch) < 127)[:255] or "unknown"
    date = email.utils.format_datetime(when) if when else email.utils.formatdate(localtime=False)
    lines = [
        f"Received: from {helo} ([{client_ip}])",
        f"\tby {hostname} (mailsuite) with {protocol} id {queue_id}",
    ]
    if recipient:
        lines.append(f"\tfor <{recipient}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def field_values(raw, name):
    """The unfolded values of every header field called `name`, as text."""
    wanted = name.lower().encode("ascii")
    header, _ = split_header(raw)
    values = []
    for field in _fields(header):
        field_name, colon, value = field.partition(b":")
        if colon and field_name.strip().lower() == wanted:
            text = value.decode("utf-8", "replace")
            values.append(re.sub(r"\r?\n(?=[ \t])", "", text).strip())
    return values


def has_field(raw, name):
    return bool(field_values(raw, name))


def count_fields(raw, name):
    """How many header fields are called `name` (cheap: no unfolding or decoding)."""
    wanted = name.lower().encode("ascii") + b":"
    header, _ = split_header(raw)
    return sum(1 for line in header.split(b"\n") if line[: len(wanted)].lower() == wanted)
