"""Secrets the server must be able to read back (a smart host's password, an external
account's password), encrypted at rest with a key derived from SECRET_KEY.

Fernet (AES-128-CBC + HMAC-SHA256) from cryptography. Changing SECRET_KEY makes stored
secrets unreadable: they must then be entered again.
"""
import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

PREFIX = "fernet:"


def _fernet():
    key = hashlib.sha256(b"mailsuite stored secrets\0" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(text):
    return PREFIX + _fernet().encrypt(text.encode()).decode() if text else ""


def decrypt(stored):
    """The secret, or raises ValueError if it cannot be read (e.g. SECRET_KEY changed)."""
    if not stored:
        return ""
    if not stored.startswith(PREFIX):
        raise ValueError("not an encrypted secret")
    try:
        return _fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise ValueError("the stored secret cannot be decrypted (was SECRET_KEY changed?)") from None
