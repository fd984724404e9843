"""manage.py queue and manage.py relay, and the mta.actions they call.

Personas: alice (example.test, served here) sends to friends at faraway.test and
elsewhere.test, which are not; mail to them waits on the outbound queue. Delivery for
`queue flush` is to real SMTP sinks on 127.0.0.2/3 found through a real DNS server
(the `net` fixture of test_queue).
"""
import datetime
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts import actions as account_actions
from accounts.errors import Conflict, InvalidInput, NotFound
from mailsuite.lib import secrets
from mailstore.models import Blob
from mta import actions, queue
from mta.models import DeliveryAttempt, QueuedMessage, QueuedRecipient, SmartHost
from tests.conftest import inbox, message_bytes
from tests.mta.sink import Behaviour, Sink
from tests.mta.test_queue import MX1, clock, net, send  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

RELAY_SECRET = "s3cret relay pass"


def run(*args, stdin=""):
    """Run a command in-process; return (stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, stdin=io.StringIO(stdin))
    return stdout.getvalue(), stderr.getvalue()


def refused(*args, stdin=""):
    """Run a command that must fail; return its one-line reason."""
    with pytest.raises(CommandError) as info:
        run(*args, stdin=stdin)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def queued(address):
    return QueuedRecipient.objects.select_related("message").get(address=address)


def queue_id_of(address):
    return queued(address).message.queue_id


def lines(text):
    return [line.split() for line in text.splitlines()]


@pytest.fixture
def mail(alice, clock):
    """Two messages on the queue: one to two friends at faraway.test 90 minutes ago, one
    to elsewhere.test now (by the queue's clock, which stands still in these tests)."""
    send("friend@faraway.test", "other@faraway.test")
    send("pal@elsewhere.test", sender="bob@example.test")
    now = queue.now()
    QueuedMessage.objects.filter(mail_from="alice@example.test").update(created=now - datetime.timedelta(minutes=90))
    QueuedMessage.objects.filter(mail_from="bob@example.test").update(created=now)
    return clock


# queue list / show -------------------------------------------------------------------


def test_it_lists_one_line_per_recipient_oldest_first(mail):
    out, err = run("queue", "list")

    first, second = queue_id_of("friend@faraway.test"), queue_id_of("pal@elsewhere.test")
    assert err == ""
    assert lines(out) == [
        [first, "1h30m", "queued", "0", "now", "<alice@example.test>", "→", "<friend@faraway.test>"],
        [first, "1h30m", "queued", "0", "now", "<alice@example.test>", "→", "<other@faraway.test>"],
        [second, "0s", "queued", "0", "now", "<bob@example.test>", "→", "<pal@elsewhere.test>"],
    ]


def test_it_lists_by_state_domain_sender_and_age(mail):
    owner = queue.new_owner()
    for recipient in queue.claim("faraway.test", owner=owner):
        if recipient.address == "other@faraway.test":
            queue.record(recipient, owner=owner, outcome="deferred", reply="451 4.3.0 try again later")
        else:
            queue.release([recipient], owner=owner)

    deferred = lines(run("queue", "list", "--state", "deferred")[0])
    assert [row[2:6] for row in deferred] == [["deferred", "1", "in", "5m"]]
    assert deferred[0][-6:] == ["<other@faraway.test>", "451", "4.3.0", "try", "again", "later"]
    assert [row[row.index("→") + 1] for row in lines(run("queue", "list", "--domain", "FARAWAY.test")[0])] == [
        "<friend@faraway.test>", "<other@faraway.test>",
    ]
    assert lines(run("queue", "list", "--sender", "bob@example.test")[0])[0][-1] == "<pal@elsewhere.test>"
    assert len(lines(run("queue", "list", "--sender", "@example.test")[0])) == 3
    assert run("queue", "list", "--sender", "<>")[0] == ""
    assert len(lines(run("queue", "list", "--older-than", "1h")[0])) == 2
    assert run("queue", "list", "--older-than", "2h")[0] == ""


def test_it_lists_finished_recipients_only_when_asked(mail):
    QueuedRecipient.objects.filter(address="friend@faraway.test").update(state="delivered", status="2.0.0")

    assert "<friend@faraway.test>" not in run("queue", "list")[0]
    assert "<friend@faraway.test>" in run("queue", "list", "--state", "all")[0]
    assert [row[-1] for row in lines(run("queue", "list", "--state", "delivered")[0])] == ["<friend@faraway.test>"]


def test_it_refuses_bad_list_filters(mail):
    assert refused("queue", "list", "--older-than", "yesterday") == (
        "invalid duration 'yesterday': write a number and a unit, e.g. 30m, 2h, 3d"
    )
    assert refused("queue", "list", "--domain", "not a domain").startswith("--domain: ")


def test_it_shows_a_message_with_every_attempt(mail):
    owner = queue.new_owner()
    claimed = queue.claim("faraway.test", owner=owner)
    for recipient in claimed:
        queue.record(recipient, owner=owner, outcome="deferred", host="mx1.faraway.test[127.0.0.2]",
                     reply="421 4.7.0 greylisted, come back later", status="4.7.0")

    out, err = run("queue", "show", queue_id_of("friend@faraway.test").lower())

    assert err == ""
    assert f"queue id  {queue_id_of('friend@faraway.test')}" in out
    assert "from      <alice@example.test>" in out
    assert "<friend@faraway.test>  deferred  1 attempt  next in 5m  status 4.7.0" in out
    assert "  last error: 421 4.7.0 greylisted, come back later" in out
    assert out.count("deferred mx1.faraway.test[127.0.0.2]: 421 4.7.0 greylisted, come back later") == 2
    assert "pal@elsewhere.test" not in out


def test_it_refuses_an_unknown_queue_id(mail):
    assert refused("queue", "show", "NOSUCHID") == "no queued message with id NOSUCHID"
    assert refused("queue", "retry", queue_id_of("pal@elsewhere.test"), "NOSUCHID") == (
        "no queued message with id NOSUCHID"
    )
    assert refused("queue", "delete", "NOSUCHID") == "no queued message with id NOSUCHID"


# queue retry / hold / release ---------------------------------------------------------


def test_it_retries_deferred_mail_now_keeping_its_attempts(mail, queue_kicks):
    owner = queue.new_owner()
    for recipient in queue.claim("faraway.test", owner=owner):
        queue.record(recipient, owner=owner, outcome="deferred", reply="451 later", status="4.3.0")
    queue_kicks.clear()

    out, _ = run("queue", "retry", queue_id_of("friend@faraway.test"))

    assert out == "retrying now 2 recipients\n"
    rows = QueuedRecipient.objects.filter(domain="faraway.test")
    assert {(r.state, r.attempts, r.next_attempt_at) for r in rows} == {("deferred", 1, queue.now())}
    assert queue_kicks == []  # workers are told only after commit


def test_it_tells_the_workers_after_commit(mail, queue_kicks, django_capture_on_commit_callbacks):
    queue_kicks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        actions.retry_now(message_ids=actions.find_messages([queue_id_of("pal@elsewhere.test")]))
    assert queue_kicks == ["elsewhere.test"]


def test_it_leaves_a_recipient_a_worker_is_trying_alone_on_retry(mail):
    leased = queue.claim("elsewhere.test", owner="worker")

    assert refused("queue", "retry", queue_id_of("pal@elsewhere.test")) == (
        "nothing to retry (held ones need release): no recipient of those messages is in a state for it"
    )
    assert QueuedRecipient.objects.get(pk=leased[0].pk).lease_owner == "worker"


def test_it_retries_the_whole_queue(mail):
    QueuedRecipient.objects.update(state="deferred", next_attempt_at=queue.now() + datetime.timedelta(hours=1))
    assert run("queue", "retry", "--all")[0] == "retrying now 3 recipients\n"
    assert queue.due().count() == 3
    QueuedRecipient.objects.update(state="delivered")
    assert run("queue", "retry", "--all")[0] == "nothing to retry (held ones need release)\n"
    assert refused("queue", "retry").startswith("Error: one of the arguments")  # neither ids nor --all


def test_it_holds_and_releases_mail(mail, clock, queue_kicks):
    qid = queue_id_of("friend@faraway.test")

    assert run("queue", "hold", qid)[0] == "held 2 recipients\n"
    assert {r.state for r in QueuedRecipient.objects.filter(domain="faraway.test")} == {"held"}
    assert queue.claim("faraway.test", owner="worker") == []  # workers skip held mail
    assert refused("queue", "hold", qid).startswith("nothing to hold")
    assert refused("queue", "retry", qid).startswith("nothing to retry")

    clock[0] += datetime.timedelta(hours=1)
    assert run("queue", "release", qid, "--recipient", "Other@faraway.test")[0] == "released 1 recipient\n"
    released = queued("other@faraway.test")
    assert (released.state, released.next_attempt_at) == ("queued", clock[0])
    assert [r.address for r in queue.claim("faraway.test", owner="worker")] == ["other@faraway.test"]
    assert run("queue", "release", "--all")[0] == "released 1 recipient\n"
    assert refused("queue", "release", qid, "--recipient", "stranger@faraway.test") == (
        f"<stranger@faraway.test> is not a recipient of {qid}"
    )


def test_it_takes_the_lease_from_a_worker_on_hold(mail):
    [claimed] = queue.claim("elsewhere.test", owner="worker")

    run("queue", "hold", queue_id_of("pal@elsewhere.test"))

    row = queued("pal@elsewhere.test")
    assert (row.state, row.lease_owner, row.lease_until) == ("held", "", None)
    # The worker's attempt in flight can no longer be recorded over the operator's decision.
    assert queue.record(claimed, owner="worker", outcome="deferred", reply="451 later") is None
    assert queued("pal@elsewhere.test").state == "held"
    assert not DeliveryAttempt.objects.exists()


# queue bounce / delete -----------------------------------------------------------------


def test_it_bounces_with_a_failure_notice_to_the_sender(mail, alice, django_capture_on_commit_callbacks):
    qid = queue_id_of("friend@faraway.test")
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("queue", "bounce", qid, "--recipient", "friend@faraway.test", "--reason", "mailbox retired")

    assert out == "bounced 1 recipient\n"
    bounced = queued("friend@faraway.test")
    assert (bounced.state, bounced.status, bounced.last_error, bounced.bounce_notified) == (
        "bounced", "5.0.0", "mailbox retired", True,
    )
    assert queued("other@faraway.test").state == "queued"
    [report] = inbox(alice)
    raw = message_bytes(report)
    assert report.subject == "Undelivered Mail Returned to Sender"
    assert b"Final-Recipient: rfc822; friend@faraway.test\r\nAction: failed\r\nStatus: 5.0.0\r\n" in raw
    assert b"Diagnostic-Code: smtp; mailbox retired" in raw
    assert b"other@faraway.test" not in raw.split(b"message/delivery-status")[1].split(b"rfc822-headers")[0]
    assert refused("queue", "bounce", qid, "--recipient", "friend@faraway.test").startswith("nothing to bounce")


def test_it_bounces_held_mail_with_the_default_reason(mail, django_capture_on_commit_callbacks):
    qid = queue_id_of("pal@elsewhere.test")
    run("queue", "hold", qid)
    with django_capture_on_commit_callbacks(execute=True):
        assert run("queue", "bounce", qid)[0] == "bounced 1 recipient\n"
    assert queued("pal@elsewhere.test").last_error == "delivery cancelled by the mail administrator"
    assert refused("queue", "bounce", queue_id_of("friend@faraway.test"), "--reason", " ") == (
        "give a reason for the bounce: the sender reads it"
    )
    assert refused("queue", "bounce", queue_id_of("friend@faraway.test"), "--reason", "two\nlines") == (
        "the reason must be one line of text"
    )


def test_it_deletes_messages_but_not_their_bytes(mail):
    friend_blob = queued("friend@faraway.test").message.blob_id
    owner = queue.new_owner()
    for recipient in queue.claim("faraway.test", owner=owner):
        queue.record(recipient, owner=owner, outcome="deferred", reply="451 later")

    out, _ = run("queue", "delete", queue_id_of("friend@faraway.test"), queue_id_of("pal@elsewhere.test"))

    assert out == "deleted 2 messages from the queue\n"
    assert not QueuedMessage.objects.exists()
    assert not QueuedRecipient.objects.exists() and not DeliveryAttempt.objects.exists()
    assert Blob.objects.filter(pk=friend_blob).exists()  # the blob sweep's to remove
    assert run("queue", "list")[0] == ""


def test_it_handles_more_ids_than_a_query_may_carry(mail):
    missing = list(range(10**9, 10**9 + 3 * actions.CHUNK))
    assert actions.hold([queued("pal@elsewhere.test").pk, *missing]) == 1
    assert actions.release([*missing, queued("pal@elsewhere.test").pk]) == 1
    assert actions.delete_messages([*QueuedMessage.objects.values_list("pk", flat=True), *missing]) == 2


# queue flush (real sockets) --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_flushes_deferred_mail_to_one_domain_now(net, alice):
    behaviour = Behaviour(data_reply="451 4.3.0 not now")
    with Sink(MX1, net.mail_port, behaviour=behaviour) as mx1:
        send("friend@faraway.test")
        send("pal@plain.test")
        out, _ = run("queue", "flush", "faraway.test")
        assert out == "faraway.test: tried 1 (1 deferred)\n"
        assert queued("pal@plain.test").attempts == 0  # another domain: not touched

        behaviour.data_reply = "250 2.0.0 Ok"
        out, _ = run("queue", "flush", "faraway.test")  # due only in 5 minutes: flushed anyway
        assert out == "faraway.test: tried 1 (1 delivered)\n"
        assert run("queue", "flush", "faraway.test")[0] == "nothing queued for faraway.test\n"

        out, _ = run("queue", "flush")
        assert out == "plain.test: tried 1 (1 delivered)\n"
    assert [m.rcpt_tos for m in mx1.received] == [["friend@faraway.test"], ["pal@plain.test"]]
    assert queued("friend@faraway.test").state == "delivered"
    assert run("queue", "flush")[0] == "nothing queued\n"


@pytest.mark.django_db(transaction=True)
def test_it_leaves_held_mail_alone_on_flush(net, alice):
    with Sink(MX1, net.mail_port) as mx1:
        send("friend@faraway.test")
        run("queue", "hold", queue_id_of("friend@faraway.test"))
        assert actions.flush("faraway.test") == {
            "faraway.test": {"tried": 0, "delivered": 0, "deferred": 0, "bounced": 0}
        }
    assert mx1.received == []


# relay smarthost ---------------------------------------------------------------------------


def test_it_sets_a_smart_host_with_auth_and_never_prints_the_password(db):
    out, err = run("relay", "smarthost", "smtp.provider.test:587", "--user", "relay@corp.test", "--password-stdin",
                   stdin=RELAY_SECRET + "\n")

    assert out == "smart host is smtp.provider.test:587 (TLS starttls, AUTH as relay@corp.test)\n" and err == ""
    route = SmartHost.objects.get()
    assert (route.domain, route.host, route.port, route.tls, route.verify_certificate, route.username) == (
        "", "smtp.provider.test", 587, "starttls", True, "relay@corp.test",
    )
    assert RELAY_SECRET not in route.password and secrets.decrypt(route.password) == RELAY_SECRET
    shown, _ = run("relay", "smarthost")
    listed, _ = run("relay", "list")
    assert RELAY_SECRET not in shown + listed and route.password not in shown + listed
    assert lines(shown) == [
        ["*", "smarthost", "smtp.provider.test:587", "tls", "starttls", "certificate", "checked", "auth",
         "relay@corp.test"],
    ]


def test_it_keeps_the_stored_password_for_the_same_user(db):
    actions.set_smarthost("smtp.provider.test", 587, username="relay@corp.test", password=RELAY_SECRET)

    run("relay", "smarthost", "smtp2.provider.test:465", "--user", "relay@corp.test")  # stdin is no terminal

    route = SmartHost.objects.get()
    assert (route.host, route.port, route.tls) == ("smtp2.provider.test", 465, "implicit")
    assert secrets.decrypt(route.password) == RELAY_SECRET
    assert refused("relay", "smarthost", "smtp2.provider.test:465", "--user", "someone@corp.test") == (
        "a password is needed to log in as someone@corp.test"
    )
    run("relay", "smarthost", "[2001:db8::25]:2525", "--tls", "none", "--no-verify-certificate")
    route = SmartHost.objects.get()
    assert (route.host, route.port, route.tls, route.verify_certificate, route.username, route.password) == (
        "2001:db8::25", 2525, "none", False, "", "",
    )


def test_it_refuses_a_bad_smart_host(db):
    assert refused("relay", "smarthost", "relay") == "next hop: 'relay' is not a fully qualified domain name"
    assert refused("relay", "smarthost", "smtp.provider.test:99999") == "port 99999 is out of range (1-65535)"
    assert refused("relay", "smarthost", "smtp.provider.test:smtp") == "'smtp' is not a port number"
    assert refused("relay", "smarthost", "2001:db8::25:25").startswith("'2001:db8::25:25' is not HOST or HOST:PORT")
    assert refused(
        "relay", "smarthost", "smtp.provider.test", "--tls", "opportunistic", "--user", "u", "--password-stdin",
        stdin="pw\n",
    ) == "sending a password needs TLS: use TLS mode 'starttls' or 'implicit'"
    assert refused("relay", "smarthost", "smtp.provider.test", "--password-stdin", stdin="pw\n") == (
        "--password-stdin needs --user"
    )
    assert refused("relay", "smarthost", "smtp.provider.test", "--clear") == "give HOST:PORT or --clear, not both"
    assert not SmartHost.objects.exists()


def test_it_clears_the_smart_host(db, settings):
    settings.MAILSUITE_RELAYHOST = ""
    assert refused("relay", "smarthost") == "no smart host is configured: mail goes to MX hosts"
    assert refused("relay", "smarthost", "--clear") == "no smart host is configured"
    run("relay", "smarthost", "smtp.provider.test")
    settings.MAILSUITE_RELAYHOST = "fallback.provider.test:25"
    assert run("relay", "smarthost", "--clear")[0] == (
        "cleared the smart host; mail goes to fallback.provider.test:25 (MAILSUITE_RELAYHOST)\n"
    )
    assert lines(run("relay", "smarthost")[0]) == [
        ["*", "smarthost", "fallback.provider.test:25", "(MAILSUITE_RELAYHOST)"],
    ]


# relay domain / transport / list / remove -------------------------------------------------


def test_it_adds_a_relay_domain_with_a_recipient_list(db, tmp_path):
    listed = tmp_path / "recipients.txt"
    listed.write_text("# the sales team\nAnna@Branch.test\nbo@branch.test\n\nanna@branch.test\n")

    out, _ = run("relay", "domain", "add", "Branch.TEST", "10.0.0.5:25", "--verify", "list",
                 "--recipients-file", str(listed))

    assert out == "relay domain branch.test → 10.0.0.5:25 (TLS opportunistic)\n"
    route = SmartHost.objects.get()
    assert (route.domain, route.accept_relay, route.verify_recipients, route.recipients) == (
        "branch.test", True, "list", "anna@branch.test\nbo@branch.test",
    )
    assert lines(run("relay", "list")[0]) == [
        ["branch.test", "relay", "10.0.0.5:25", "tls", "opportunistic", "certificate", "checked", "no", "auth",
         "verify", "list", "(2", "recipients)"],
    ]


def test_it_reads_the_recipient_list_from_stdin_and_checks_it(db):
    run("relay", "domain", "add", "branch.test", "mx.branch.test", "--verify", "list", "--recipients-file", "-",
        stdin="a@branch.test\n")
    assert SmartHost.objects.get().recipients == "a@branch.test"
    assert refused("relay", "domain", "add", "branch.test", "mx.branch.test", "--verify", "list", "--replace",
                   "--recipients-file", "-", stdin="a@elsewhere.test\n") == (
        "recipient list: a@elsewhere.test is not in branch.test"
    )
    assert refused("relay", "domain", "add", "branch.test", "mx.branch.test", "--verify", "list", "--replace") == (
        "verification 'list' needs the addresses of branch.test to accept"
    )
    assert refused("relay", "domain", "add", "branch.test", "mx.branch.test", "--replace", "--recipients-file", "-",
                   stdin="a@branch.test\n") == "a recipient list is only used with recipient verification 'list'"
    assert refused("relay", "domain", "add", "branch.test", "mx.branch.test", "--recipients-file", "/nonexistent") \
        .startswith("--recipients-file: cannot read /nonexistent")


def test_it_refuses_a_second_route_unless_replacing(db):
    run("relay", "domain", "add", "branch.test", "mx.branch.test", "--verify", "callout")

    assert refused("relay", "transport", "add", "branch.test", "other.branch.test") == (
        "branch.test already has a route: a relay domain via mx.branch.test:25"
    )
    out, _ = run("relay", "transport", "add", "branch.test", "other.branch.test:2525", "--replace")
    assert out == "transport for branch.test → other.branch.test:2525 (TLS opportunistic)\n"
    route = SmartHost.objects.get()
    assert (route.accept_relay, route.verify_recipients, route.host) == (False, "none", "other.branch.test")


def test_it_refuses_to_relay_or_route_a_local_domain(domain):
    account_actions.create_domain_alias("example.net", "example.test")
    assert refused("relay", "domain", "add", "example.test", "mx.other.test") == (
        "example.test is a local domain: its mail is delivered here (remove it first)"
    )
    assert refused("relay", "transport", "add", "example.net", "mx.other.test") == (
        "example.net is a local alias domain: its mail is delivered here (remove it first)"
    )
    assert not SmartHost.objects.exists()


def test_it_lists_and_removes_routes(db, settings):
    settings.MAILSUITE_RELAYHOST = "fallback.provider.test:25"
    run("relay", "transport", "add", "partner.test", "gw.partner.test:2525", "--tls", "starttls",
        "--user", "us", "--password-stdin", stdin="pw\n")
    run("relay", "domain", "add", "branch.test", "[192.0.2.7]", "--verify", "callout", "--tls", "implicit")

    assert lines(run("relay", "list")[0]) == [
        ["*", "smarthost", "fallback.provider.test:25", "(MAILSUITE_RELAYHOST)"],
        ["branch.test", "relay", "192.0.2.7:25", "tls", "implicit", "certificate", "checked", "no", "auth",
         "verify", "callout"],
        ["partner.test", "transport", "gw.partner.test:2525", "tls", "starttls", "certificate", "checked", "auth",
         "us"],
    ]
    assert run("relay", "remove", "Partner.test")[0] == "removed transport partner.test\n"
    assert run("relay", "remove", "branch.test")[0] == "removed relay domain branch.test\n"
    assert refused("relay", "remove", "branch.test") == "no route for branch.test"
    assert not SmartHost.objects.exists()


def test_it_refuses_bad_route_input(db):
    with pytest.raises(InvalidInput, match="unknown TLS mode 'ssl'"):
        actions.set_smarthost("smtp.provider.test", tls="ssl")
    with pytest.raises(InvalidInput, match="unknown recipient verification 'ldap'"):
        actions.add_relay_domain("branch.test", "mx.branch.test", verify_recipients="ldap")
    with pytest.raises(InvalidInput, match="a password needs a username"):
        actions.set_smarthost("smtp.provider.test", password="pw")
    with pytest.raises(InvalidInput, match="line breaks"):
        actions.set_smarthost("smtp.provider.test", tls="starttls", username="u", password="p\nw")
    with pytest.raises(NotFound):
        actions.remove_route("nowhere.test")
    actions.set_smarthost("smtp.provider.test")
    with pytest.raises(Conflict, match="a smart host is already set: smtp.provider.test:25"):
        actions.set_smarthost("smtp2.provider.test", replace=False)


# Exit status, as scripts see it -------------------------------------------------------------


@pytest.mark.sqlite_only  # manage.py runs on a data dir and SQLite file of its own in either pass
def test_it_exits_non_zero_with_one_line_on_failure(manage):
    listed = manage("queue", "list")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "", "")

    unknown = manage("queue", "show", "NOSUCHID")
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (
        1, "", "CommandError: no queued message with id NOSUCHID\n",
    )
    added = manage("relay", "smarthost", "smtp.provider.test:587", "--user", "u", "--password-stdin", stdin="pw\n")
    assert (added.returncode, added.stderr) == (0, "")
    bad = manage("relay", "domain", "add", "branch.test", "mx.branch.test:0")
    assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", "CommandError: port 0 is out of range (1-65535)\n")
