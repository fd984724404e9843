"""The DNS doctor: which records a domain needs, whether DNS has them, and what to change.

records() lists what to publish for a domain served here: mta.dns_records' MX, SPF, DKIM
and DMARC, plus
- MTA-STS (RFC 8461 §3.1), when MAILSUITE_MTA_STS_MODE is on: `_mta-sts` TXT with an id
  that changes with the policy, and the policy host `mta-sts.DOMAIN` pointing here;
- TLS reporting (RFC 8460 §3): `_smtp._tls` TXT sending reports to postmaster;
- SRV records for mail clients (RFC 6186 §3; `_submissions` from RFC 8314 §5.1), implicit
  TLS preferred (priority 0) over STARTTLS (10), IMAP over POP3 (RFC 6186 §3.4);
- the names Thunderbird (`autoconfig.DOMAIN`) and Outlook (`autodiscover.DOMAIN`,
  `_autodiscover._tcp` SRV) ask, served by ops.views over HTTPS on port 443.

check() looks each one up through the configured resolvers (MAILSUITE_DNS_SERVERS) and
says OK, missing or wrong, with the fix in words; "unknown" when DNS did not answer. It
also checks this server: that MAILSUITE_HOSTNAME resolves (to MAILSUITE_PUBLIC_IP when
set), that each of its IPs has a PTR naming it which resolves back to the IP (receivers
refuse or score mail from addresses without), and whether an IP is listed on the block
lists of MAILSUITE_DNSBL_ZONES.

What counts as right is what makes the mail work, not byte equality: any MX set that
includes this server, an SPF record that passes this server's IPs, a DKIM record with
the key's p=, a DMARC record with a policy, a name that is a CNAME to this server or has
its addresses.

Implementation notes:
- Read-only: nothing here writes to the database or to DNS.
- Lookups go through mta.routing.resolver(), so they see what the queue's deliveries and
  the sender checks see (cached for the records' TTL).
"""
import ipaddress
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.resolver
import dns.reversename
from django.conf import settings

from accounts.errors import InvalidInput
from antispam import dnsbl, spf_check
from mailsuite.lib.addresses import AddressError, normalize_domain
from mta.dns_records import Record, records_for, txt_value
from mta.models import DKIMKey
from mta.routing import resolver
from ops import clientconfig

OK, MISSING, WRONG, UNKNOWN = "ok", "missing", "wrong", "unknown"
LOOKUP_SECONDS = 5.0
HTTPS_PORT = 443  # autoconfig and Autodiscover are fetched over HTTPS: a TLS proxy in front of the web port
SRV_SERVICES = (  # (service label, port setting, priority)
    ("_submissions", "MAILSUITE_SMTPS_PORT", 0),
    ("_submission", "MAILSUITE_SUBMISSION_PORT", 10),
    ("_imaps", "MAILSUITE_IMAPS_PORT", 0),
    ("_imap", "MAILSUITE_IMAP_PORT", 10),
    ("_pop3s", "MAILSUITE_POP3S_PORT", 20),
    ("_pop3", "MAILSUITE_POP3_PORT", 30),
)


@dataclass
class Finding:
    what: str  # for people: "MX", "DKIM ms2026a", "SRV _imaps._tcp", "PTR 192.0.2.25"
    status: str  # OK, MISSING, WRONG or UNKNOWN
    record: Record | None = None  # what to publish, when it is a record of ours
    found: list = field(default_factory=list)  # what DNS has now, as text
    fix: str = ""  # what to do, in words; "" when nothing
    note: str = ""  # worth knowing even when OK

    @property
    def ok(self):
        return self.status == OK


@dataclass
class Report:
    domain: str
    hostname: str
    records: list  # [Finding] about the domain's records
    server: list  # [Finding] about this server: its name, reverse DNS, block lists

    @property
    def findings(self):
        return self.records + self.server

    @property
    def problems(self):
        return [f for f in self.findings if not f.ok]

    @property
    def ok(self):
        return not self.problems


