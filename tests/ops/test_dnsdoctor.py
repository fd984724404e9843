"""The DNS doctor against a real DNS server on loopback: a zone published exactly as the
doctor asks, then with records missing, then with each one wrong."""
import pytest

from ops import dnsdoctor
from tests.dnsserver import DNSServer

HOST = "mail.example.test"
IP = "127.0.0.2"
PTR_NAME = "2.0.0.127.in-addr.arpa"


@pytest.fixture
def dns(settings):
    with DNSServer({}, ttl=0) as server:
        settings.MAILSUITE_DNS_SERVERS = [server.address]
        yield server


@pytest.fixture
def served(domain, settings):
    from mta import dkim

    settings.MAILSUITE_HOSTNAME = HOST
    settings.MAILSUITE_MTA_STS_MODE = "enforce"
    settings.MAILSUITE_DNSBL_ZONES = (("bl.test", 10),)
    settings.MAILSUITE_SMTPS_PORT, settings.MAILSUITE_SUBMISSION_PORT = 465, 587
    settings.MAILSUITE_IMAPS_PORT, settings.MAILSUITE_IMAP_PORT = 993, 143
    settings.MAILSUITE_POP3S_PORT, settings.MAILSUITE_POP3_PORT = 995, 110
    if not domain.dkim_keys.exists():
        dkim.rotate(domain)
    return domain


def publish(dns, records):
    """Put `records` (mta.dns_records.Record) in the DNS server, as an operator would."""
    by_name = {}
    for record in records:
        value = record.text if record.type == "TXT" else record.value
        by_name.setdefault((record.name, record.type), []).append(value)
    for (name, rtype), values in by_name.items():
        dns.set(name, rtype, values)


@pytest.fixture
def right(dns, served):
    publish(dns, dnsdoctor.records(served))
    dns.set(HOST, "A", [IP])
    dns.set(PTR_NAME, "PTR", [HOST + "."])
    dns.set("bl.test", "TXT", ["a block list with nobody listed"])
    return dns


def statuses(report):
    return {finding.what: finding.status for finding in report.findings}


def test_it_lists_every_record_a_domain_needs(served):
    lines = [record.zone_line(comment=False) for record in dnsdoctor.records(served)]
    [rsa, ed] = [line for line in lines if "._domainkey." in line]
    assert lines == [
        "example.test. 3600 IN MX 10 mail.example.test.",
        'example.test. 3600 IN TXT "v=spf1 mx a:mail.example.test -all"',
        rsa,
        ed,
        '_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"',
        lines[5],
        "mta-sts.example.test. 3600 IN CNAME mail.example.test.",
        '_smtp._tls.example.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.test"',
        "_submissions._tcp.example.test. 3600 IN SRV 0 1 465 mail.example.test.",
        "_submission._tcp.example.test. 3600 IN SRV 10 1 587 mail.example.test.",
        "_imaps._tcp.example.test. 3600 IN SRV 0 1 993 mail.example.test.",
        "_imap._tcp.example.test. 3600 IN SRV 10 1 143 mail.example.test.",
        "_pop3s._tcp.example.test. 3600 IN SRV 20 1 995 mail.example.test.",
        "_pop3._tcp.example.test. 3600 IN SRV 30 1 110 mail.example.test.",
        "autoconfig.example.test. 3600 IN CNAME mail.example.test.",
        "autodiscover.example.test. 3600 IN CNAME mail.example.test.",
        "_autodiscover._tcp.example.test. 3600 IN SRV 0 1 443 mail.example.test.",
    ]
    assert lines[5].startswith('_mta-sts.example.test. 3600 IN TXT "v=STSv1; id=')


def test_it_leaves_out_mta_sts_while_it_is_off(served, settings):
    settings.MAILSUITE_MTA_STS_MODE = "off"
    names = [record.name for record in dnsdoctor.records(served)]
    assert "_mta-sts.example.test." not in names and "mta-sts.example.test." not in names


