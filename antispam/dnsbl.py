"""DNS block lists: the client's IP (DNSBL, RFC 5782 §2.1) and the sender's domain (RHSBL, §2.2).

Zones and their weights come from MAILSUITE_DNSBL_ZONES and MAILSUITE_RHSBL_ZONES (none by
default). A listing is an A record in 127.0.0.0/8 (RFC 5782 §2.3); other answers (some
lists answer 127.255.255.x for "you are over quota", some resolvers hijack NXDOMAIN) count
as not listed. A zone that does not answer counts as not listed too: a list outage must not
stop the mail. Listings whose weights add up to MAILSUITE_DNSBL_REJECT_WEIGHT refuse the
mail at MAIL FROM; lighter ones only add to the message's score.
"""
import ipaddress
import logging
from dataclasses import dataclass

from django.conf import settings

from antispam import dnsquery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listing:
    zone: str
    weight: float
    listed: str  # what was looked up: the IP or the domain


def _reversed_ip(ip):
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        return ".".join(reversed(ip.split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))  # RFC 5782 §2.4: nibbles


def _listed(name):
    try:
        answers = dnsquery.addresses(name)
    except dnsquery.TempError:
        log.info("dnsbl: no answer for %s", name)
        return False
    return any(
        ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8") and not a.startswith("127.255.255.")
        for a in answers
    )


def listings(ip, sender_domain):
    """[Listing] of `ip` in the DNSBL zones and `sender_domain` in the RHSBL zones."""
    found = []
    try:
        reversed_ip = _reversed_ip(ip)
    except ValueError:
        reversed_ip = None
    if reversed_ip:
        for zone, weight in settings.MAILSUITE_DNSBL_ZONES:
            if _listed(f"{reversed_ip}.{zone}"):
                found.append(Listing(zone, weight, ip))
    if sender_domain:
        for zone, weight in settings.MAILSUITE_RHSBL_ZONES:
            if _listed(f"{sender_domain}.{zone}"):
                found.append(Listing(zone, weight, sender_domain))
    return found


def enabled():
    """Whether any block list is configured (otherwise check_sender() finds nothing)."""
    return bool(settings.MAILSUITE_DNSBL_ZONES or settings.MAILSUITE_RHSBL_ZONES)


def check_sender(ip, mail_from):
    """(a refusal or None, the listings) for MAIL FROM:<mail_from> from `ip`."""
    if not enabled():
        return None, []
    domain = mail_from.rpartition("@")[2].rstrip(".").lower() if "@" in mail_from else ""
    found = listings(ip, domain)
    if found and sum(listing.weight for listing in found) >= settings.MAILSUITE_DNSBL_REJECT_WEIGHT:
        listing = max(found, key=lambda item: item.weight)
        what = f"client [{ip}]" if listing.listed == ip else f"sender domain {listing.listed}"
        log.info("dnsbl: refused ip=%s mail_from=<%s> zones=%s", ip, mail_from, ",".join(f.zone for f in found))
        return f"554 5.7.1 Service unavailable; {what} blocked using {listing.zone}", found
    return None, found
