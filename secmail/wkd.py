"""OpenPGP Web Key Directory (draft-koch-openpgp-webkey-service): serve ours, look up others'.

- §3.1: the hashed local part is the z-base-32 encoding (RFC 6189 §5.1.6) of the SHA-1 of
  the lower-cased local part; the direct method URL is
  https://DOMAIN/.well-known/openpgpkey/hu/HASH?l=LOCAL, the advanced one
  https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH?l=LOCAL.
- The key is served binary (application/octet-stream), reduced to the user id of the
  address asked for (§3.1: "only the user id of the requested mail address").
- A policy file must exist for a domain that takes part (§4.5): served empty.
- Lookups use the direct method only, over HTTPS; DIRECT_URL is a seam that tests point at
  a loopback HTTP server. A response larger than MAX_KEY_BYTES or slower than TIMEOUT is
  dropped, and the key is kept only if one of its user ids is the address asked for.
"""
import hashlib
import urllib.error
import urllib.parse
import urllib.request

from secmail import openpgp
from secmail.errors import InvalidInput

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
DIRECT_URL = "https://{domain}/.well-known/openpgpkey/hu/{hash}?l={local}"
TIMEOUT = 10
MAX_KEY_BYTES = 64 * 1024


def zbase32(data: bytes) -> str:
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(ZBASE32[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def local_hash(local: str) -> str:
    return zbase32(hashlib.sha1(local.lower().encode("utf-8")).digest())


def lookup(address: str, timeout=None):
    """(KeyInfo, armoured public key) for the address, or None when WKD has nothing usable."""
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        return None
    url = DIRECT_URL.format(domain=domain.lower(), hash=local_hash(local), local=urllib.parse.quote(local, safe=""))
    try:
        with urllib.request.urlopen(url, timeout=timeout or TIMEOUT) as response:
            if response.status != 200:
                return None
            data = response.read(MAX_KEY_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if not data or len(data) > MAX_KEY_BYTES:
        return None
    try:
        infos = openpgp.inspect(data)
    except InvalidInput:
        return None
    for info in infos:
        if address.lower() in info.addresses and info.can_encrypt and not (info.revoked or info.expired):
            return info, openpgp.armor_public(openpgp.minimal_key(data, address.lower()))
    return None
