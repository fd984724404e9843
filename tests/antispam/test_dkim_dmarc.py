"""DKIM verification rows and DMARC policy and alignment, over the loopback DNS."""
import pytest

from antispam import dkim_check, dmarc
from antispam.spf_check import SPFResult
from tests.antispam.conftest import message, sign_ed25519, sign_rsa


def verify(raw):
    return [(r.result, r.domain, r.selector) for r in dkim_check.verify_all(raw)]


def test_it_verifies_rsa_and_ed25519_signatures_each():
    raw = sign_ed25519(sign_rsa(message()))
    assert verify(raw) == [("pass", "sender.test", "ed"), ("pass", "sender.test", "rsa")]


def test_it_fails_a_changed_body():
    raw = sign_rsa(message()).replace(b"are in", b"are IN")
    assert verify(raw) == [("fail", "sender.test", "rsa")]


def test_it_fails_a_changed_signed_header():
    raw = sign_rsa(message()).replace(b"Subject: Quarterly", b"Subject: Yearly")
    assert verify(raw) == [("fail", "sender.test", "rsa")]


def test_it_fails_a_revoked_key():
    assert verify(sign_rsa(message(), selector=b"revoked")) == [("fail", "sender.test", "revoked")]


def test_it_is_a_permerror_without_a_key_record():
    assert verify(sign_rsa(message(), selector=b"gone")) == [("permerror", "sender.test", "gone")]


def test_it_is_a_temperror_when_the_key_lookup_fails(dns_server):
    dns_server.fail("rsa._domainkey.sender.test")
    assert verify(sign_rsa(message())) == [("temperror", "sender.test", "rsa")]


def test_it_verifies_only_the_signed_length_of_an_l_signature():
    # l= lets anyone append to the body (RFC 6376 §8.2): the signature still verifies,
    # which is why our signer never uses it. The result must say pass, not crash.
    raw = sign_rsa(message(), length=True) + b"Appended by someone else.\r\n"
    assert verify(raw) == [("pass", "sender.test", "rsa")]


def test_it_has_no_results_for_an_unsigned_message():
    assert verify(message()) == []


def test_a_message_signed_by_a_mailsuite_node_verifies(dns_server, db):
    from accounts.actions import create_domain
    from mta import dkim, dns_records

    domain = create_domain("node.test")
    dkim.ensure_keys(domain)
    for record in dns_records.records_for(domain, hostname="mx.node.test"):
        if "_domainkey" in record.name:
            dns_server.set(record.name, "TXT", [record.text])
    raw = message(author="n@node.test")
    signed = dkim.sign(raw, mail_from="n@node.test", from_domain="node.test") + raw
    assert [r.result for r in dkim_check.verify_all(signed)] == ["pass", "pass"]


@pytest.mark.parametrize(
    "domain, from_domain, mode, expected",
    [
        ("sender.test", "sender.test", "s", True),
        ("mail.sender.test", "sender.test", "s", False),
        ("mail.sender.test", "sender.test", "r", True),
        ("sender.test", "news.sender.test", "r", True),
        ("other.test", "sender.test", "r", False),
        ("a.example.co.uk", "b.example.co.uk", "r", True),
        ("example.co.uk", "other.co.uk", "r", False),  # co.uk is a public suffix
    ],
)
def test_alignment(domain, from_domain, mode, expected):
    assert dmarc.aligned(domain, from_domain, mode) is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("v=DMARC1; p=reject", dmarc.Record("reject", "reject")),
        ("v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=20", dmarc.Record("quarantine", "none", "s", "s", 20)),
        ("v=DMARC1; p=bogus; rua=mailto:d@example.test", dmarc.Record("none", "none")),
        ("v=DMARC1; p=none; pct=400", dmarc.Record("none", "none", pct=100)),
    ],
)
def test_it_parses_records(text, expected):
    assert dmarc.parse_record(text) == expected


@pytest.mark.parametrize("text", ["p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1; p=bogus", "v=DMARC1; junk"])
def test_it_refuses_malformed_records(text):
    with pytest.raises(dmarc.InvalidRecord):
        dmarc.parse_record(text)


SPF_PASS = SPFResult("pass", "mailfrom", "sender.test")
SPF_SUB = SPFResult("pass", "mailfrom", "bounces.sender.test")
SPF_FAIL = SPFResult("fail", "mailfrom", "sender.test")


@pytest.mark.parametrize(
    "record, spf, expected",
    [
        ("v=DMARC1; p=reject", SPF_PASS, ("pass", "reject", "none")),
        ("v=DMARC1; p=reject", SPF_SUB, ("pass", "reject", "none")),  # relaxed SPF alignment
        ("v=DMARC1; p=reject; aspf=s", SPF_SUB, ("fail", "reject", "reject")),
        ("v=DMARC1; p=reject", SPF_FAIL, ("fail", "reject", "reject")),
        ("v=DMARC1; p=quarantine", SPF_FAIL, ("fail", "quarantine", "quarantine")),
        ("v=DMARC1; p=none", SPF_FAIL, ("fail", "none", "none")),
        ("v=DMARC1; p=reject; pct=60", SPF_FAIL, ("fail", "reject", "reject")),  # sampler 0.5 < 0.6
        ("v=DMARC1; p=reject; pct=40", SPF_FAIL, ("fail", "reject", "quarantine")),
        ("v=DMARC1; p=quarantine; pct=0", SPF_FAIL, ("fail", "quarantine", "none")),
    ],
)
def test_policy_and_disposition(dns_server, record, spf, expected):
    dns_server.set("_dmarc.sender.test", "TXT", [record])
    result = dmarc.evaluate("sender.test", spf=spf, dkim_results=[])
    assert (result.result, result.policy, result.disposition) == expected


def test_dkim_alignment_strict_and_relaxed(dns_server):
    sub_signature = dkim_check.DKIMResult("pass", "mail.sender.test", "s", "rsa-sha256", "x")
    assert dmarc.evaluate("sender.test", spf=SPF_FAIL, dkim_results=[sub_signature]).result == "pass"
    dns_server.set("_dmarc.sender.test", "TXT", ["v=DMARC1; p=reject; adkim=s"])
    assert dmarc.evaluate("sender.test", spf=SPF_FAIL, dkim_results=[sub_signature]).result == "fail"


def test_subdomains_use_sp_from_the_organisational_domain_and_their_own_record_first(dns_server):
    result = dmarc.evaluate("news.org.test", spf=SPF_FAIL, dkim_results=[])
    assert (result.policy, result.disposition) == ("reject", "reject")
    dns_server.set("_dmarc.news.org.test", "TXT", ["v=DMARC1; p=quarantine"])
    assert dmarc.evaluate("news.org.test", spf=SPF_FAIL, dkim_results=[]).policy == "quarantine"
    assert dmarc.evaluate("org.test", spf=SPF_FAIL, dkim_results=[]).policy == "none"


def test_none_and_temperror(dns_server):
    assert dmarc.evaluate("nowhere.test", spf=SPF_FAIL, dkim_results=[]).result == "none"
    dns_server.set("_dmarc.twice.test", "TXT", ["v=DMARC1; p=reject", "v=DMARC1; p=none"])
    assert dmarc.evaluate("twice.test", spf=SPF_FAIL, dkim_results=[]).result == "none"
    dns_server.fail("_dmarc.sender.test")
    assert dmarc.evaluate("sender.test", spf=SPF_FAIL, dkim_results=[]).result == "temperror"
