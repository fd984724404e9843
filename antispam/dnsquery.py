"""DNS for the sender checks, through the resolver MAILSUITE_DNS_SERVERS configures
(mta.routing.resolver), so tests answer from a DNS server on loopback.

Three callers, three shapes:
- txt(): our own lookups (DMARC, DNSBL), raising TempError on a DNS failure;
- spf_lookup(): pyspf's DNSLookup hook (installed by antispam.spf_check);
- DKIMKeyLookup: dkimpy's dnsfunc, which remembers why a key was not found, since
  dkimpy reports every failure as a plain False.
"""
import math
import threading
import time
from contextlib import contextmanager

import dns.exception
import dns.rdatatype
import dns.resolver
from django.conf import settings

from mta import routing

LIFETIME = 10.0
RESOLVER_REUSE = 60.0  # seconds a Resolver is reused: system resolvers (resolv.conf) are re-read after that

# A Resolver is only read by resolve() (each query keeps its state apart), so threads share
# one per set of configured servers: building one costs more CPU than a cached answer.
_resolvers = {}  # servers → (built at, Resolver)
_resolvers_lock = threading.Lock()


def resolver():
    servers = tuple(settings.MAILSUITE_DNS_SERVERS or ())
    now = time.monotonic()
    entry = _resolvers.get(servers)
    if entry is None or now - entry[0] >= RESOLVER_REUSE:
        entry = (now, routing.resolver())
        with _resolvers_lock:
            _resolvers[servers] = entry
    return entry[1]


class TempError(Exception):
    """The DNS did not answer (timeout, SERVFAIL): the result may differ later."""


class Validity:
    """How long what a thread looked up in the DNS stays true: `until`, a time.time(), is
    when the first of its answers expires; 0 when one of them may not be kept at all (a
    failure, or "none" without the SOA that says how long that lasts)."""

    def __init__(self):
        self.until = math.inf

    def note(self, until):
        self.until = min(self.until, until)


_validity = threading.local()


@contextmanager
def validity():
    """Within the block, the lookups this thread makes are noted in the Validity it gives."""
    watch, previous = Validity(), getattr(_validity, "current", None)
    _validity.current = watch
    try:
        yield watch
    finally:
        _validity.current = previous


def _note(until):
    watch = getattr(_validity, "current", None)
    if watch is not None:
        watch.note(until)


def _answers(name, rtype, lifetime=LIFETIME):
    """The rdata of `name`'s `rtype` records; [] when there are none or the name does not exist."""
    try:
        answer = resolver().resolve(name, rtype, search=False, lifetime=lifetime)
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as error:
        _note(_negative_until(error))
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        _note(0)
        raise TempError(f"{name} {rtype}: {error.__class__.__name__}") from None
    except dns.exception.DNSException as error:  # a malformed name, an unparsable answer
        _note(0)
        raise TempError(f"{name} {rtype}: {error.__class__.__name__}") from None
    _note(answer.expiration)
    return list(answer)


def _negative_until(error):
    """Until when "no such name" or "no such records" may be believed (RFC 2308 §5): the SOA
    the server sent along, its TTL and at most its MINIMUM field. 0 without one."""
    try:
        if isinstance(error, dns.resolver.NXDOMAIN):
            responses = list(error.responses().values())
        else:
            responses = [error.response()]
    except (KeyError, AttributeError):
        return 0
    ttls = [
        min(rrset.ttl, rrset[0].minimum)
        for response in responses
        for rrset in response.authority
        if rrset.rdtype == dns.rdatatype.SOA
    ]
    return time.time() + min(ttls) if ttls else 0


def txt(name):
    """Each TXT record at `name` as one text (its character-strings joined, RFC 7208 §3.3)."""
    return [b"".join(r.strings).decode("utf-8", "replace") for r in _answers(name, "TXT")]


def addresses(name):
    """The A records of `name`, as strings (DNSBL answers)."""
    return [r.address for r in _answers(name, "A")]


def spf_lookup(name, qtype, strict=True, timeout=LIFETIME):
    """pyspf's DNSLookup: [((name, qtype), value), …]; raises pyspf's TempError."""
    import spf

    try:
        records = _answers(name, qtype, lifetime=min(float(timeout), LIFETIME))
    except TempError as error:
        raise spf.TempError(f"DNS {error}") from None
    results = []
    for r in records:
        if qtype in ("A", "AAAA"):
            value = r.address
        elif qtype == "MX":
            value = (r.preference, r.exchange)
        elif qtype == "PTR":
            value = r.target.to_text(True)
        elif qtype in ("TXT", "SPF"):
            value = r.strings
        else:
            continue
        results.append(((name, qtype), value))
    return results


class DKIMKeyLookup:
    """dkimpy's dnsfunc for one message; `.failures` maps a key name to "temperror" or "nokey"."""

    def __init__(self):
        self.failures = {}

    def __call__(self, name, timeout=5):
        key_name = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = txt(key_name)
        except TempError:
            self.failures[key_name.rstrip(".").lower()] = "temperror"
            return None
        if not records:
            self.failures[key_name.rstrip(".").lower()] = "nokey"
            return None
        return records[0].encode("utf-8")
