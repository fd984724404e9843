"""Outbound delivery over real sockets: a DNS server and receiving SMTP servers on
127.0.0.2/127.0.0.3, the queue worker's delivery function run directly."""
import datetime

import pytest

from accounts import actions
from accounts.resolve import Resolution
from mailstore.actions import read_blob
from mta import delivery, inbound, queue
from mta.models import DeliveryAttempt, QueuedRecipient, SmartHost
from mailsuite.lib import secrets
from tests.conftest import inbox, message_bytes
from tests.dnsserver import DNSServer
from tests.e2e.helpers import free_port
from tests.mta.sink import Behaviour, Sink

pytestmark = pytest.mark.django_db(transaction=True)

MX1, MX2 = "127.0.0.2", "127.0.0.3"
MESSAGE = b"From: Alice <alice@example.test>\r\nTo: friend@faraway.test\r\nSubject: out\r\n\r\nhello\r\n"


@pytest.fixture
def net(settings):
    """DNS for faraway.test (MX 10 mx1, MX 20 mx2) and a port free on both mail hosts."""
    zones = {
        "faraway.test": {"MX": [(10, "mx1.faraway.test"), (20, "mx2.faraway.test")]},
        "mx1.faraway.test": {"A": [MX1]},
        "mx2.faraway.test": {"A": [MX2]},
        "plain.test": {"A": [MX1]},
        "nomail.test": {"MX": [(0, ".")]},
    }
    with DNSServer(zones) as dns:
        settings.MAILSUITE_DNS_SERVERS = (dns.address,)
        settings.MAILSUITE_OUTBOUND_PORT = free_port(MX1, MX2)
        dns.mail_port = settings.MAILSUITE_OUTBOUND_PORT
        yield dns


@pytest.fixture
def clock(monkeypatch):
    now = [queue.now()]
    monkeypatch.setattr(queue, "now", lambda: now[0])
    return now


def send(*recipients, sender="alice@example.test", raw=MESSAGE, **extra):
    resolution = Resolution(address=recipients[0], external=list(recipients))
    reply = inbound.accept_message(raw, mail_from=sender, resolutions=[resolution], client_ip="127.0.0.1", **extra)
    assert reply.startswith("250 "), reply
    return reply


def states():
    return sorted(QueuedRecipient.objects.values_list("address", "state", "status"))


def test_mail_goes_to_the_best_mx(net, alice):
    with Sink(MX1, net.mail_port) as mx1, Sink(MX2, net.mail_port) as mx2:
        send("friend@faraway.test", "other@faraway.test")
        assert delivery.deliver_domain("faraway.test") == 2
    [got] = mx1.received
    assert got.mail_from == "alice@example.test"
    assert got.rcpt_tos == ["friend@faraway.test", "other@faraway.test"]  # one transaction
    assert got.data == MESSAGE
    assert mx2.received == []
    assert states() == [("friend@faraway.test", "delivered", "2.0.0"), ("other@faraway.test", "delivered", "2.0.0")]


def test_the_second_mx_takes_over_when_the_first_refuses_connections(net, alice):
    with Sink(MX2, net.mail_port) as mx2:
        send("friend@faraway.test")
        delivery.deliver_domain("faraway.test")
    assert len(mx2.received) == 1
    attempt = DeliveryAttempt.objects.get()
    assert attempt.outcome == "delivered" and attempt.host == f"mx2.faraway.test[{MX2}]"


def test_a_domain_without_mx_is_its_own_mail_host(net, alice):
    with Sink(MX1, net.mail_port) as host:
        send("someone@plain.test")
        delivery.deliver_domain("plain.test")
    assert host.received[0].rcpt_tos == ["someone@plain.test"]


def test_connections_are_reused_for_a_destination(net, alice):
    with Sink(MX1, net.mail_port) as mx1:
        for _ in range(3):
            send("friend@faraway.test")
        delivery.deliver_domain("faraway.test")
    assert len(mx1.received) == 3 and mx1.connections == 1


