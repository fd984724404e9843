"""Unlocked private keys for the length of a web session.

Choice (issue 11): a key is unlocked once per web session with its passphrase, not per
operation. The opened key material is kept in the server-side session store encrypted
(AES-256-GCM) under a random 256-bit token that lives only in an HttpOnly, SameSite=Strict
session cookie (UNLOCK_COOKIE). So neither the session store nor the database alone
yields a key; logging out (the session is flushed) or closing the browser (the cookie is
a session cookie) locks every key again. The login password plays no part.
"""
import base64
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secmail import keys, sealing

SESSION_KEY = "secmail.unlocked"
UNLOCK_COOKIE = "secmail_unlock"


def _aad(own_key):
    return f"{own_key.pk}:{own_key.kind}:{own_key.fingerprint}".encode()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _cipher(token):
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if len(raw) != 32:
        raise ValueError("bad unlock token")
    return AESGCM(raw)


def unlock(session, token, own_key, passphrase) -> keys.UnlockedKey:
    """Open the sealed key with the passphrase (BadPassphrase if wrong) and keep it for the session."""
    material = sealing.unseal(own_key.sealed_private, passphrase, own_key.context())
    unlocked = keys.open_material(own_key, material)
    nonce = os.urandom(12)
    stored = dict(session.get(SESSION_KEY, {}))
    stored[str(own_key.pk)] = base64.b64encode(nonce + _cipher(token).encrypt(nonce, material, _aad(own_key))).decode()
    session[SESSION_KEY] = stored
    return unlocked


def unlocked(session, token, own_key) -> keys.UnlockedKey | None:
    blob = session.get(SESSION_KEY, {}).get(str(own_key.pk))
    if not blob or not token:
        return None
    try:
        raw = base64.b64decode(blob)
        material = _cipher(token).decrypt(raw[:12], raw[12:], _aad(own_key))
    except (ValueError, InvalidTag):
        return None
    return keys.open_material(own_key, material)


def unlocked_ids(session):
    return {int(pk) for pk in session.get(SESSION_KEY, {})}


def lock(session, own_key=None):
    stored = dict(session.get(SESSION_KEY, {}))
    if own_key is None:
        stored = {}
    else:
        stored.pop(str(own_key.pk), None)
    session[SESSION_KEY] = stored
