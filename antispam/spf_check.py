"""SPF (RFC 7208) for inbound SMTP: the MAIL FROM identity and the HELO identity.

pyspf evaluates the records (mechanisms, macros, include chains, the 10-lookup and
2-void-lookup limits of RFC 7208 §4.6.4); its DNS goes through antispam.dnsquery,
installed here as pyspf's module-level DNSLookup hook, so MAILSUITE_DNS_SERVERS
applies. Nothing else in the project uses pyspf.

A result is kept for the same client address, sender and HELO name as long as every
DNS answer it came from stays valid (at most RESULT_SECONDS): a burst of mail from one
sender (a mailing list, a newsletter) is evaluated once, not once a message. A
temperror is not kept, nor a result resting on an answer whose lifetime is unknown.
"""
import ipaddress
import threading
import time
from dataclasses import dataclass

import spf
from django.conf import settings

from antispam import dnsquery

spf.DNSLookup = dnsquery.spf_lookup

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
TOTAL_DNS_SECONDS = 20  # for one evaluation, all its lookups together
RESULT_SECONDS = 60  # the longest a result is kept, however long its DNS answers live
MAX_RESULTS = 10_000  # results kept; when full, they are forgotten together

_results = {}  # (DNS servers, ip, sender, helo, receiver) -> (valid until, result, explanation)
_results_lock = threading.Lock()


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
    key = (tuple(settings.MAILSUITE_DNS_SERVERS or ()), ip, sender, helo, receiver)
    now = time.time()
    kept = _results.get(key)
    if kept is not None and kept[0] > now:
        return kept[1], kept[2]
    with dnsquery.validity() as validity:
        result, _code, explanation = spf.query(
            i=ip, s=sender, h=helo or "unknown", receiver=receiver, querytime=TOTAL_DNS_SECONDS
        ).check()
    result = result.lower()
    result, explanation = (result if result in RESULTS else "permerror"), explanation or ""
    until = min(validity.until, now + RESULT_SECONDS)
    if until > now and result != "temperror":
        with _results_lock:
            if len(_results) >= MAX_RESULTS:
                _results.clear()
            _results[key] = (until, result, explanation)
    return result, explanation


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