def test_a_permanent_refusal_bounces_to_the_sender(net, alice):
    behaviour = Behaviour(rcpt_replies={"nobody@faraway.test": "550 5.1.1 no such user"})
    with Sink(MX1, net.mail_port, behaviour=behaviour):
        send("nobody@faraway.test", "friend@faraway.test")
        delivery.deliver_domain("faraway.test")
    assert states() == [("friend@faraway.test", "delivered", "2.0.0"), ("nobody@faraway.test", "bounced", "5.1.1")]
    [report] = inbox(alice)
    raw = message_bytes(report)
    assert report.subject == "Undelivered Mail Returned to Sender"
    assert b"Return-Path: <>\r\n" in raw
    assert b"Content-Type: multipart/report; report-type=delivery-status" in raw
    assert b"Final-Recipient: rfc822; nobody@faraway.test\r\nAction: failed\r\nStatus: 5.1.1\r\n" in raw
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in raw
    assert b"Subject: out\r\n" in raw  # the original headers come back
    assert b"friend@faraway.test" not in raw.split(b"message/delivery-status")[1].split(b"text/rfc822-headers")[0]


def test_a_null_mx_bounces_at_once(net, alice):
    send("x@nomail.test")
    delivery.deliver_domain("nomail.test")
    assert states() == [("x@nomail.test", "bounced", "5.1.10")]
    assert b"Status: 5.1.10" in message_bytes(inbox(alice)[0])


def test_a_bounce_is_never_bounced(net, alice):
    send("x@nomail.test", sender="")
    delivery.deliver_domain("nomail.test")
    assert states() == [("x@nomail.test", "bounced", "5.1.10")]
    assert inbox(alice) == []
    assert QueuedRecipient.objects.get().bounce_notified


def test_a_temporary_failure_is_retried_later(net, alice, clock):
    behaviour = Behaviour(data_reply="451 4.3.0 try again")
    with Sink(MX1, net.mail_port, behaviour=behaviour) as mx1:
        send("friend@faraway.test")
        delivery.deliver_domain("faraway.test")
        assert states() == [("friend@faraway.test", "deferred", "4.3.0")]
        assert delivery.deliver_domain("faraway.test") == 0  # not due yet
        behaviour.data_reply = "250 2.0.0 Ok"
        clock[0] += datetime.timedelta(minutes=6)
        assert delivery.deliver_domain("faraway.test") == 1
    assert states() == [("friend@faraway.test", "delivered", "2.0.0")]
    assert len(mx1.received) == 1
    assert [a.outcome for a in DeliveryAttempt.objects.all()] == ["deferred", "delivered"]


def test_delay_notice_then_bounce_at_expiry(net, alice, clock, settings):
    settings.MAILSUITE_QUEUE_DELAY_WARNING = 3600
    settings.MAILSUITE_QUEUE_LIFETIME = 6 * 3600
    send("friend@faraway.test")  # nothing listens on the MX hosts
    delivery.deliver_domain("faraway.test")
    assert inbox(alice) == []
    clock[0] += datetime.timedelta(hours=2)
    delivery.deliver_domain("faraway.test")
    [notice] = inbox(alice)
    assert notice.subject == "Delayed Mail (still being retried)"
    assert b"Action: delayed\r\n" in message_bytes(notice) and b"Will-Retry-Until: " in message_bytes(notice)
    clock[0] += datetime.timedelta(hours=5)
    delivery.deliver_domain("faraway.test")
    assert states()[0][1] == "bounced"
    assert [m.subject for m in inbox(alice)] == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]


def test_utf8_mail_to_a_server_without_smtputf8_bounces_with_a_reason(net, alice):
    with Sink(MX1, net.mail_port, behaviour=Behaviour(smtputf8=False)):
        send("jürgen@faraway.test", raw="From: alice@example.test\r\nSubject: Grüße\r\n\r\nä\r\n".encode(), smtputf8=True)
        delivery.deliver_domain("faraway.test")
    assert states() == [("jürgen@faraway.test", "bounced", "5.6.7")]
    assert b"does not support SMTPUTF8" in message_bytes(inbox(alice)[0])


