"""Sender Rewriting Scheme (SRS) for mail we forward.

When we forward a message (a redirect, an alias with an external target) the next hop
checks SPF against the envelope sender. The original sender's domain does not authorise
our servers, so we send with an address in our own domain that encodes the original:

    alice@example.org            -> SRS0=HHHH=TT=example.org=alice@fwd.test
    SRS0=hhhh=tt=example.org=alice@first.test
                                 -> SRS1=HHHH=first.test==hhhh=tt=example.org=alice@fwd.test

A bounce to the rewritten address comes back to us; `reverse()` turns it into the address
the bounce should go to. SRS1 ("the address already came through a forwarder") lets the
bounce skip intermediate hops and go straight back to the first forwarder, and keeps
addresses from growing with every hop. The scheme is described in Shevek's "Sender
Rewriting Scheme" paper (libsrs2, Mail::SRS); the field layout here follows it.

Implementation notes (invariants and decisions):

- Pure: no Django, no I/O. Time comes from the `clock` parameter (seconds since the epoch).
- The timestamp is (days since the epoch) mod 1024 in two base32 characters, as in the
  scheme. An address is accepted while its age is at most `max_age_days`. As in the
  scheme, a timestamp "in the future" counts as 1023 days old, hence expired.
- The hash is HMAC-SHA1, base64, its first `hash_length` characters, as the common
  implementations do. Two deliberate differences, harmless because only we ever check
  our own hashes:
    * the hashed text is the fields joined with "=" after the tag ("SRS0=TT=domain=local"),
      not their bare concatenation: with bare concatenation an attacker holding one valid
      address could move characters across the domain/local boundary
      (example.com + alice == example.co + malice) and keep the hash valid;
    * the tag is part of the hashed text, so an SRS0 hash can never pass as an SRS1 one.
  The hashed text is lower-cased (ASCII only, as libsrs2 does) and hashes are compared
  case-insensitively in constant time, because some MTAs change the case of addresses.
- Only `secret` signs; `old_secrets` are accepted by `reverse()` during a key rotation.
- forward() never raises for a bad address: an address it cannot represent (quoted or
  otherwise non-dot-atom local part, a domain literal, no "@", a result longer than an
  RFC 5321 path allows) is returned unchanged, so the caller forwards with the original
  sender (SPF may then fail at the next hop, exactly as without SRS) rather than with an
  address that is broken or refused outright.
- Rewritten local parts often exceed the 64-octet limit of RFC 5321 §4.5.3.1.1. We still
  produce them: every common SRS deployment does, receivers overwhelmingly accept them
  (§4.5.3.1 asks them to), and refusing would disable SRS for a large share of senders.
  The whole address is bounded by the 256-octet path limit (§4.5.3.1.3), which receivers
  do enforce: 254 octets plus the angle brackets.
- UTF-8 local parts and U-label domains (SMTPUTF8, RFC 6531 §3.3) are accepted; whether
  the message may be relayed with SMTPUTF8 is the caller's business.
- SRSError texts are fixed one-line strings that never echo the address, so they are safe
  in an SMTP reply (550 5.1.1 is the natural mapping).
"""
import base64
import hashlib
import hmac
import re
import time

__all__ = ["SRS", "SRSError"]

_SRS0 = "SRS0"
_SRS1 = "SRS1"
_TAG_SEPARATORS = "=+-"  # the scheme allows any of these right after the tag
_FIELD_SEPARATOR = "="  # between the fields after the tag; domains never contain it

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_BASE32_VALUE = {char: value for value, char in enumerate(_BASE32)}
_BASE32_VALUE.update({char.lower(): value for char, value in _BASE32_VALUE.items()})
_TIMESTAMP_SLOTS = 1024  # two base32 characters
_SECONDS_PER_DAY = 86400

_MAX_HASH_LENGTH = 27  # base64 of a 20-byte SHA-1 digest, without its padding "="
_MIN_HASH_LENGTH = 4  # shorter guards can be brute-forced in a few thousand bounces
_MAX_ADDRESS_OCTETS = 254  # RFC 5321 §4.5.3.1.3: 256-octet path including "<" and ">"

# RFC 5321 §4.1.2 Dot-string, extended with UTF8-non-ascii by RFC 6531 §3.3.
_NON_ASCII = "\u0080-\ud7ff\ue000-\U0010ffff"  # any character UTF-8 can encode (no surrogates)
_ATOM = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_NON_ASCII}]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
# RFC 5321 §4.1.2 Domain with U-labels (RFC 6531 §3.3); no address literals.
_LABEL = rf"[A-Za-z0-9{_NON_ASCII}](?:[A-Za-z0-9\-{_NON_ASCII}]*[A-Za-z0-9{_NON_ASCII}])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class SRSError(ValueError):
    """An address given to reverse() is not a genuine, current SRS address of ours.

    The text is one line, fixed, and safe to put in an SMTP reply.
    """


