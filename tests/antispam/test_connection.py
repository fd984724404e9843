"""Reverse DNS and HELO sanity (antispam.connection): pure HELO rules, reverse DNS over the
loopback DNS server, and the findings reaching the message's score over a real SMTP session."""
import smtplib

import pytest

from antispam import checks, connection
from tests.antispam.conftest import ALLOWED_IP, STRANGER_IP, message

smtp_session = pytest.mark.django_db(transaction=True)


def names(rules):
    return [r.name for r in rules]


@pytest.mark.parametrize("helo, found", [
    ("mail.sender.test", []),
    ("mail.sender.test.", []),
    ("[192.0.2.1]", []),
    ("[IPv6:2001:db8::1]", []),
    ("192.0.2.1", ["HELO_BARE_IP"]),
    ("2001:db8::1", ["HELO_BARE_IP"]),
    ("mx.example.test", ["HELO_OURS"]),
    ("MX.Example.Test", ["HELO_OURS"]),
    ("[198.51.100.25]", ["HELO_OURS"]),
    ("198.51.100.25", ["HELO_BARE_IP", "HELO_OURS"]),
    ("example.test", ["HELO_OURS"]),  # one of our domains
    ("localhost", ["HELO_NOT_FQDN"]),
    ("WIN-7Q2B3", ["HELO_NOT_FQDN"]),
    ("my_pc.local.test", ["HELO_NOT_FQDN"]),
    ("host.123", ["HELO_NOT_FQDN"]),  # a numeric top-level label is no domain
    ("", ["HELO_NOT_FQDN"]),
])
def test_helo_rules(helo, found):
    assert names(connection.helo_rules(
        helo, our_hostname="mx.example.test", our_addresses=("198.51.100.25",),
        is_our_domain=lambda name: name == "example.test",
    )) == found


@pytest.fixture
def reverse_zone(dns_server):
    dns_server.set("2.0.0.127.in-addr.arpa", "PTR", ["mail.sender.test"])  # mail.sender.test A 127.0.0.2
    dns_server.set("4.0.0.127.in-addr.arpa", "PTR", ["liar.test"])  # no A record back
    dns_server.set("5.0.0.127.in-addr.arpa", "PTR", ["slow.test"])
    dns_server.set("6.0.0.127.in-addr.arpa", "PTR", ["elsewhere.test", "host6.sender.test"])
    dns_server.set("host6.sender.test", "A", ["127.0.0.6"])
    dns_server.set("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", ["v6.sender.test"])
    dns_server.set("v6.sender.test", "AAAA", ["2001:db8::1"])
    dns_server.fail("slow.test")
    dns_server.fail("7.0.0.127.in-addr.arpa")
    return dns_server


@pytest.mark.parametrize("ip, result", [
    ("127.0.0.2", ("pass", "mail.sender.test")),
    ("127.0.0.3", ("none", "")),  # no PTR at all
    ("127.0.0.4", ("unconfirmed", "")),
    ("127.0.0.5", ("temperror", "")),  # the forward lookup fails
    ("127.0.0.6", ("pass", "host6.sender.test")),  # the second name confirms
    ("127.0.0.7", ("temperror", "")),  # the PTR lookup fails
    ("2001:db8::1", ("pass", "v6.sender.test")),
])
def test_reverse_dns(reverse_zone, ip, result):
    assert connection.reverse_dns(ip) == result


@pytest.fixture
def check_loopback(monkeypatch):
    monkeypatch.setattr(connection, "CHECK_LOOPBACK", True)


@pytest.mark.django_db
def test_check_adds_up_helo_and_reverse_dns(reverse_zone, check_loopback, domain):
    check = connection.check
    assert names(check("127.0.0.2", "mail.sender.test", our_hostname="mx.example.test")) == []
    assert names(check("127.0.0.3", "127.0.0.3", our_hostname="mx.example.test")) == ["HELO_BARE_IP", "RDNS_NONE"]
    ours = connection.is_local_domain("example.test")
    assert names(check("127.0.0.4", "example.test", our_hostname="mx.example.test", helo_is_ours=ours)) == [
        "HELO_OURS", "RDNS_UNCONFIRMED",
    ]
    assert names(check("127.0.0.5", "localhost", our_hostname="mx.example.test")) == ["HELO_NOT_FQDN"]  # DNS down: no score


@pytest.mark.django_db
def test_loopback_clients_are_not_checked_unless_asked(reverse_zone, domain):
    assert connection.check("127.0.0.3", "localhost", our_hostname="mx.example.test") == []


@pytest.fixture
def seen_rules(monkeypatch):
    """The connection rules antispam.checks receives for each message (a spy: the checks run).
    Only runs that finish count: one that stops at a lookup starts over in a thread."""
    seen = []
    original = checks.check_message

    def spy(content, **kwargs):
        outcome = original(content, **kwargs)
        seen.append(names(kwargs.get("connection_rules", ())))
        return outcome

    monkeypatch.setattr(checks, "check_message", spy)
    return seen


