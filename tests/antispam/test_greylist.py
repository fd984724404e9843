"""Greylisting: the triplet policy on a fast test clock, then real SMTP sessions (smtplib)
against the MX port with greylisting turned on for example.test."""
import smtplib
from datetime import datetime, timedelta, timezone

import pytest

from antispam import greylist, inbound_policy
from mta import actions
from mta.models import GreylistAllowedNetwork, GreylistTriplet, QueuedMessage, QueuedRecipient
from tests.antispam.conftest import ALLOWED_IP, STRANGER_IP, message
from tests.conftest import PASSWORD, inbox

START = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def clock(monkeypatch, settings):
    settings.MAILSUITE_GREYLIST_DELAY = 300
    settings.MAILSUITE_GREYLIST_RETRY_WINDOW = 2 * 86400
    settings.MAILSUITE_GREYLIST_ALLOW_DAYS = 35
    settings.MAILSUITE_GREYLIST_SKIP_NETWORKS = ()
    monkeypatch.setattr(inbound_policy, "TTL", 0)  # every RCPT sees the policy as just saved
    fake = Clock()
    monkeypatch.setattr(greylist, "clock", fake)
    yield fake
    inbound_policy.forget()  # the SMTP server's copy of this test's policies goes with them


@pytest.mark.parametrize("ip, network", [
    ("192.0.2.77", "192.0.2.0/24"),
    ("203.0.113.1", "203.0.113.0/24"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.9", "192.0.2.0/24"),  # an IPv4 client on a dual-stack socket
    ("unknown", None),
])
def test_client_network(ip, network):
    assert greylist.client_network(ip) == network


# The policy ---------------------------------------------------------------------------


def evaluate(ip="192.0.2.10", sender="sam@sender.test", recipient="alice@example.test", **kwargs):
    return greylist.evaluate(ip, sender, recipient, **kwargs)


@pytest.mark.django_db
def test_it_defers_a_new_triplet_then_passes_a_retry_after_the_delay(clock):
    first = evaluate()
    assert (first.action, first.reply) == (
        "defer", "451 4.7.1 <alice@example.test>: greylisted, please try again in 300 seconds",
    )
    clock.advance(120)
    early = evaluate()
    assert early.reply == "451 4.7.1 <alice@example.test>: greylisted, please try again in 180 seconds"
    clock.advance(180)
    assert evaluate().action == "pass"
    triplet = GreylistTriplet.objects.get()
    assert (triplet.network, triplet.attempts, triplet.passed_at) == ("192.0.2.0/24", 3, clock.now)
    assert triplet.expires_at == clock.now + timedelta(days=35)


@pytest.mark.django_db
def test_a_passed_retry_allows_the_whole_network_for_the_configured_days(clock):
    evaluate()
    clock.advance(300)
    evaluate()
    allowed = GreylistAllowedNetwork.objects.get()
    assert (allowed.network, allowed.expires_at) == ("192.0.2.0/24", clock.now + timedelta(days=35))
    # Another address of the pool, another sender, another recipient: no delay.
    other = evaluate("192.0.2.200", "news@elsewhere.test", "bob@example.test")
    assert (other.action, other.reason) == ("pass", "allowed network")
    assert GreylistTriplet.objects.count() == 1
    clock.advance(35 * 86400)
    assert evaluate("192.0.2.200", "news@elsewhere.test", "bob@example.test").action == "defer"


@pytest.mark.django_db
def test_a_triplet_not_retried_within_the_window_starts_over(clock):
    evaluate()
    clock.advance(2 * 86400 + 1)
    again = evaluate()
    assert again.reply.endswith("try again in 300 seconds")
    assert GreylistTriplet.objects.get().first_seen == clock.now


@pytest.mark.django_db
def test_each_part_of_the_triplet_counts(clock):
    evaluate()
    clock.advance(300)
    assert evaluate(sender="other@sender.test").action == "defer"
    assert evaluate(recipient="bob@example.test").action == "defer"
    assert evaluate(ip="198.51.100.1").action == "defer"
    assert evaluate(sender="").action == "defer"  # a bounce has a triplet of its own
    assert evaluate(ip="192.0.2.99", sender="SAM@Sender.test").action == "pass"  # same /24, same sender


@pytest.mark.django_db
def test_ipv6_clients_are_greylisted_by_their_64(clock):
    evaluate("2001:db8:5:6::1")
    clock.advance(300)
    assert evaluate("2001:db8:5:6:ffff::2").action == "pass"
    assert evaluate("2001:db8:5:7::1").action == "defer"


@pytest.mark.django_db
def test_skip_networks_and_operator_allowed_networks_are_not_greylisted(clock, settings):
    import ipaddress

    settings.MAILSUITE_GREYLIST_SKIP_NETWORKS = (ipaddress.ip_network("198.51.0.0/16"),)
    assert evaluate("198.51.100.1") is greylist.PASS_SKIPPED
    greylist.allow_network("203.0.113.7", reason="partner")
    assert evaluate("203.0.113.99").reason == "allowed network"
    clock.advance(400 * 86400)
    assert evaluate("203.0.113.99").reason == "allowed network"  # no expiry when listed by hand
    greylist.disallow_network("203.0.113.0/24")
    assert evaluate("203.0.113.99").action == "defer"
    with pytest.raises(greylist.GreylistError):
        greylist.allow_network("10.0.0.0/8")
    with pytest.raises(greylist.GreylistError):
        greylist.allow_network("not a network")
    assert GreylistTriplet.objects.count() == 1


def _delivered_to(address):
    from mailstore.models import Blob

    blob = Blob.objects.create(name=f"test/{address}", size=1, sha256="0" * 64)
    queued = QueuedMessage.objects.create(blob=blob, mail_from="alice@example.test", queue_id="q1")
    QueuedRecipient.objects.create(message=queued, address=address, domain="sender.test", state="delivered")


@pytest.mark.django_db
def test_a_correspondent_is_asked_for_spf_and_passes_when_it_holds(clock):
    _delivered_to("sam@sender.test")
    assert evaluate() is greylist.VERIFY_SENDER
    assert evaluate(sender_verified=True).reason == "known sender"
    assert evaluate(sender_verified=False).action == "defer"  # a forged correspondent waits like anyone
    assert evaluate(sender="stranger@sender.test").action == "defer"  # never written to: no shortcut
    assert greylist.sender_spf_passes(ALLOWED_IP, "sam@sender.test", "mail.sender.test")
    assert not greylist.sender_spf_passes(STRANGER_IP, "sam@sender.test", "mail.sender.test")


@pytest.mark.django_db
def test_the_recipients_contacts_and_allow_lists_are_known_senders(clock, alice, bob):
    from antispam import actions as spam_actions
    from webmail import actions as webmail_actions

    alices = [(alice.pk, alice.domain_id)]
    bobs = [(bob.pk, bob.domain_id)]
    assert not greylist.is_known_sender("sam@sender.test", alices)
    webmail_actions.save_contact(alice, "Sam@Sender.test", "Sam")
    assert greylist.is_known_sender("sam@sender.test", alices)
    assert not greylist.is_known_sender("sam@sender.test", bobs)  # alice's address book, not bob's
    spam_actions.add_list_entry("allow", "sender.test", account=bob)
    assert greylist.is_known_sender("news@lists.sender.test", bobs)  # a domain covers its subdomains
    assert not greylist.is_known_sender("news@lists.sender.test", alices)
    spam_actions.add_list_entry("allow", "partner.test", domain=alice.domain)
    assert greylist.is_known_sender("x@partner.test", alices)
    assert not greylist.is_known_sender("x@partner.test.evil.test", alices)
    assert not greylist.is_known_sender("x@partner.test")  # no recipient mailboxes: the queue only
    assert evaluate(sender="x@partner.test", accounts=alices) is greylist.VERIFY_SENDER


@pytest.mark.django_db
def test_dead_rows_are_deleted_on_the_fly_in_bounded_batches(clock, monkeypatch):
    monkeypatch.setattr(greylist, "CLEANUP_BATCH", 3)
    for n in range(5):
        evaluate(ip=f"10.0.{n}.1")
    clock.advance(2 * 86400 + 1)
    evaluate(ip="10.9.9.1")  # a new triplet: deletes at most three dead ones
    assert GreylistTriplet.objects.count() == 3
    evaluate(ip="10.9.8.1")
    assert sorted(GreylistTriplet.objects.values_list("network", flat=True)) == ["10.9.8.0/24", "10.9.9.0/24"]
    clock.advance(2 * 86400 + 1)
    assert greylist.prune() == 2
    assert not GreylistTriplet.objects.exists()


# Over SMTP ------------------------------------------------------------------------------

pytest_smtp = pytest.mark.django_db(transaction=True)


def rcpt(server, recipient="alice@example.test", *, source=ALLOWED_IP, mail_from="sam@sender.test"):
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname="mail.sender.test", timeout=30,
                          source_address=(source, 0))
    try:
        client.ehlo()
        assert client.mail(mail_from)[0] == 250
        code, text = client.rcpt(recipient)
        return code, text.decode()
    finally:
        client.close()