_MALFORMED = "Malformed SRS address"
_NOT_OURS = "Not an SRS address of this domain"
_BAD_HASH = "SRS address has an invalid signature"
_EXPIRED = "SRS address has expired"


# Case-insensitivity is ASCII only, as in DNS (RFC 4343) and libsrs2: Unicode case
# mapping would make e.g. "ſrs0" an SRS tag and the Kelvin sign a "k" in our domain.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text):
    return text.translate(_ASCII_LOWER)


def _split_address(address):
    """(local, domain) split at the last "@", or None if there is no "@"."""
    local, at, domain = address.rpartition("@")
    if not at:
        return None
    return local, domain


def _encodable(text):
    """Whether `text` can be sent as UTF-8 (lone surrogates cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_domain(text):
    return _DOMAIN.fullmatch(text) is not None


def _strip_tag(local):
    """(tag, separator, rest) if `local` starts with an SRS tag (any case), else None."""
    tag = {"srs0": _SRS0, "srs1": _SRS1}.get(_ascii_lower(local[:4]))
    separator = local[4:5]
    if tag is not None and separator and separator in _TAG_SEPARATORS:
        return tag, separator, local[5:]
    return None


def _decode_timestamp(text):
    """The day number (mod 1024) of a two-character base32 timestamp, or None."""
    if len(text) != 2:
        return None
    high = _BASE32_VALUE.get(text[0])
    low = _BASE32_VALUE.get(text[1])
    if high is None or low is None:
        return None
    return high << 5 | low


def _parse_srs0_fields(rest):
    """(hash, timestamp, domain, local) of an SRS0 address after its tag, or None."""
    fields = rest.split(_FIELD_SEPARATOR, 3)
    if len(fields) != 4 or not all(fields):
        return None
    return tuple(fields)


def _parse_srs1_fields(rest):
    """(hash, first forwarder's domain, opaque part) of an SRS1 address after its tag.

    The opaque part is the first forwarder's SRS0 local part without its "SRS0" tag, so it
    starts with that forwarder's separator; None if the address does not have that shape.
    """
    fields = rest.split(_FIELD_SEPARATOR, 2)
    if len(fields) != 3 or not all(fields):
        return None
    hash_, host, opaque = fields
    if opaque[0] not in _TAG_SEPARATORS or len(opaque) < 2:
        return None
    return hash_, host, opaque


class SRS:
    def __init__(
        self,
        secret: bytes,
        *,
        domain: str,
        max_age_days: int = 21,
        hash_length: int = 4,
        separator: str = "=",
        clock=time.time,
        old_secrets: tuple = (),
    ):
        for key in (secret, *old_secrets):
            if not isinstance(key, bytes) or not key:
                raise ValueError("SRS secrets must be non-empty bytes")
        if not _is_domain(domain):
            raise ValueError(f"not a valid SRS domain: {domain!r}")
        if not 1 <= max_age_days < _TIMESTAMP_SLOTS:
            raise ValueError(f"max_age_days must be between 1 and {_TIMESTAMP_SLOTS - 1}")
        if not _MIN_HASH_LENGTH <= hash_length <= _MAX_HASH_LENGTH:
            raise ValueError(f"hash_length must be between {_MIN_HASH_LENGTH} and {_MAX_HASH_LENGTH}")
        if separator not in tuple(_TAG_SEPARATORS):
            raise ValueError(f"separator must be one of {', '.join(_TAG_SEPARATORS)}")
        self._secret = secret
        self._verifying_secrets = (secret, *old_secrets)
        self.domain = domain
        self._domain_key = _ascii_lower(domain)
        self.max_age_days = max_age_days
        self.hash_length = hash_length
        self.separator = separator
        self._clock = clock

    # -- public API --------------------------------------------------------------------

    def forward(self, sender: str) -> str:
        """The envelope sender to use when forwarding mail from `sender`.

        `local@origdomain` becomes `SRS0=HHHH=TT=origdomain=local@<our domain>`; an SRS0 or
        SRS1 address of another forwarder becomes SRS1, keeping the first forwarder's domain
        and opaque part. Returned unchanged: the null sender, any address at our domain,
        and any address we cannot represent (see the module notes).
        """
        if sender == "":
            return sender  # RFC 5321 §4.5.5: bounces are never rewritten
        parts = _split_address(sender)
        if parts is None:
            return sender
        local, domain = parts
        if _ascii_lower(domain) == self._domain_key:
            return sender
        if _DOT_STRING.fullmatch(local) is None or not _is_domain(domain):
            return sender
        rewritten = self._rewrite_srs(local, domain) or self._srs0(local, domain)
        if len(rewritten.encode("utf-8")) > _MAX_ADDRESS_OCTETS:
            return sender
        return rewritten

    def reverse(self, address: str) -> str:
        """Where a bounce to `address`, an SRS address at our domain, should go.

        SRS0 gives the original sender; SRS1 gives the first forwarder's SRS0 address.
        Raises SRSError for anything else, a wrong hash, or an expired timestamp.
        """
        if not _encodable(address):
            raise SRSError(_MALFORMED)
        parts = _split_address(address)
        if parts is None or _ascii_lower(parts[1]) != self._domain_key:
            raise SRSError(_NOT_OURS)
        tagged = _strip_tag(parts[0])
        if tagged is None:
            raise SRSError(_NOT_OURS)
        tag, _, rest = tagged
        if tag == _SRS0:
            return self._reverse_srs0(rest)
        return self._reverse_srs1(rest)

    def is_srs(self, address: str) -> bool:
        """Whether `address` looks like an SRS address at our domain.

        A syntactic test for routing ("hand this recipient to reverse()"); only reverse()
        says whether the address is genuine and current.
        """
        parts = _split_address(address)
        return (
            parts is not None
            and _ascii_lower(parts[1]) == self._domain_key
            and _strip_tag(parts[0]) is not None
        )

    # -- rewriting ---------------------------------------------------------------------

    def _srs0(self, local, domain):
        timestamp = self._timestamp()
        hash_ = self._hash(self._secret, _SRS0, timestamp, domain, local)
        return self._address(_SRS0, hash_, timestamp, domain, local)

    def _rewrite_srs(self, local, domain):
        """The SRS1 rewrite of another forwarder's SRS0/SRS1 address, or None.

        Only addresses with the full shape of the scheme count, so an ordinary mailbox such
        as srs0-fan@example.org is wrapped in SRS0 and comes back exactly as it was.
        """
        tagged = _strip_tag(local)
        if tagged is None:
            return None
        tag, separator, rest = tagged
        if tag == _SRS0:
            fields = _parse_srs0_fields(rest)
            if fields is None or _decode_timestamp(fields[1]) is None or not _is_domain(fields[2]):
                return None
            # The sender's domain is the first forwarder; keep its separator for an exact
            # reverse. The result starts with "=" plus that separator, hence the "==".
            host, opaque = domain, separator + rest
        else:
            fields = _parse_srs1_fields(rest)
            if fields is None or not _is_domain(fields[1]):
                return None
            _, host, opaque = fields
        hash_ = self._hash(self._secret, _SRS1, host, opaque)
        return self._address(_SRS1, hash_, host, opaque)

    def _address(self, tag, *fields):
        return f"{tag}{self.separator}{_FIELD_SEPARATOR.join(fields)}@{self.domain}"

    # -- reversing ---------------------------------------------------------------------

    def _reverse_srs0(self, rest):
        fields = _parse_srs0_fields(rest)
        if fields is None:
            raise SRSError(_MALFORMED)
        hash_, timestamp, domain, local = fields
        day = _decode_timestamp(timestamp)
        if day is None:
            raise SRSError(_MALFORMED)
        # Check the hash before the age, so "expired" is only ever said of our own addresses.
        self._verify(hash_, _SRS0, timestamp, domain, local)
        if self._age_in_days(day) > self.max_age_days:
            raise SRSError(_EXPIRED)
        return f"{local}@{domain}"

    def _reverse_srs1(self, rest):
        fields = _parse_srs1_fields(rest)
        if fields is None:
            raise SRSError(_MALFORMED)
        hash_, host, opaque = fields
        self._verify(hash_, _SRS1, host, opaque)
        return f"{_SRS0}{opaque}@{host}"

    # -- hash and timestamp ------------------------------------------------------------

    def _hash(self, secret, tag, *fields):
        text = _FIELD_SEPARATOR.join((tag, *fields)).encode("utf-8").lower()
        digest = hmac.new(secret, text, hashlib.sha1).digest()
        return base64.b64encode(digest).decode("ascii")[: self.hash_length]

    def _verify(self, hash_, tag, *fields):
        if len(hash_) != self.hash_length:
            raise SRSError(_BAD_HASH)
        given = hash_.encode("utf-8").lower()
        # Compare with every key, without stopping early, so timing says nothing either.
        matches = [
            hmac.compare_digest(given, self._hash(secret, tag, *fields).encode("ascii").lower())
            for secret in self._verifying_secrets
        ]
        if not any(matches):
            raise SRSError(_BAD_HASH)

    def _today(self):
        return int(self._clock() // _SECONDS_PER_DAY) % _TIMESTAMP_SLOTS

    def _timestamp(self):
        day = self._today()
        return _BASE32[day >> 5] + _BASE32[day & 31]

    def _age_in_days(self, day):
        """Days since `day` (mod 1024); a day "after today" is taken as 1024 days earlier."""
        return (self._today() - day) % _TIMESTAMP_SLOTS
