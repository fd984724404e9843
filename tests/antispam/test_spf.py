"""SPF (RFC 7208) over the loopback DNS: one row per result, include chains and the limits."""
import time

import pytest

from antispam import spf_check
from antispam.spf_check import check_helo, check_mail_from

IP = "192.0.2.10"

ZONE = {
    "pass.test": "v=spf1 ip4:192.0.2.0/24 -all",
    "fail.test": "v=spf1 ip4:198.51.100.1 -all",
    "softfail.test": "v=spf1 ~all",
    "neutral.test": "v=spf1 ?all",
    "nospf.test": "some other text",
    "bad.test": "v=spf1 ip4:192.0.2.300 -all",
    "two.test": ["v=spf1 -all", "v=spf1 +all"],
    "chain.test": "v=spf1 include:middle.test -all",
    "middle.test": "v=spf1 include:inner.test -all",
    "inner.test": "v=spf1 ip4:192.0.2.10 -all",
    "amx.test": "v=spf1 a:host.amx.test mx -all",
    "void.test": "v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test ip4:192.0.2.10 -all",
    "eleven.test": "v=spf1 " + " ".join(f"a:h{n}.eleven.test" for n in range(11)) + " ip4:192.0.2.10 -all",
    "redirect.test": "v=spf1 redirect=pass.test",
    "macro.test": "v=spf1 exists:%{l}.users.macro.test -all",
    "helo.test": "v=spf1 ip4:192.0.2.10 -all",
}


@pytest.fixture(autouse=True)
def spf_zone(dns_server):
    for name, value in ZONE.items():
        dns_server.set(name, "TXT", value if isinstance(value, list) else [value])
    dns_server.set("host.amx.test", "A", ["198.51.100.7"])
    dns_server.set("amx.test", "MX", [(10, "mx.amx.test")])
    dns_server.set("mx.amx.test", "A", [IP])
    for n in range(11):
        dns_server.set(f"h{n}.eleven.test", "A", ["198.51.100.9"])
    dns_server.set("bob.users.macro.test", "A", ["127.0.0.2"])
    dns_server.set("temp.test", "TXT", ["v=spf1 -all"])
    dns_server.fail("temp.test")
    return dns_server


@pytest.mark.parametrize(
    "sender, expected",
    [
        ("a@pass.test", "pass"),
        ("a@fail.test", "fail"),
        ("a@softfail.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@nospf.test", "none"),
        ("a@nothing-here.test", "none"),  # NXDOMAIN
        ("a@bad.test", "permerror"),  # a malformed mechanism
        ("a@two.test", "permerror"),  # RFC 7208 §4.5: more than one record
        ("a@chain.test", "pass"),  # include → include → ip4
        ("a@amx.test", "pass"),  # a: misses, mx matches
        ("a@void.test", "permerror"),  # RFC 7208 §4.6.4: a third void lookup
        ("a@eleven.test", "permerror"),  # RFC 7208 §4.6.4: an eleventh DNS mechanism
        ("a@redirect.test", "pass"),
        ("bob@macro.test", "pass"),  # RFC 7208 §7: %{l} expands to the local part
        ("eve@macro.test", "fail"),
        ("a@temp.test", "temperror"),  # SERVFAIL
    ],
)
def test_it_evaluates_the_mail_from_identity(sender, expected):
    result = check_mail_from(IP, sender, "client.example", receiver="mx.example.test")
    assert (result.result, result.identity, result.domain) == (expected, "mailfrom", sender.split("@")[1])


def test_it_checks_helo_and_uses_it_for_the_null_sender():
    assert check_helo(IP, "helo.test", receiver="mx.example.test").result == "pass"
    result = check_mail_from(IP, "", "helo.test", receiver="mx.example.test")
    assert (result.result, result.identity, result.domain) == ("pass", "helo", "helo.test")


@pytest.mark.parametrize("helo", ["[192.0.2.10]", "192.0.2.10", "localhost", ""])
def test_it_cannot_check_a_helo_that_is_no_domain_name(helo):
    assert check_helo(IP, helo, receiver="mx.example.test").result == "none"


# --- Results kept while their DNS answers are valid ----------------------------------------------


@pytest.fixture
def evaluations(monkeypatch):
    """How many times pyspf evaluated a record; the kept results start empty."""
    made = []

    class Counted(spf_check.spf.query):
        def check(self, *args, **kwargs):
            made.append(self.s)
            return super().check(*args, **kwargs)

    monkeypatch.setattr(spf_check.spf, "query", Counted)
    spf_check._results.clear()
    yield made
    spf_check._results.clear()


def test_a_result_is_kept_while_its_answers_are_valid_and_evaluated_again_after(spf_zone, evaluations):
    spf_zone.ttl = 1

    def both(ip=IP):
        return (check_mail_from(ip, "sam@chain.test", "nothing.test", receiver="mx.test"),
                check_helo(ip, "nothing.test", receiver="mx.test"))  # a HELO name without records

    first = both()
    assert [r.result for r in first] == ["pass", "none"] and len(evaluations) == 2
    assert both() == first and len(evaluations) == 2  # both kept, the "none" too (the SOA's TTL)
    assert both("192.0.2.11")[0].result == "fail" and len(evaluations) == 4  # another client: its own
    spf_zone.set("inner.test", "TXT", ["v=spf1 -all"])
    time.sleep(1.2)  # the answers expire, and so do the results
    assert both()[0].result == "fail" and len(evaluations) == 6


def test_nothing_is_kept_without_a_lifetime_or_after_a_dns_failure(spf_zone, evaluations):
    # Answers with TTL 0 (this server's default) are good for one look only.
    assert check_mail_from(IP, "sam@pass.test", "helo.test", receiver="mx.test").result == "pass"
    spf_zone.set("pass.test", "TXT", ["v=spf1 -all"])
    assert check_mail_from(IP, "sam@pass.test", "helo.test", receiver="mx.test").result == "fail"
    spf_zone.ttl = 60
    assert check_mail_from(IP, "sam@temp.test", "helo.test", receiver="mx.test").result == "temperror"
    spf_zone.fail("temp.test", False)
    assert check_mail_from(IP, "sam@temp.test", "helo.test", receiver="mx.test").result == "fail"
    assert len(evaluations) == 4