class LookupFailed(Exception):
    """DNS gave no answer (timeout, SERVFAIL): neither present nor absent."""


def _lookup(name, rtype):
    """The rdata list for name/rtype ([] for NXDOMAIN or no data); LookupFailed otherwise."""
    try:
        return list(resolver().resolve(name, rtype, search=False, lifetime=LOOKUP_SECONDS))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as error:
        raise LookupFailed(f"{name} {rtype}: {error.__class__.__name__}") from None


def _txt(name):
    return [b"".join(r.strings).decode("utf-8", "replace") for r in _lookup(name, "TXT")]


def _host(name):
    """A DNS name as compared here: lower case, no final dot."""
    return str(name).rstrip(".").lower()


def _tags(text):
    """RFC 6376 §3.2 tag=value list (DKIM, DMARC, MTA-STS and TLS-RPT records share it)."""
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), "".join(value.split()))
    return tags


# What to publish ---------------------------------------------------------------------


def _points_here(name, host, why):
    return Record(name, "CNAME", f"{host}.", why + f" (or A/AAAA records with {host}'s addresses)")


def records(domain, *, hostname=None):
    """[Record] to publish for `domain` (a Domain); InvalidInput when the hostname cannot be
    in DNS (e.g. "localhost")."""
    hostname = hostname or settings.MAILSUITE_HOSTNAME
    published = records_for(domain, hostname=hostname, relayhost=settings.MAILSUITE_RELAYHOST)
    host = _host(published[0].value.split()[1])  # the MX record names the server as DNS sees it
    name = domain.name
    mode = settings.MAILSUITE_MTA_STS_MODE
    if mode != "off":
        policy = clientconfig.mta_sts_policy(mode, [host])
        published += [
            Record(f"_mta-sts.{name}.", "TXT", txt_value(f"v=STSv1; id={clientconfig.mta_sts_id(policy)}"),
                   f"MTA-STS ({mode}): senders fetch the policy again when the id changes"),
            _points_here(f"mta-sts.{name}.", host, "MTA-STS policy host, served here over HTTPS"),
        ]
    published.append(Record(
        f"_smtp._tls.{name}.", "TXT", txt_value(f"v=TLSRPTv1; rua=mailto:postmaster@{name}"),
        "TLS reports: senders say when they could not reach us over TLS",
    ))
    for service, setting, priority in SRV_SERVICES:
        published.append(Record(
            f"{service}._tcp.{name}.", "SRV", f"{priority} 1 {getattr(settings, setting)} {host}.",
            "mail clients find the server (RFC 6186)",
        ))
    published += [
        _points_here(f"autoconfig.{name}.", host, "Thunderbird's autoconfig"),
        _points_here(f"autodiscover.{name}.", host, "Outlook's Autodiscover"),
        Record(f"_autodiscover._tcp.{name}.", "SRV", f"0 1 {HTTPS_PORT} {host}.", "Outlook's Autodiscover"),
    ]
    return published


# Checking ------------------------------------------------------------------------------


def check(domain, *, hostname=None):
    """A Report on `domain` (a Domain) and this server, from live DNS."""
    hostname = hostname or settings.MAILSUITE_HOSTNAME
    wanted = records(domain, hostname=hostname)
    host = _host(wanted[0].value.split()[1])
    context = _Context(domain=domain, host=host)
    server = _check_server(context)
    findings = [_guarded(_check_record, record, context) for record in wanted]
    return Report(domain=domain.name, hostname=host, records=findings, server=server)


@dataclass
class _Context:
    domain: object
    host: str
    host_addresses: list = field(default_factory=list)  # what HOST resolves to
    ips: list = field(default_factory=list)  # the server's public IPs


def _guarded(checker, record, context):
    try:
        return checker(record, context)
    except LookupFailed as error:
        return Finding(_what(record), UNKNOWN, record, fix=f"DNS did not answer ({error}); check again later")


