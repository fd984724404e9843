"""SPF (RFC 7208) for inbound SMTP: the MAIL FROM identity and the HELO identity.

pyspf evaluates the records (mechanisms, macros, include chains, the 10-lookup and
2-void-lookup limits of RFC 7208 §4.6.4); its DNS goes through antispam.dnsquery,
installed here as pyspf's module-level DNSLookup hook, so MAILSUITE_DNS_SERVERS
applies. Nothing else in the project uses pyspf.
"""
import ipaddress
from dataclasses import dataclass

import spf

from antispam import dnsquery

spf.DNSLookup = dnsquery.spf_lookup

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
TOTAL_DNS_SECONDS = 20  # for one evaluation, all its lookups together


@dataclass(frozen=True)
class SPFResult:
    result: str  # one of RESULTS
    identity: str  # "mailfrom" or "helo"
    domain: str  # the domain checked ("" when there was none)
    explanation: str = ""


def _is_domain_name(name):
    if not name or "." not in name or name.startswith("[") or len(name) > 253:
        return False
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return True


def _evaluate(ip, sender, helo, receiver):
    result, _code, explanation = spf.query(
        i=ip, s=sender, h=helo or "unknown", receiver=receiver, querytime=TOTAL_DNS_SECONDS
    ).check()
    result = result.lower()
    return (result if result in RESULTS else "permerror"), explanation or ""


def check_helo(ip, helo, *, receiver):
    """RFC 7208 §2.3: the HELO identity is postmaster@HELO; only a domain name can be checked."""
    helo = (helo or "").rstrip(".").lower()
    if not _is_domain_name(helo):
        return SPFResult("none", "helo", "", "HELO is not a domain name")
    result, explanation = _evaluate(ip, f"postmaster@{helo}", helo, receiver)
    return SPFResult(result, "helo", helo, explanation)


def check_mail_from(ip, mail_from, helo, *, receiver, helo_result=None):
    """RFC 7208 §2.4: MAIL FROM's domain; for the null sender, the HELO identity stands in."""
    if not mail_from:
        helo_result = helo_result or check_helo(ip, helo, receiver=receiver)
        return SPFResult(helo_result.result, "helo", helo_result.domain, helo_result.explanation)
    domain = mail_from.rpartition("@")[2].rstrip(".").lower()
    if not _is_domain_name(domain):
        return SPFResult("none", "mailfrom", domain, "no domain in MAIL FROM")
    result, explanation = _evaluate(ip, mail_from, helo, receiver)
    return SPFResult(result, "mailfrom", domain, explanation)