def send_all(server, *, source=ALLOWED_IP, mail_from="sam@sender.test", recipients=("alice@example.test",)):
    """(the RCPT replies, the DATA reply or None when no recipient was taken)."""
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname="mail.sender.test", timeout=30,
                          source_address=(source, 0))
    try:
        client.ehlo()
        assert client.mail(mail_from)[0] == 250
        replies = [(code, text.decode()) for code, text in (client.rcpt(r) for r in recipients)]
        data = None
        if any(code == 250 for code, _ in replies):
            code, text = client.data(message(author="Sam <sam@sender.test>"))
            data = (code, text.decode())
        return replies, data
    finally:
        client.close()


@pytest.fixture
def greylisting(domain):
    actions.set_inbound_policy("example.test", greylisting=True)


@pytest_smtp
def test_it_answers_451_at_rcpt_then_takes_the_retry_after_the_delay(greylisting, smtp_server, alice, clock):
    assert rcpt(smtp_server) == (451, "4.7.1 <alice@example.test>: greylisted, please try again in 300 seconds")
    clock.advance(299)
    assert rcpt(smtp_server)[0] == 451
    clock.advance(1)
    replies, data = send_all(smtp_server)
    assert replies == [(250, "2.1.5 Ok")]
    assert data[0] == 250
    assert [m.subject for m in inbox(alice)] == ["Quarterly numbers"]


