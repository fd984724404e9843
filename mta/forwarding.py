"""Forwarding done right: SRS for the envelope sender of mail we pass on, an ARC seal on
it (antispam.arc), and routing bounces to SRS addresses back to the original sender."""
import functools
import hashlib
import hmac

from django.conf import settings

from accounts.resolve import local_domain
from mailsuite.lib.addresses import AddressError, split_address
from mta.srs import SRS, SRSError

__all__ = ["SRSError", "srs", "rewrite_sender", "is_srs", "reverse", "outgoing_bytes"]


@functools.lru_cache(maxsize=1)
def _srs(secret_key, domain):
    secret = hmac.new(secret_key.encode(), b"mailsuite SRS", hashlib.sha256).digest()
    return SRS(secret, domain=domain)


def srs():
    return _srs(settings.SECRET_KEY, settings.MAILSUITE_SRS_DOMAIN or settings.MAILSUITE_HOSTNAME)


def rewrite_sender(mail_from):
    """The envelope sender to use when forwarding mail from `mail_from`: SRS-rewritten,
    unless it is empty or in one of our own domains (our SPF covers those)."""
    if not mail_from:
        return ""
    try:
        _, domain = split_address(mail_from)
    except AddressError:
        return mail_from
    if local_domain(domain) is not None:
        return mail_from
    return srs().forward(mail_from)


def is_srs(address):
    return srs().is_srs(address)


def reverse(address):
    """Where a bounce to one of our SRS addresses goes; raises SRSError."""
    return srs().reverse(address)


def outgoing_bytes(raw, *, srs_sender):
    """The bytes to send for a queued message: mail we forward (it has an SRS sender)
    leaves with an ARC seal over what we found when it arrived (RFC 8617 §5.1)."""
    if not srs_sender:
        return raw
    from antispam import arc

    return arc.seal(raw)