def test_a_smart_host_with_auth_over_starttls(net, alice, settings):
    from mailsuite.lib.tls import ensure_certificate, server_context

    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, "localhost")
    SmartHost.objects.create(
        host=MX2, port=net.mail_port, tls=SmartHost.TLS.REQUIRED, verify_certificate=False,
        username="relayuser", password=secrets.encrypt("relay secret"),
    )
    context = server_context(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY)
    with Sink(MX2, net.mail_port, tls_context=context, users={"relayuser": "relay secret"}) as relay:
        send("friend@faraway.test")
        delivery.deliver_domain("faraway.test")
    [got] = relay.received
    assert got.tls and got.login == "relayuser"


def test_pipelining_or_not_the_replies_line_up(net, alice):
    behaviour = Behaviour(pipelining=False, rcpt_replies={"b@faraway.test": "550 5.1.1 unknown"})
    with Sink(MX1, net.mail_port, behaviour=behaviour) as mx1:
        send("a@faraway.test", "b@faraway.test", "c@faraway.test")
        delivery.deliver_domain("faraway.test")
    assert mx1.received[0].rcpt_tos == ["a@faraway.test", "c@faraway.test"]
    assert [s for _, s, _ in states()] == ["delivered", "bounced", "delivered"]


def test_two_workers_never_take_the_same_recipient(net, alice):
    send("friend@faraway.test")
    first = queue.claim("faraway.test", owner="one")
    second = queue.claim("faraway.test", owner="two")
    assert [r.address for r in first] == ["friend@faraway.test"] and second == []
    assert queue.record(first[0], owner="two", outcome="delivered") is None  # not their lease


def test_an_expired_lease_is_taken_over(net, alice, clock, settings):
    send("friend@faraway.test")
    assert queue.claim("faraway.test", owner="crashed")
    clock[0] += datetime.timedelta(seconds=settings.MAILSUITE_QUEUE_LEASE_SECONDS + 1)
    assert [r.address for r in queue.claim("faraway.test", owner="next")] == ["friend@faraway.test"]


def test_a_dead_workers_claim_is_delivered_by_another_once_its_lease_runs_out(net, alice, clock, settings):
    """A worker killed mid-delivery (kill -9: no finally, no release) leaves its slot and its
    recipients leased; both leases run out and any other worker delivers the mail."""
    settings.MAILSUITE_QUEUE_DESTINATION_CONCURRENCY = 1  # the dead worker holds the only slot
    send("friend@faraway.test")
    assert queue.acquire_slot("faraway.test", owner="dead") == 0
    [abandoned] = queue.claim("faraway.test", owner="dead")
    lease = datetime.timedelta(seconds=settings.MAILSUITE_QUEUE_LEASE_SECONDS)
    with Sink(MX1, net.mail_port) as mx1:
        clock[0] += lease - datetime.timedelta(seconds=1)
        assert queue.due_domains() == []  # still the dead worker's, as far as anyone can tell
        assert delivery.deliver_domain("faraway.test", owner="next") == 0
        clock[0] += datetime.timedelta(seconds=2)
        assert queue.due_domains() == ["faraway.test"]  # the periodic sweep hands it out again
        assert delivery.deliver_domain("faraway.test", owner="next") == 1
    [got] = mx1.received
    assert got.rcpt_tos == ["friend@faraway.test"] and got.data == MESSAGE
    assert states() == [("friend@faraway.test", "delivered", "2.0.0")]
    assert queue.due_domains() == []
    # Had the dead worker come back to record its attempt, that would change nothing now.
    assert queue.record(abandoned, owner="dead", outcome="deferred", reply="451 too late") is None
    assert states() == [("friend@faraway.test", "delivered", "2.0.0")]


def test_local_retries_are_delivered_when_room_returns(alice, bob):
    actions.set_quota("bob@example.test", 300)
    reply = inbound.accept_message(
        b"Subject: big\r\n\r\n" + b"x" * 300 + b"\r\n", mail_from="m@elsewhere.test",
        resolutions=[Resolution(address="a", accounts={alice.pk: alice, bob.pk: bob})], client_ip="127.0.0.1",
    )
    assert reply.startswith("250")
    assert [(a, s) for a, s, _ in states()] == [("bob@example.test", "queued")]
    delivery.deliver_domain("")
    assert [(a, s) for a, s, _ in states()] == [("bob@example.test", "deferred")]
    actions.set_quota("bob@example.test", 0)
    QueuedRecipient.objects.update(next_attempt_at=queue.now())
    delivery.deliver_domain("")
    assert [(a, s) for a, s, _ in states()] == [("bob@example.test", "delivered")]
    assert len(inbox(bob)) == 1