def test_it_finds_a_zone_published_as_asked_all_right(right, served):
    report = dnsdoctor.check(served)

    assert [(f.what, f.status, f.fix) for f in report.problems] == []
    assert report.ok
    assert statuses(report) == {
        "address of mail.example.test": "ok", f"PTR {IP}": "ok", f"block list bl.test for {IP}": "ok",
        "MX": "ok", "SPF": "ok", **{f"DKIM {s}": "ok" for s in dkim_selectors(served)}, "DMARC": "ok",
        "MTA-STS": "ok", "mta-sts": "ok", "TLS-RPT": "ok",
        "SRV _submissions._tcp": "ok", "SRV _submission._tcp": "ok", "SRV _imaps._tcp": "ok",
        "SRV _imap._tcp": "ok", "SRV _pop3s._tcp": "ok", "SRV _pop3._tcp": "ok",
        "autoconfig": "ok", "autodiscover": "ok", "SRV _autodiscover._tcp": "ok",
    }


def dkim_selectors(domain):
    return sorted(domain.dkim_keys.values_list("selector", flat=True))


def test_it_accepts_addresses_instead_of_cnames_and_other_mx_hosts_beside_ours(right, served):
    right.remove("autoconfig.example.test")
    right.set("autoconfig.example.test", "A", [IP])
    right.set("example.test", "MX", [(5, "backup.example.net"), (10, HOST)])

    report = dnsdoctor.check(served)

    assert statuses(report)["autoconfig"] == "ok" and statuses(report)["MX"] == "ok"


def test_it_says_what_is_missing_and_what_to_publish(dns, served):
    dns.set(HOST, "A", [IP])

    report = dnsdoctor.check(served)

    assert {f.what: f.status for f in report.server} == {
        "address of mail.example.test": "ok", f"PTR {IP}": "missing", f"block list bl.test for {IP}": "ok",
    }
    assert {f.status for f in report.records} == {"missing"}
    by_what = {f.what: f for f in report.findings}
    assert by_what["MX"].fix.startswith("publish example.test. 3600 IN MX 10 mail.example.test.")
    assert by_what["DMARC"].fix == (
        'publish the TXT record "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test" at _dmarc.example.test.'
    )
    assert by_what[f"PTR {IP}"].fix == (
        f"ask whoever provides {IP} (the hosting provider) to set its reverse DNS to {HOST}"
    )


