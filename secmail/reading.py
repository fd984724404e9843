"""The webmail's reading pages through secmail: verify and decrypt before rendering.

open_reading(request, message, reading) returns (MessageSecurity or None, the Reading to
render). Messages with nothing signed or encrypted cost one look at the stored structure.
For a decrypted message the Reading is over the decrypted bytes (parsed here with the
store's own MIME walker), so the webmail's sanitiser, CSP and remote-content blocking
apply unchanged; callers also refuse remote content for any encrypted message (EFAIL).
Nothing decrypted is stored: the plaintext lives for one request (and is worked out once
in it: open_reading keeps its answer on the request object).
Learning on read: the S/MIME certificate of a valid signature, and a newer Autocrypt key.
"""
import logging

from mailstore.mime import parse_message
from secmail import actions, reader, session
from secmail.errors import SecmailError
from secmail.results import MessageSecurity

log = logging.getLogger(__name__)

_SECURE_TYPES = {
    ("multipart", "signed"), ("multipart", "encrypted"),
    ("application", "pkcs7-mime"), ("application", "x-pkcs7-mime"),
}


# Attached keys and certificates offered for import (RFC 3156 §7; RFC 8551 §3.2.2 certs-only).
KEY_TYPES = {"application/pgp-keys", "application/pkix-cert", "application/x-x509-ca-cert", "application/x-x509-user-cert"}
MAX_KEY_PART = 256 * 1024


def key_parts(reading):
    return [part for part in reading.attachments() if part.content_type.lower() in KEY_TYPES and part.size <= MAX_KEY_PART]


def _walk(node, depth=0):
    yield node
    if depth < 20:
        for child in node.get("parts") or []:
            yield from _walk(child, depth + 1)


def _looks_secured(reading):
    for node in _walk(reading.structure or {}):
        if (str(node.get("type", "")).lower(), str(node.get("subtype", "")).lower()) in _SECURE_TYPES:
            return True
    top = reading.structure or {}
    if (top.get("type"), top.get("subtype")) == ("text", "plain"):
        return b"-----BEGIN PGP " in reading.bytes[: 64 * 1024]
    return False


class _Blob:
    def __init__(self, content, parsed):
        self.structure, self.size, self.header_size, self.name = parsed.structure, len(content), parsed.header_size, None


class _Copy:
    """What webmail.message.Reading needs of a stored copy, for bytes that are not stored."""

    prefix = b""

    def __init__(self, content):
        self.blob = _Blob(content, parse_message(content))


def open_reading(request, message, reading):
    """(MessageSecurity or None, Reading): once per message and request — a second call in
    the same request (a template, another part of the page) gets the first answer, so a
    message is decrypted and verified once per request. Kept on the request object only."""
    readings = request.__dict__.setdefault("_secmail_readings", {})
    if message.pk not in readings:
        readings[message.pk] = _open_reading(request, message, reading)
    return readings[message.pk]


def _open_reading(request, message, reading):
    from webmail.message import Reading

    if b"Autocrypt:" in reading.bytes[: reading.blob.header_size]:
        try:
            actions.learn_autocrypt(request.account, reading.raw())
        except SecmailError:
            log.info("autocrypt header not learned", extra={"uid": message.uid})
    if not _looks_secured(reading):
        keys = key_parts(reading)
        return (MessageSecurity(key_parts=keys) if keys else None), reading
    security = reader.read(request.account, reading.raw(), unlocked=session.unlocked_keys(request, request.account))
    if any(s.valid and s.scheme == "smime" for s in security.signatures):
        actions.harvest(request.account, security, (message.from_address or "").lower())
    if security.content is not None and (security.encrypted or security.content != reading.raw()):
        reading = Reading(_Copy(security.content), blob_bytes=security.content)
    security.key_parts = key_parts(reading)
    return security, reading