def send(server, *, source, helo, rcpts=1):
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname=helo, timeout=30, source_address=(source, 0))
    try:
        client.ehlo()
        for _ in range(rcpts):
            assert client.mail("sam@sender.test")[0] == 250
            assert client.rcpt("alice@example.test")[0] == 250
            code, _ = client.data(message())
            assert code == 250
    finally:
        client.close()


@smtp_session
def test_findings_reach_the_score_of_the_message(reverse_zone, check_loopback, seen_rules, smtp_server, alice):
    send(smtp_server, source=ALLOWED_IP, helo="mail.sender.test")
    send(smtp_server, source=ALLOWED_IP, helo="mx.example.test", rcpts=2)  # checked once, used twice
    assert seen_rules == [[], ["HELO_OURS"], ["HELO_OURS"]]
    lookups = [q for q in reverse_zone.queries if q == ("2.0.0.127.in-addr.arpa", "PTR")]
    assert len(lookups) == 2


@pytest.mark.django_db
def test_is_local_domain(domain):
    assert connection.is_local_domain("example.test")
    assert connection.is_local_domain("EXAMPLE.test.")
    assert not connection.is_local_domain("sender.test")
    assert not connection.is_local_domain("[127.0.0.1]")
    assert not connection.is_local_domain("")


@pytest.mark.django_db
def test_whether_a_helo_name_is_ours_is_remembered_until_a_domain_changes(django_assert_num_queries):
    from accounts import actions
    from antispam import lookups

    lookups.forget()
    assert connection.known_local_domain("new.test") is None  # not known without the database
    assert connection.known_local_domain("localhost") is False  # no domain name: never ours
    assert not connection.is_local_domain("new.test")
    with django_assert_num_queries(0):
        assert connection.known_local_domain("new.test") is False and not connection.is_local_domain("new.test")
    actions.create_domain("new.test")  # forgotten at once in the process that made it
    assert connection.known_local_domain("new.test") is None and connection.is_local_domain("new.test")


@smtp_session
def test_helo_claiming_one_of_our_domains_scores(reverse_zone, check_loopback, seen_rules, smtp_server, alice):
    send(smtp_server, source=ALLOWED_IP, helo="example.test")
    assert seen_rules == [["HELO_OURS"]]


@smtp_session
def test_helo_claiming_our_address_scores(reverse_zone, check_loopback, seen_rules, smtp_server, alice):
    send(smtp_server, source=ALLOWED_IP, helo="[127.0.0.1]")  # the address the client connected to
    assert seen_rules == [["HELO_OURS"]]


@pytest.mark.django_db
def test_the_findings_are_rules_of_the_outcome(reverse_zone, check_loopback):
    outcome = checks.check_message(
        message(), client_ip=STRANGER_IP, helo="x", mail_from="sam@sender.test",
        connection_rules=connection.check(STRANGER_IP, "x", our_hostname="mx.example.test"),
    )
    assert {"HELO_NOT_FQDN", "RDNS_NONE"} <= {r.name for r in outcome.rules}


# iprev (RFC 8601 §2.7.3) ------------------------------------------------------------------


@pytest.mark.parametrize("ip, method", [
    ("127.0.0.2", "iprev=pass (mail.sender.test) policy.iprev=127.0.0.2"),
    ("127.0.0.3", "iprev=fail (no PTR record) policy.iprev=127.0.0.3"),
    ("127.0.0.4", "iprev=fail (no PTR name resolves back to the address) policy.iprev=127.0.0.4"),
    ("127.0.0.7", "iprev=temperror (DNS lookup failed) policy.iprev=127.0.0.7"),
    # An IPv6 address is no RFC 2045 token (":" is a tspecial): RFC 8601's pvalue quotes it.
    ("2001:db8::1", 'iprev=pass (v6.sender.test) policy.iprev="2001:db8::1"'),
])
def test_assess_reports_iprev(reverse_zone, check_loopback, ip, method):
    rules, iprev = connection.assess(ip, "mail.sender.test", our_hostname="mx.example.test")
    assert iprev.method() == method


def test_loopback_clients_get_no_iprev_unless_asked(reverse_zone):
    assert connection.assess("127.0.0.2", "mail.sender.test", our_hostname="mx.example.test") == ([], None)


def our_results(account):
    from mailstore.models import Message
    from mta.headers import field_values
    from tests.conftest import message_bytes

    raw = message_bytes(Message.objects.get(folder__account=account))
    return [v for v in field_values(raw, "Authentication-Results") if v.startswith("mx.example.test;")]


@smtp_session
def test_iprev_goes_into_authentication_results(reverse_zone, check_loopback, smtp_server, alice):
    send(smtp_server, source=ALLOWED_IP, helo="mail.sender.test")
    [header] = our_results(alice)
    assert header.startswith("mx.example.test;\tiprev=pass (mail.sender.test) policy.iprev=127.0.0.2;")
    from antispam.models import Verdict

    assert Verdict.objects.get(account=alice).results["iprev"] == "pass"