def test_it_says_what_is_wrong_and_how_to_fix_it(right, served, settings):
    right.set("example.test", "MX", [(10, "mx.elsewhere.test")])
    right.set("example.test", "TXT", ["v=spf1 ip4:192.0.2.1 -all"])
    rsa = served.dkim_keys.get(algorithm="rsa-sha256")
    right.set(f"{rsa.selector}._domainkey.example.test", "TXT", ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC"])
    right.set("_dmarc.example.test", "TXT", ["v=DMARC1; rua=mailto:postmaster@example.test"])
    right.set("_mta-sts.example.test", "TXT", ["v=STSv1; id=20240101"])
    right.set("_imaps._tcp.example.test", "SRV", ["0 1 2993 mail.example.test."])
    right.set("_pop3._tcp.example.test", "SRV", ["0 0 0 ."])
    right.remove("autoconfig.example.test")
    right.set("autoconfig.example.test", "A", ["192.0.2.80"])
    right.set(PTR_NAME, "PTR", ["host-2.provider.test."])
    right.set("2.0.0.127.bl.test", "A", ["127.0.0.2"])

    report = dnsdoctor.check(served)

    wrong = {f.what: f.fix for f in report.findings if f.status == "wrong"}
    assert wrong == {
        "MX": "the MX records do not name mail.example.test; publish example.test. 3600 IN MX 10 mail.example.test.",
        "SPF": 'the SPF record does not let this server send (127.0.0.2: fail); publish the TXT record '
               '"v=spf1 mx a:mail.example.test -all"',
        f"DKIM {rsa.selector}": wrong[f"DKIM {rsa.selector}"],
        "DMARC": wrong["DMARC"],
        "MTA-STS": wrong["MTA-STS"],
        "SRV _imaps._tcp": "no record names mail.example.test port 993; publish "
                           "_imaps._tcp.example.test. 3600 IN SRV 0 1 993 mail.example.test.",
        "SRV _pop3._tcp": wrong["SRV _pop3._tcp"],
        "autoconfig": "autoconfig.example.test does not lead to mail.example.test; publish "
                      "autoconfig.example.test. 3600 IN CNAME mail.example.test.",
        f"PTR {IP}": f"the PTR names another host; ask whoever provides {IP} (the hosting provider) "
                     f"to set its reverse DNS to {HOST}",
        f"block list bl.test for {IP}": f"{IP} is listed on bl.test: find out why (an open relay, a compromised "
                                         "account?), fix it, then ask bl.test to delist it",
    }
    assert wrong[f"DKIM {rsa.selector}"].startswith("the record holds another key: replace it with \"v=DKIM1; k=rsa; p=")
    assert wrong["DMARC"].startswith("the record needs a policy (p=)")
    assert wrong["MTA-STS"].startswith("the id is not the current policy's")
    assert wrong["SRV _pop3._tcp"].startswith("the record says the service is not offered")
    assert {f.what: f.found for f in report.findings}["MX"] == ["10 mx.elsewhere.test."]


def test_it_checks_the_configured_public_ip_rather_than_what_the_name_resolves_to(right, served, settings):
    settings.MAILSUITE_PUBLIC_IP = ("127.0.0.3",)

    found = statuses(dnsdoctor.check(served))

    assert found["address of mail.example.test"] == "wrong"
    assert found["PTR 127.0.0.3"] == "missing"
    assert found["SPF"] == "wrong"


def test_it_says_unknown_when_dns_does_not_answer(right, served):
    right.fail("_dmarc.example.test")
    right.fail(PTR_NAME)

    report = dnsdoctor.check(served)

    found = statuses(report)
    assert (found["DMARC"], found[f"PTR {IP}"]) == ("unknown", "unknown")
    assert {f.what: f.fix for f in report.findings}["DMARC"].startswith("DNS did not answer (_dmarc.example.test. TXT")


def run_check(*args):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("domain", "check", *args, stdout=out, stderr=err)
    except CommandError as error:
        return 1, out.getvalue(), str(error)
    return 0, out.getvalue(), err.getvalue()


def test_the_domain_check_command_prints_each_finding_and_fails_on_a_problem(right, served):
    status, out, _ = run_check("example.test")
    assert status == 0
    assert out.splitlines()[0].split() == ["ok", "MX", "10", "mail.example.test."]
    assert len(out.splitlines()) == len(dnsdoctor.check(served).findings)

    right.remove("_dmarc.example.test")
    status, out, error = run_check("example.test")
    assert status == 1
    assert error == "1 problem in the DNS of example.test"
    [line] = [line for line in out.splitlines() if line.startswith("MISSING")]
    assert line.split(None, 2) == [
        "MISSING", "DMARC",
        'publish the TXT record "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test" at _dmarc.example.test.',
    ]


def test_the_domain_check_command_refuses_an_unknown_domain(db):
    status, _, error = run_check("nowhere.test")
    assert status == 1 and "nowhere.test" in error


def test_the_api_gets_the_report_as_plain_data(right, served):
    data = dnsdoctor.domain_report("example.test")

    assert data["ok"] is True and data["hostname"] == HOST
    mx = data["records"][0]
    assert mx == {
        "what": "MX", "status": "ok", "found": ["10 mail.example.test."], "fix": "", "note": "",
        "record": {"name": "example.test.", "type": "MX", "value": "10 mail.example.test.",
                   "comment": "mail for the domain comes to this server"},
    }