def _what(record):
    name = record.name.rstrip(".")
    domain_part = name.split("._domainkey.")[0] if "._domainkey." in name else ""
    if domain_part:
        return f"DKIM {domain_part}"
    if record.type == "TXT":
        if name.startswith("_dmarc."):
            return "DMARC"
        if name.startswith("_mta-sts."):
            return "MTA-STS"
        if name.startswith("_smtp._tls."):
            return "TLS-RPT"
        return "SPF"
    if record.type == "SRV":
        return f"SRV {'.'.join(name.split('.')[:2])}"
    if record.type == "CNAME":
        return name.split(".")[0]
    return record.type


def _check_record(record, context):
    what = _what(record)
    if record.type == "MX":
        return _check_mx(record, context)
    if record.type == "SRV":
        return _check_srv(record, context)
    if record.type == "CNAME":
        return _check_points_here(record, context)
    if what == "SPF":
        return _check_spf(record, context)
    if what.startswith("DKIM"):
        return _check_dkim(record, context)
    return _check_tagged(record, what)


def _check_mx(record, context):
    found = _lookup(context.domain.name, "MX")
    shown = [f"{r.preference} {r.exchange}" for r in found]
    fix = f"publish {record.zone_line(comment=False)}"
    if not found:
        return Finding("MX", MISSING, record, shown, fix + " (without it, mail goes to the domain's own address)")
    if any(r.exchange == dns.name.root for r in found):
        return Finding("MX", WRONG, record, shown, "remove the null MX (it says the domain takes no mail); " + fix)
    if context.host not in {_host(r.exchange) for r in found}:
        return Finding("MX", WRONG, record, shown, f"the MX records do not name {context.host}; {fix}")
    return Finding("MX", OK, record, shown)


