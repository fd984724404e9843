"""Autocrypt Level 1 headers: send ours, learn theirs.

- §2.1: `Autocrypt: addr=…; [prefer-encrypt=mutual;] keydata=<base64 of a minimal
  transferable public key>`; attributes whose names start with "_" are optional and
  ignored, any other unknown attribute makes the header invalid.
- §2.3: a header counts only if its addr is the From address and it is the only valid one
  in the message; the key is taken only when the message's effective date (its Date, but
  never later than now) is newer than the one the key was last learned from. Reports
  (multipart/report, e.g. bounces) are ignored.
"""
import base64
import datetime
import binascii
import email.parser
import email.policy
import email.utils
from dataclasses import dataclass

from django.utils import timezone

MAX_KEYDATA = 64 * 1024


@dataclass
class Header:
    addr: str
    keydata: bytes
    prefer_encrypt: bool


def parse(value: str) -> Header | None:
    attributes = {}
    for item in str(value).split(";"):
        if not item.strip():
            continue
        name, sep, attr_value = item.partition("=")
        if not sep:
            return None
        name = name.strip().lower()
        if name in attributes:
            return None
        attributes[name] = attr_value.strip()
    for name in attributes:
        if name not in ("addr", "prefer-encrypt", "keydata") and not name.startswith("_"):
            return None  # §2.1: an unknown critical attribute
    if "addr" not in attributes or "keydata" not in attributes:
        return None
    try:
        keydata = base64.b64decode("".join(attributes["keydata"].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not keydata or len(keydata) > MAX_KEYDATA:
        return None
    return Header(attributes["addr"].lower(), keydata, attributes.get("prefer-encrypt", "").lower() == "mutual")


def from_message(message: bytes):
    """(From address, effective date, the one valid Header or None) of a message."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
    from_address = email.utils.parseaddr(str(headers.get("From", "")))[1].lower()
    now = timezone.now()
    try:
        date = email.utils.parsedate_to_datetime(str(headers.get("Date", "")))
        if date.tzinfo is None:
            date = date.replace(tzinfo=datetime.timezone.utc)  # RFC 5322 -0000: time zone unknown
    except (TypeError, ValueError, IndexError):
        date = now
    effective = min(date, now)
    if str(headers.get("Content-Type", "")).lower().startswith("multipart/report"):
        return from_address, effective, None
    valid = [h for h in (parse(v) for v in headers.get_all("Autocrypt", [])) if h and h.addr == from_address]
    return from_address, effective, valid[0] if len(valid) == 1 else None


def header_value(addr: str, keydata: bytes, prefer_encrypt=False) -> str:
    """The header's value, folded at 76 characters of base64 (RFC 5322 §2.2.3 folding)."""
    encoded = base64.b64encode(keydata).decode("ascii")
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    prefix = f"addr={addr};" + (" prefer-encrypt=mutual;" if prefer_encrypt else "") + " keydata="
    return prefix + "\r\n " + "\r\n ".join(lines)
