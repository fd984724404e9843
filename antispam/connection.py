"""What the SMTP client's address and HELO name say about it: reverse DNS and HELO sanity.

Each finding is a scored rule (antispam.checks.Rule), added to the message's score by
antispam.checks.check_message(connection_rules=…); none refuses mail. RFC 5321 §4.1.4
forbids refusing a message because the HELO name does not match the client, and a
missing PTR record is too common among small honest senders to refuse on.

- RDNS_NONE: the client's address has no PTR record (RFC 1912 §2.1 asks every host to
  have one; mail servers almost always do).
- RDNS_UNCONFIRMED: none of its PTR names resolves back to the address (no
  forward-confirmed reverse DNS, the "iprev" test of RFC 8601 §3).
- HELO_BARE_IP: an address given without brackets (RFC 5321 §4.1.3: an address literal
  is written [192.0.2.1] or [IPv6:…]).
- HELO_OURS: the client claims our name or address, or one of our domains: only a
  forger does (mail from ourselves does not come in from outside).
- HELO_NOT_FQDN: a single label or an invalid name where RFC 5321 §4.1.1.1 asks for the
  client's fully-qualified domain name.

A DNS failure (timeout, SERVFAIL) scores nothing: an outage must not count against
senders. Loopback clients are not checked (a local process has no name in the DNS to
speak of) unless CHECK_LOOPBACK is set, as tests do to stand in for remote clients.

The reverse DNS result is also reported in Authentication-Results as the "iprev" method
(RFC 8601 §2.7.3): `iprev=pass (the confirmed name) policy.iprev=IP`, `fail` when there is
no PTR record or no name points back, `temperror` when DNS failed (Iprev, from assess()).

Implementation notes: assess() (and check(), its rules only) is synchronous and does DNS,
no database; mta.smtpd runs it in the checks' own thread pool at the first MAIL FROM of a
session (after looking the HELO name up among our domains in the database pool) and keeps
the result.
"""
import ipaddress
import re
from dataclasses import dataclass

import dns.exception
import dns.resolver
import dns.reversename

from antispam import lookups
from antispam.checks import Rule
from mailsuite.lib.net import is_loopback
from mta.routing import resolver

CHECK_LOOPBACK = False  # a test seam
LIFETIME = 5.0
MAX_PTR_NAMES = 5  # a PTR set larger than this is checked only this far

POINTS = {
    "RDNS_NONE": 1.5,
    "RDNS_UNCONFIRMED": 1.0,
    "HELO_BARE_IP": 1.5,
    "HELO_OURS": 4.0,
    "HELO_NOT_FQDN": 1.0,
}
EXPLANATIONS = {
    "RDNS_NONE": "the sending server's address has no name in the DNS (no PTR record)",
    "RDNS_UNCONFIRMED": "the name the sending server's address points to does not point back to it",
    "HELO_BARE_IP": "the sending server introduced itself with a bare IP address",
    "HELO_OURS": "the sending server introduced itself with our own name or address",
    "HELO_NOT_FQDN": "the sending server's introduction (HELO) is not a full domain name",
}

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


class _TempError(Exception):
    pass


@dataclass(frozen=True)
class Iprev:
    """The iprev result of RFC 8601 §2.7.3 for a client address."""

    result: str  # pass, fail or temperror
    ip: str
    name: str = ""  # the forward-confirmed name (pass)
    reason: str = ""  # why not (fail, temperror)

    def method(self):
        """The Authentication-Results resinfo (antispam.authresults)."""
        from antispam import authresults

        return authresults.method(
            "iprev", self.result, [("policy.iprev", self.ip)], comment=self.name or self.reason,
        )


_IPREV = {
    "pass": ("pass", ""),
    "none": ("fail", "no PTR record"),
    "unconfirmed": ("fail", "no PTR name resolves back to the address"),
    "temperror": ("temperror", "DNS lookup failed"),
}


