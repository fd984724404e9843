"""Private keys at rest: sealed with a key derived from the user's own passphrase.

Format of a sealed blob (all integers big-endian):
    b"MSS1" | log2(N) (1 byte) | r (1 byte) | p (1 byte) | salt (16) | nonce (12) | AES-256-GCM(ciphertext+tag)
The KDF is scrypt (RFC 7914) with the parameters stored in the blob, so they can grow later
without breaking older blobs. The header and a caller-chosen context (the key's kind and
fingerprint) are authenticated as associated data: a blob moved onto another key's row
does not open.

The passphrase is chosen by the user for their keys; it is never the login password and
never stored. A wrong passphrase and a damaged blob are the same failure (BadPassphrase).
"""
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from django.utils.translation import gettext

from secmail.errors import BadPassphrase, InvalidInput

MAGIC = b"MSS1"
# RFC 7914 §2 / OWASP: N=2^17, r=8 (128 MiB) is the interactive-login upper end; 2^15 keeps
# an unlock near 0.1 s on a small server. A seam: tests lower it.
SCRYPT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 8
_HEADER = struct.Struct(">4sBBB16s12s")


def _derive(passphrase, salt, log2_n, r, p):
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase.encode("utf-8"))


def check_passphrase(passphrase):
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE:
        raise InvalidInput(f"a key passphrase has at least {MIN_PASSPHRASE} characters")


def seal(plaintext: bytes, passphrase: str, context: bytes) -> bytes:
    check_passphrase(passphrase)
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(MAGIC, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, salt, nonce)
    key = _derive(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return header + AESGCM(key).encrypt(nonce, plaintext, header + context)


def unseal(blob: bytes, passphrase: str, context: bytes) -> bytes:
    blob = bytes(blob)
    if len(blob) < _HEADER.size or blob[:4] != MAGIC:
        raise BadPassphrase("the stored key is damaged")
    magic, log2_n, r, p, salt, nonce = _HEADER.unpack_from(blob)
    if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):  # bounded work for a stored blob
        raise BadPassphrase("the stored key is damaged")
    key = _derive(passphrase or "", salt, log2_n, r, p)
    header = blob[: _HEADER.size]
    try:
        return AESGCM(key).decrypt(nonce, blob[_HEADER.size :], header + context)
    except InvalidTag:
        raise BadPassphrase(gettext("wrong passphrase")) from None