def submit_with_dsn(port, *, envelope_params, rcpt_params, recipient="friend@faraway.test"):
    """Submission with RFC 3461 parameters; returns the DATA reply."""
    import smtplib
    import ssl

    from tests.conftest import PASSWORD

    client = smtplib.SMTP("127.0.0.1", port, local_hostname="laptop.test", timeout=10)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client.starttls(context=context)
    client.login("alice@example.test", PASSWORD)
    assert "dsn" in client.esmtp_features
    assert client.mail("alice@example.test", envelope_params)[0] == 250
    assert client.rcpt(recipient, rcpt_params)[0] == 250
    reply = client.data(MESSAGE)
    client.quit()
    return reply


def test_dsn_parameters_success_notice_and_envid(net, alice, submission_servers):
    with Sink(MX1, net.mail_port):
        code, _ = submit_with_dsn(
            submission_servers.ports["submission"], envelope_params=["RET=HDRS", "ENVID=Order-42+2Bx"],
            rcpt_params=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Friend@Faraway.test"],
        )
        assert code == 250
        delivery.deliver_domain("faraway.test")
    [notice] = inbox(alice)
    raw = message_bytes(notice)
    assert notice.subject == "Successful Mail Delivery Report"
    assert b"Original-Envelope-Id: Order-42+2Bx\r\n" in raw
    assert b"Original-Recipient: rfc822;Friend@Faraway.test\r\n" in raw
    assert b"Action: relayed\r\nStatus: 2.0.0\r\n" in raw


def test_notify_never_means_no_bounce(net, alice, submission_servers):
    behaviour = Behaviour(rcpt_replies={"friend@faraway.test": "550 5.1.1 gone"})
    with Sink(MX1, net.mail_port, behaviour=behaviour):
        submit_with_dsn(submission_servers.ports["submission"], envelope_params=[], rcpt_params=["NOTIFY=NEVER"])
        delivery.deliver_domain("faraway.test")
    assert states() == [("friend@faraway.test", "bounced", "5.1.1")]
    assert inbox(alice) == []


def test_ret_full_returns_the_whole_message(net, alice, submission_servers):
    with Sink(MX1, net.mail_port, behaviour=Behaviour(data_reply="554 5.7.1 spam")):
        submit_with_dsn(submission_servers.ports["submission"], envelope_params=["RET=FULL"], rcpt_params=[])
        delivery.deliver_domain("faraway.test")
    raw = message_bytes(inbox(alice)[0])
    assert b"Content-Type: message/rfc822\r\n" in raw and raw.count(b"hello\r\n") == 1


def test_bad_dsn_parameters_are_refused(submission_servers, alice):
    import smtplib

    client = smtplib.SMTP("127.0.0.1", submission_servers.ports["smtp"], local_hostname="x.test", timeout=10)
    client.ehlo()
    assert client.mail("m@elsewhere.test", ["RET=EVERYTHING"]) == (501, b"5.5.4 RET must be FULL or HDRS")
    client.mail("m@elsewhere.test")
    assert client.rcpt("alice@example.test", ["NOTIFY=SOMETIMES"])[0] == 501
    client.quit()


def test_forwarded_mail_gets_an_srs_sender_and_bounces_come_back(net, alice, smtp_server):
    import smtplib

    actions.create_redirect("old@example.test", "new@faraway.test")
    behaviour = Behaviour()
    with Sink(MX1, net.mail_port, behaviour=behaviour) as mx1:
        client = smtplib.SMTP("127.0.0.1", smtp_server.port, local_hostname="sender.test", timeout=10)
        assert client.sendmail("someone@sender.test", ["old@example.test"], MESSAGE) == {}
        delivery.deliver_domain("faraway.test")
        [got] = mx1.received
        assert got.mail_from.startswith("SRS0=") and got.mail_from.endswith("@mx.example.test")
        # The destination bounces to the SRS address: it comes back and goes to the real sender.
        assert client.sendmail("", [got.mail_from], b"Subject: bounce\r\n\r\nno\r\n") == {}
        client.mail("")
        forged = "SRS0=AAAA" + got.mail_from[9:]
        assert client.rcpt(forged) == (550, f"5.1.1 <{forged}>: SRS address has an invalid signature".encode())
        client.quit()
    assert ("someone@sender.test", "queued", "") in states()