def _check_spf(record, context):
    found = [t for t in _txt(context.domain.name) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    fix = f"publish the TXT record {record.value}"
    if not found:
        return Finding("SPF", MISSING, record, found, fix)
    if len(found) > 1:  # RFC 7208 §4.5: more than one is a permerror for every message
        return Finding("SPF", WRONG, record, found, "there must be exactly one SPF record: merge them into one")
    if not context.ips:
        same = found[0].split() == record.text.split()
        return Finding("SPF", OK if same else WRONG, record, found,
                       "" if same else f"this server's IP is unknown, so the record cannot be evaluated; {fix}")
    failing = []
    for ip in context.ips:
        result = spf_check.check_mail_from(ip, f"postmaster@{context.domain.name}", context.host, receiver=context.host)
        if result.result != "pass":
            failing.append(f"{ip}: {result.result}")
    if failing:
        return Finding("SPF", WRONG, record, found,
                       f"the SPF record does not let this server send ({', '.join(failing)}); {fix}")
    return Finding("SPF", OK, record, found)


def _check_dkim(record, context):
    what = _what(record)
    selector = what.split(" ", 1)[1]
    key = DKIMKey.objects.filter(domain=context.domain, selector=selector).only("public_key", "state").first()
    found = _txt(record.name)
    keys = [_tags(t).get("p", "") for t in found if "p" in _tags(t)]
    retired = key is not None and key.state == DKIMKey.State.RETIRED
    if not keys:
        if retired:
            return Finding(what, OK, record, found, note="retired and out of DNS: remove it here too")
        return Finding(what, MISSING, record, found, f"publish the TXT record at {record.name}")
    if key is None or key.public_key not in keys:
        return Finding(what, WRONG, record, found, f"the record holds another key: replace it with {record.value}")
    return Finding(what, OK, record, found)


_TAGGED = {  # what: (version tag value, tags that must be there, what each is for)
    "DMARC": ("DMARC1", ("p",), "a policy (p=)"),
    "MTA-STS": ("STSv1", ("id",), "an id"),
    "TLS-RPT": ("TLSRPTv1", ("rua",), "a report address (rua=)"),
}


def _check_tagged(record, what):
    version, required, needs = _TAGGED[what]
    found = [t for t in _txt(record.name) if _tags(t).get("v", "").lower() == version.lower()]
    fix = f"publish the TXT record {record.value} at {record.name}"
    if not found:
        return Finding(what, MISSING, record, found, fix)
    if len(found) > 1:
        return Finding(what, WRONG, record, found, f"keep exactly one {what} record at {record.name}")
    tags = _tags(found[0])
    if not all(tags.get(tag) for tag in required):
        return Finding(what, WRONG, record, found, f"the record needs {needs}; {fix}")
    if what == "MTA-STS" and tags["id"] != _tags(record.text)["id"]:
        return Finding(what, WRONG, record, found,
                       f"the id is not the current policy's: senders keep the old policy; {fix}")
    note = "p=none: receivers only report, they do not act" if what == "DMARC" and tags["p"] == "none" else ""
    return Finding(what, OK, record, found, note=note)


def _check_srv(record, context):
    what = _what(record)
    _, _, port, _ = record.value.split()
    found = _lookup(record.name, "SRV")
    shown = [f"{r.priority} {r.weight} {r.port} {r.target}" for r in found]
    fix = f"publish {record.zone_line(comment=False)}"
    if not found:
        return Finding(what, MISSING, record, shown, fix)
    if all(r.target == dns.name.root for r in found):  # RFC 6186 §3: "." = not offered
        return Finding(what, WRONG, record, shown, f"the record says the service is not offered; {fix}")
    if not any(_host(r.target) == context.host and r.port == int(port) for r in found):
        return Finding(what, WRONG, record, shown, f"no record names {context.host} port {port}; {fix}")
    return Finding(what, OK, record, shown)


def _check_points_here(record, context):
    what = _what(record)
    name = record.name
    fix = f"publish {record.zone_line(comment=False)}"
    try:
        answer = resolver().resolve(name, "A", search=False, lifetime=LOOKUP_SECONDS)
        addresses, canonical = [r.address for r in answer], _host(answer.canonical_name)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        cname = [_host(r.target) for r in _lookup(name, "CNAME")]
        if cname and cname[0] == context.host:
            return Finding(what, OK, record, [f"CNAME {cname[0]}"], note=f"{context.host} has no A record yet")
        addresses, canonical = [r.address for r in _lookup(name, "AAAA")], _host(name)
    except dns.exception.DNSException as error:
        raise LookupFailed(f"{name} A: {error.__class__.__name__}") from None
    shown = ([f"CNAME {canonical}"] if canonical != _host(name) else []) + addresses
    if not addresses:
        return Finding(what, MISSING, record, shown, fix)
    if canonical == context.host or (context.host_addresses and set(addresses) <= set(context.host_addresses)):
        return Finding(what, OK, record, shown)
    return Finding(what, WRONG, record, shown, f"{_host(name)} does not lead to {context.host}; {fix}")


# This server ----------------------------------------------------------------------------


def _check_server(context):
    """Findings about HOST's addresses, each IP's reverse DNS and block-list listings;
    fills context.host_addresses and context.ips for the record checks."""
    findings = []
    try:
        context.host_addresses = [r.address for r in _lookup(context.host, "A")] + [
            r.address for r in _lookup(context.host, "AAAA")
        ]
    except LookupFailed as error:
        findings.append(Finding(f"address of {context.host}", UNKNOWN, fix=f"DNS did not answer ({error})"))
    else:
        findings.append(_check_host_addresses(context))
    context.ips = list(settings.MAILSUITE_PUBLIC_IP) or context.host_addresses
    for ip in context.ips:
        try:
            findings.append(_check_ptr(ip, context))
        except LookupFailed as error:
            findings.append(Finding(f"PTR {ip}", UNKNOWN, fix=f"DNS did not answer ({error}); check again later"))
        findings += _check_blocklists(ip)
    return findings


def _check_host_addresses(context):
    what = f"address of {context.host}"
    public = list(settings.MAILSUITE_PUBLIC_IP)
    if not context.host_addresses:
        ips = ", ".join(public) or "this server's public IP"
        return Finding(what, MISSING, found=[], fix=f"publish A (and AAAA) records for {context.host}: {ips}")
    if public and not set(public) <= set(context.host_addresses):
        return Finding(what, WRONG, found=context.host_addresses,
                       fix=f"{context.host} should resolve to {', '.join(public)} (MAILSUITE_PUBLIC_IP)")
    return Finding(what, OK, found=context.host_addresses)


def _check_ptr(ip, context):
    what = f"PTR {ip}"
    names = [_host(r.target) for r in _lookup(dns.reversename.from_address(ip), "PTR")]
    fix = f"ask whoever provides {ip} (the hosting provider) to set its reverse DNS to {context.host}"
    if not names:
        return Finding(what, MISSING, found=[], fix=fix)
    if context.host not in names:
        return Finding(what, WRONG, found=names, fix=f"the PTR names another host; {fix}")
    rtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
    forward = [r.address for r in _lookup(context.host, rtype)]
    if ip not in forward:
        return Finding(what, WRONG, found=names,
                       fix=f"{context.host} does not resolve back to {ip}: add it to its {rtype} records")
    return Finding(what, OK, found=names)


def _check_blocklists(ip):
    listed = {listing.zone for listing in dnsbl.listings(ip, "")}
    return [
        Finding(
            f"block list {zone} for {ip}", WRONG if zone in listed else OK,
            found=["listed"] if zone in listed else [],
            fix=f"{ip} is listed on {zone}: find out why (an open relay, a compromised account?), "
                f"fix it, then ask {zone} to delist it" if zone in listed else "",
        )
        for zone, _ in settings.MAILSUITE_DNSBL_ZONES
    ]


def as_dict(report):
    """The report as plain data (for the API and JSON output)."""
    def finding(f):
        return {
            "what": f.what, "status": f.status, "found": f.found, "fix": f.fix, "note": f.note,
            "record": None if f.record is None else {
                "name": f.record.name, "type": f.record.type, "value": f.record.value, "comment": f.record.comment,
            },
        }
    return {
        "domain": report.domain, "hostname": report.hostname, "ok": report.ok,
        "records": [finding(f) for f in report.records], "server": [finding(f) for f in report.server],
    }


def table_rows(report):
    """[[status, what, detail]] for a terminal: the fix for a problem, else what DNS has."""
    rows = []
    for f in report.findings:
        found = ", ".join(text if len(text) <= 60 else text[:59] + "…" for text in f.found)  # DKIM keys are long
        detail = f.fix if not f.ok else "; ".join(filter(None, [found, f.note]))
        rows.append([f.status.upper() if not f.ok else "ok", f.what, detail])
    return rows


def domain_report(name, *, hostname=None):
    """The check of the domain called `name` as plain data: what an API endpoint returns
    (accounts.errors.NotFound for a domain not served here)."""
    from accounts import actions

    return as_dict(check(actions.get_domain(name), hostname=hostname))


def server_findings(*, hostname=None):
    """The findings about this server alone (its name, reverse DNS, block lists)."""
    host = _host(dns_records_host(hostname or settings.MAILSUITE_HOSTNAME))
    return _check_server(_Context(domain=None, host=host))


def dns_records_host(hostname):
    """`hostname` as it goes in DNS; InvalidInput when it cannot (e.g. "localhost")."""
    try:
        return normalize_domain(hostname)
    except AddressError as error:
        raise InvalidInput(
            f"the server name {hostname!r} cannot go in DNS ({error}); set MAILSUITE_HOSTNAME to its public name"
        ) from None
