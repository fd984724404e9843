"""Where mail for a domain goes next: a smart host, a relay domain's next hop, or the
domain's MX hosts (RFC 5321 §5.1).

DNS goes through dnspython and MAILSUITE_DNS_SERVERS (tests point it at a DNS server
on loopback). MX hosts are tried in preference order, equal preferences in random
order; a domain without MX records is its own mail host (the implicit MX); a null MX
(RFC 7505) means the domain takes no mail.
"""
import ipaddress
import logging
import random
import threading
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
from django.conf import settings

from mailsuite.lib import inline, secrets
from mta.models import SmartHost

log = logging.getLogger(__name__)


class RouteError(Exception):
    """No way to deliver now (permanent=False) or ever (permanent=True)."""

    def __init__(self, status, text, *, permanent):
        super().__init__(text)
        self.status = status
        self.permanent = permanent


@dataclass
class Route:
    hosts: list  # host names or IP literals, in the order to try them
    port: int
    kind: str = "mx"  # "mx", "smarthost" or "relay"
    tls: str = SmartHost.TLS.OPPORTUNISTIC
    verify_certificate: bool = False
    username: str = ""
    password: str = field(default="", repr=False)

    def describe(self):
        return f"{self.kind} {','.join(self.hosts)}:{self.port}"


# Answers are kept for their TTL (negative ones for their SOA minimum, RFC 2308), one cache per
# set of configured servers: a receiving MX asks the same SPF, DMARC and DKIM names for every
# message of a sender, and a round trip per lookup would set its pace. Bounded in entries.
DNS_CACHE_ENTRIES = 20_000
_caches = {}
_caches_lock = threading.Lock()


class _Cache(dns.resolver.LRUCache):
    """The answers cache, which also tells mailsuite.lib.inline when a lookup would go out
    to the network.

    dnspython looks a name up in the cache under (name, type, class), and on a miss under
    (name, ANY, class), where it keeps "no such name". We never ask for ANY, so a second
    look that finds no NXDOMAIN means the query is about to be sent."""

    def get(self, key):
        answer = super().get(key)
        if key[1] == dns.rdatatype.ANY and (answer is None or answer.response.rcode() != dns.rcode.NXDOMAIN):
            inline.must_wait(f"DNS {key[0]}")
        return answer


def _cache_for(servers):
    with _caches_lock:
        cache = _caches.get(servers)
        if cache is None:
            cache = _caches[servers] = _Cache(DNS_CACHE_ENTRIES)
        return cache


def resolver():
    servers = tuple(settings.MAILSUITE_DNS_SERVERS or ())
    r = dns.resolver.Resolver(configure=not servers)
    if servers:
        r.nameservers = [ip for ip, _ in servers]
        r.nameserver_ports = {ip: port for ip, port in servers}
    r.lifetime = 10.0
    r.timeout = 3.0
    r.cache = _cache_for(servers)
    return r


def _lookup(name, rtype):
    """Records of one type, [] when the name exists without them; NXDOMAIN raises."""
    try:
        return list(resolver().resolve(name, rtype, search=False))
    except dns.resolver.NoAnswer:
        return []
    except dns.resolver.NXDOMAIN:
        raise
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        raise RouteError("4.4.3", f"DNS lookup of {name} {rtype} failed: {error.__class__.__name__}", permanent=False)


def addresses(host):
    """The IP addresses of a host (A first, then AAAA), or the host itself if it is one."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        found = [r.address for r in _lookup(host, "A")] + [r.address for r in _lookup(host, "AAAA")]
    except dns.resolver.NXDOMAIN:
        return []
    return found


def mx_hosts(domain):
    """The domain's mail hosts in the order to try them (RFC 5321 §5.1, RFC 7505)."""
    try:
        records = _lookup(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise RouteError("5.1.2", f"domain {domain} does not exist", permanent=True) from None
    if not records:
        if not addresses(domain):
            raise RouteError("5.1.2", f"domain {domain} has no mail server (no MX and no address)", permanent=True)
        return [domain]  # the implicit MX
    if any(r.exchange == dns.name.root for r in records):
        raise RouteError("5.1.10", f"domain {domain} accepts no mail (null MX)", permanent=True)
    by_preference = {}
    for record in records:
        by_preference.setdefault(record.preference, []).append(record.exchange.to_text(omit_final_dot=True).lower())
    hosts = []
    for preference in sorted(by_preference):
        group = by_preference[preference]
        random.shuffle(group)
        hosts += group
    if settings.MAILSUITE_HOSTNAME in hosts:
        # We are one of the domain's MX hosts: only the better ones may be tried (RFC 5321 §5.1).
        hosts = hosts[: hosts.index(settings.MAILSUITE_HOSTNAME)]
        if not hosts:
            raise RouteError("5.4.6", f"mail for {domain} loops back to myself", permanent=True)
    return hosts


def _from_smarthost(row, kind):
    return Route(
        hosts=[row.host],
        port=row.port,
        kind=kind,
        tls=row.tls,
        verify_certificate=row.verify_certificate,
        username=row.username,
        password=secrets.decrypt(row.password) if row.password else "",
    )


def route_for(domain):
    """The Route for mail to `domain` (ASCII), or RouteError."""
    rows = {row.domain: row for row in SmartHost.objects.filter(domain__in=[domain, ""])}
    if domain in rows:
        return _from_smarthost(rows[domain], "relay" if rows[domain].accept_relay else "transport")
    if "" in rows:
        return _from_smarthost(rows[""], "smarthost")
    if settings.MAILSUITE_RELAYHOST:
        from mta.actions import parse_next_hop

        host, port = parse_next_hop(settings.MAILSUITE_RELAYHOST)
        return Route(hosts=[host], port=port, kind="smarthost")
    return Route(hosts=mx_hosts(domain), port=settings.MAILSUITE_OUTBOUND_PORT)