def test_submitted_mail_arrives_with_dkim_signatures_that_verify(net, alice, submission_servers):
    import dkim as dkimpy
    import dns.resolver

    from accounts.models import Domain
    from mta.dns_records import records_for

    for record in records_for(Domain.objects.get(name="example.test"), hostname="mx.example.test"):
        if record.type == "TXT" and "._domainkey." in record.name:
            net.set(record.name.rstrip("."), "TXT", [record.text])

    def dnsfunc(name, timeout=5):
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.nameserver_ports = [net.address[0]], {net.address[0]: net.port}
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    with Sink(MX1, net.mail_port) as mx1:
        submit_with_dsn(submission_servers.ports["submission"], envelope_params=[], rcpt_params=[])
        delivery.deliver_domain("faraway.test")
    data = mx1.received[0].data
    assert data.count(b"DKIM-Signature:") == 2 and b"a=ed25519-sha256" in data and b"a=rsa-sha256" in data
    verifier = dkimpy.DKIM(data)
    assert verifier.verify(idx=0, dnsfunc=dnsfunc) and verifier.verify(idx=1, dnsfunc=dnsfunc)
    with pytest.raises(dkimpy.ValidationError, match="body hash mismatch"):
        dkimpy.DKIM(data.replace(b"hello", b"HELLO")).verify(dnsfunc=dnsfunc)


def test_a_destination_gets_only_so_many_workers_at_once(net, alice, settings):
    settings.MAILSUITE_QUEUE_DESTINATION_CONCURRENCY = 2
    assert queue.acquire_slot("faraway.test", owner="w1") == 0
    assert queue.acquire_slot("faraway.test", owner="w2") == 1
    assert queue.acquire_slot("faraway.test", owner="w3") is None
    send("friend@faraway.test")
    assert delivery.deliver_domain("faraway.test", owner="w3") == 0  # waits for a free slot
    queue.release_slot("faraway.test", 1, owner="w2")
    with Sink(MX1, net.mail_port) as mx1:
        assert delivery.deliver_domain("faraway.test", owner="w3") == 1
    assert len(mx1.received) == 1
    assert queue.acquire_slot("faraway.test", owner="w4") == 1  # released again


def test_an_idna_destination_is_routed_by_its_ascii_name(net, alice, smtp_server):
    import ipaddress
    import smtplib

    net.set("xn--bcher-kva.test", "MX", [(10, "mx1.faraway.test")])
    smtp_server.service.handler.trusted_networks = (ipaddress.ip_network("127.0.0.0/8"),)
    with Sink(MX1, net.mail_port) as mx1:
        client = smtplib.SMTP("127.0.0.1", smtp_server.port, local_hostname="trusted.test", timeout=10)
        assert client.sendmail("alice@example.test", ["leser@bücher.test"], MESSAGE, mail_options=["SMTPUTF8"]) == {}
        client.quit()
        assert delivery.deliver_domain("xn--bcher-kva.test") == 1
    assert mx1.received[0].rcpt_tos == ["leser@xn--bcher-kva.test"]


def test_mailsuite_relayhost_sends_everything_to_one_host(net, alice, settings):
    settings.MAILSUITE_RELAYHOST = f"[{MX2}]:{net.mail_port}"
    with Sink(MX2, net.mail_port) as relay:
        send("friend@faraway.test")
        delivery.deliver_domain("faraway.test")
    assert len(relay.received) == 1


def test_an_unreachable_destination_is_tried_once_per_run(net, alice):
    for _ in range(3):
        send("friend@faraway.test")
    assert delivery.deliver_domain("faraway.test") == 3  # nothing listens on either MX
    assert [s for _, s, _ in states()] == ["deferred"] * 3
    assert net.queries.count(("mx1.faraway.test", "A")) == 1
