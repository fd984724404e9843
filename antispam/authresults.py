"""The Authentication-Results header field (RFC 8601): ours, and forged ones.

- remove_ours(): every incoming Authentication-Results field whose authserv-id is ours is
  dropped (RFC 8601 §5: a receiver must not let a sender speak for it); those of other
  ADMDs stay, byte for byte.
- field(): the one field we add, each method on its own folded line.
"""
import re

from mta.headers import split_header

_NAME = b"authentication-results"
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_TOKEN_SAFE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+$")


def _fields(header):
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


def authserv_id(value):
    """The authserv-id of an Authentication-Results value (text after the colon), lower case."""
    text = _COMMENT.sub(" ", re.sub(r"\r?\n", "", value)).strip()
    return re.split(r"[\s;]", text, maxsplit=1)[0].lower() if text else ""


def remove_ours(raw, our_id):
    """`raw` without the Authentication-Results fields that claim `our_id`; (raw, count removed)."""
    header, rest = split_header(raw)
    if _NAME not in header.lower():
        return raw, 0
    kept, removed = [], 0
    for field in _fields(header):
        name, colon, value = field.partition(b":")
        if colon and name.strip().lower() == _NAME and authserv_id(value.decode("utf-8", "replace")) == our_id.lower():
            removed += 1
        else:
            kept.append(field)
    return (b"".join(kept) + rest, removed) if removed else (raw, 0)


def _value(text):
    return text if _TOKEN_SAFE.match(text) else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def method(name, result, properties=(), comment=""):
    """One resinfo: `dkim=pass (comment) header.d=example.org …`."""
    parts = [f"{name}={result}"]
    comment = "".join(c for c in comment if c not in "()\\" and " " <= c <= "~").strip()
    if comment:
        parts.append(f"({comment})")
    parts += [f"{key}={_value(value)}" for key, value in properties if value]
    return " ".join(parts)


def field(our_id, methods):
    """The Authentication-Results field, CRLF-terminated bytes; "none" when no method ran."""
    if not methods:
        return f"Authentication-Results: {our_id}; none\r\n".encode("utf-8")
    return ("Authentication-Results: " + our_id + ";\r\n\t" + ";\r\n\t".join(methods) + "\r\n").encode("utf-8")
