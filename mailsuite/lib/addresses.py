"""Mail addresses and domain names, normalised the one way the whole suite compares them.

Domains are stored in their ASCII (IDNA 2008, UTS #46 mapped) lower-case form; local
parts are lower-cased (RFC 5321 lets servers treat them case-sensitively, but no user
expects Bob@ and bob@ to be two mailboxes). UTF-8 local parts (RFC 6531) are kept as
UTF-8.
"""
import functools
import re

import idna

MAX_LOCALPART_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 §2.3.4, without the root dot
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class AddressError(ValueError):
    """An address or domain that cannot be used; the message says why, in one line."""


@functools.lru_cache(maxsize=4096)
def normalize_domain(domain):
    """Return the ASCII lower-case form of `domain`, or raise AddressError.

    Cached: IDNA mapping is slow and the same few domains come up in every session.
    """
    name = domain.strip().rstrip(".")
    if not name:
        raise AddressError("empty domain")
    try:
        ascii_name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as error:
        raise AddressError(f"{domain!r} is not a valid domain name ({error})") from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(ascii_name) > MAX_DOMAIN_OCTETS or len(labels) < 2:
        raise AddressError(f"{domain!r} is not a fully qualified domain name")
    if not all(_LDH_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise AddressError(f"{domain!r} is not a valid domain name")
    return ascii_name


@functools.lru_cache(maxsize=4096)  # an admin list shows the same few domains on every row
def display_domain(ascii_name):
    """The Unicode form of an ASCII domain, for people to read."""
    try:
        return idna.decode(ascii_name)
    except (idna.IDNAError, UnicodeError):
        return ascii_name


def normalize_localpart(localpart):
    """Lower-cased local part; only the dot-atom form is allowed for names we create."""
    if not _DOT_ATOM.fullmatch(localpart):
        raise AddressError(f"{localpart!r} is not a valid local part")
    if len(localpart.encode("utf-8")) > MAX_LOCALPART_OCTETS:
        raise AddressError(f"local part {localpart!r} is longer than {MAX_LOCALPART_OCTETS} octets")
    return localpart.lower()


def split_address(address):
    """Split `local@domain` into (normalised local part, ASCII domain)."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        raise AddressError(f"{address!r} is not an address of the form local@domain")
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        # RFC 5321 quoted-string: compare by content; only used on the receiving side.
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
        if not local or len(local.encode("utf-8")) > MAX_LOCALPART_OCTETS:
            raise AddressError(f"{address!r} has an invalid quoted local part")
        return local.lower(), normalize_domain(domain)
    return normalize_localpart(local), normalize_domain(domain)


def normalize_address(address):
    local, domain = split_address(address)
    return f"{local}@{domain}"
