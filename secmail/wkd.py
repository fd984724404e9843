"""OpenPGP Web Key Directory (draft-koch-openpgp-webkey-service): serve ours, look up others'.

- §3.1: the hashed local part is the z-base-32 encoding (RFC 6189 §5.1.6) of the SHA-1 of
  the lower-cased local part; the direct method URL is
  https://DOMAIN/.well-known/openpgpkey/hu/HASH?l=LOCAL, the advanced one
  https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH?l=LOCAL.
- The key is served binary (application/octet-stream), reduced to the user id of the
  address asked for (§3.1: "only the user id of the requested mail address").
- A policy file must exist for a domain that takes part (§4.5): served empty.
- Lookups try the advanced method first and fall back to the direct one only when the
  openpgpkey host cannot be reached (§3.1: "if the required sub-domain does not exist");
  an answer from it, even 404, is final. Both over HTTPS; ADVANCED_URL and DIRECT_URL are
  seams that tests point at a loopback HTTP server. A response larger than MAX_KEY_BYTES or
  slower than TIMEOUT is dropped, and the key is kept only if one of its user ids is the
  address asked for.
"""
import hashlib
import urllib.error
import urllib.parse
import urllib.request

from secmail import openpgp
from secmail.errors import InvalidInput

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
ADVANCED_URL = "https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{hash}?l={local}"
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
    fields = dict(domain=domain.lower(), hash=local_hash(local), local=urllib.parse.quote(local, safe=""))
    data = None
    for template in (ADVANCED_URL, DIRECT_URL):
        if not template:
            continue
        try:
            with urllib.request.urlopen(template.format(**fields), timeout=timeout or TIMEOUT) as response:
                if response.status != 200:
                    return None
                data = response.read(MAX_KEY_BYTES + 1)
                break
        except urllib.error.HTTPError:
            return None  # the directory answered: no key there
        except (urllib.error.URLError, OSError, ValueError):
            continue  # not reachable: the next method
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