@pytest_smtp
def test_recipients_are_greylisted_one_by_one(greylisting, smtp_server, alice, bob, clock):
    rcpt(smtp_server, "alice@example.test")
    clock.advance(100)
    replies, data = send_all(smtp_server, recipients=("alice@example.test", "bob@example.test"))
    assert replies == [
        (451, "4.7.1 <alice@example.test>: greylisted, please try again in 200 seconds"),
        (451, "4.7.1 <bob@example.test>: greylisted, please try again in 300 seconds"),
    ]
    assert data is None
    clock.advance(200)
    # alice's triplet is due; once it passes, the client's /24 is allowed and bob's is taken too.
    replies, data = send_all(smtp_server, recipients=("alice@example.test", "bob@example.test"))
    assert replies == [(250, "2.1.5 Ok"), (250, "2.1.5 Ok")]
    assert data[0] == 250
    assert (len(inbox(alice)), len(inbox(bob))) == (1, 1)


@pytest_smtp
def test_unknown_recipients_are_refused_before_greylisting(greylisting, smtp_server, alice):
    assert rcpt(smtp_server, "nobody@example.test")[0] == 550
    assert not GreylistTriplet.objects.exists()


@pytest_smtp
def test_greylisting_is_off_unless_the_domain_turns_it_on(smtp_server, alice):
    assert rcpt(smtp_server) == (250, "2.1.5 Ok")
    actions.set_inbound_policy("example.test", greylisting=True)
    assert rcpt(smtp_server)[0] == 451
    actions.set_inbound_policy("example.test", greylisting=False)
    assert rcpt(smtp_server) == (250, "2.1.5 Ok")


@pytest_smtp
def test_trusted_networks_are_not_greylisted(greylisting, smtp_server, alice, settings):
    import ipaddress

    smtp_server.service.handler.trusted_networks = (ipaddress.ip_network("127.0.0.0/29"),)
    assert rcpt(smtp_server) == (250, "2.1.5 Ok")
    assert not GreylistTriplet.objects.exists()


@pytest_smtp
def test_a_known_correspondent_passes_when_spf_allows_the_client(greylisting, smtp_server, alice):
    _delivered_to("sam@sender.test")
    assert rcpt(smtp_server, source=ALLOWED_IP) == (250, "2.1.5 Ok")  # sender.test's SPF allows 127.0.0.2
    assert rcpt(smtp_server, source=STRANGER_IP)[0] == 451  # but not 127.0.0.3


@pytest.fixture
def submission_servers_greylisting(submission_servers, greylisting):
    return submission_servers


@pytest_smtp
def test_authenticated_clients_are_not_greylisted(submission_servers_greylisting, alice, bob):
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = smtplib.SMTP("127.0.0.1", submission_servers_greylisting.ports["submission"], timeout=30)
    try:
        client.starttls(context=context)
        client.login("alice@example.test", PASSWORD)
        assert client.mail("alice@example.test")[0] == 250
        assert client.rcpt("bob@example.test") == (250, b"2.1.5 Ok")
    finally:
        client.close()
    assert not GreylistTriplet.objects.exists()