def rule(name):
    return Rule(name, POINTS[name], EXPLANATIONS[name])


def _answers(name, rtype):
    try:
        return list(resolver().resolve(name, rtype, search=False, lifetime=LIFETIME))
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return []
    except dns.exception.DNSException:
        raise _TempError(f"{name} {rtype}") from None


def reverse_dns(ip):
    """("none" | "unconfirmed" | "pass" | "temperror", the confirmed name or "")."""
    try:
        names = [r.target.to_text(True).lower() for r in _answers(dns.reversename.from_address(ip), "PTR")]
    except _TempError:
        return "temperror", ""
    if not names:
        return "none", ""
    address = ipaddress.ip_address(ip)
    rtype = "A" if address.version == 4 else "AAAA"
    failed = False
    for name in names[:MAX_PTR_NAMES]:
        try:
            if any(ipaddress.ip_address(r.address) == address for r in _answers(name, rtype)):
                return "pass", name
        except _TempError:
            failed = True
    return ("temperror" if failed else "unconfirmed"), ""


def _address_literal(helo):
    """The address in a HELO given as an address (bracketed or not), else None."""
    text = helo
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text.lower().startswith("ipv6:"):
            text = text[5:]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_fqdn(name):
    labels = name.rstrip(".").lower().split(".")
    return len(labels) >= 2 and len(name) <= 253 and all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def helo_rules(helo, *, our_hostname, our_addresses=(), is_our_domain=lambda name: False):
    """The HELO_* rules `helo` earns (pure, but for is_our_domain)."""
    helo = (helo or "").strip()
    found = []
    literal = _address_literal(helo)
    if literal is not None:
        if not helo.startswith("["):
            found.append(rule("HELO_BARE_IP"))
        if any(literal == ipaddress.ip_address(a) for a in our_addresses if a):
            found.append(rule("HELO_OURS"))
        return found
    name = helo.rstrip(".").lower()
    if name and (name == our_hostname.lower() or is_our_domain(name)):
        found.append(rule("HELO_OURS"))
    if not is_fqdn(name):
        found.append(rule("HELO_NOT_FQDN"))
    return found


def is_local_domain(name):
    """True if the HELO name is one of our domains (antispam.lookups: remembered for a
    moment, else a database read: run it in the DB pool)."""
    name = _domain_name(name)
    return is_fqdn(name) and lookups.is_local_domain(name)


def known_local_domain(name):
    """is_local_domain(name) when that takes no database read, else None."""
    name = _domain_name(name)
    return is_fqdn(name) and lookups.known_local_domain(name)


def _domain_name(helo):
    return (helo or "").strip().rstrip(".").lower()


def assess(ip, helo, *, our_hostname, our_addresses=(), helo_is_ours=False):
    """([Rule], Iprev or None) for a client at `ip` that said HELO/EHLO `helo`; `helo_is_ours`:
    the name is one of our domains (is_local_domain(), looked up by the caller: no database
    here). None (nothing checked) for loopback clients and what is not an IP address."""
    if is_loopback(ip) and not CHECK_LOOPBACK:
        return [], None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return [], None
    found = helo_rules(
        helo, our_hostname=our_hostname, our_addresses=our_addresses, is_our_domain=lambda name: helo_is_ours,
    )
    result, name = reverse_dns(ip)
    if result == "none":
        found.append(rule("RDNS_NONE"))
    elif result == "unconfirmed":
        found.append(rule("RDNS_UNCONFIRMED"))
    iprev, reason = _IPREV[result]
    return found, Iprev(iprev, ip, name, reason)


def check(ip, helo, *, our_hostname, our_addresses=(), helo_is_ours=False):
    """[Rule] for a client at `ip` that said HELO/EHLO `helo` (assess() without iprev)."""
    return assess(ip, helo, our_hostname=our_hostname, our_addresses=our_addresses, helo_is_ours=helo_is_ours)[0]
