"""Scripts at delivery: mail accepted like SMTP does (mta.inbound), filed, flagged,
rejected, redirected and answered; and the queue's local deliveries."""
import logging

import pytest

from accounts import actions as account_actions
from accounts.models import SendLimitAlert
from accounts.resolve import resolve
from mailstore.models import Folder, Message
from mailstore.storage import blob_storage
from mta import inbound
from mta.delivery import deliver_domain
from mta.models import QueuedMessage, QueuedRecipient
from sieve import actions
from sieve.models import VacationReply
from tests.conftest import inbox, message_bytes

pytestmark = pytest.mark.django_db

SENDER = "mallory@elsewhere.test"


def mail(subject="Quarterly report", *, to="alice@example.test", extra=b""):
    return (
        f"From: Mallory <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((subject, to)))}@elsewhere.test>\r\n".encode()
        + extra
        + b"\r\nHello.\r\n"
    )


def accept(raw, *recipients, mail_from=SENDER):
    return inbound.accept_message(
        raw, mail_from=mail_from, resolutions=[resolve(r) for r in recipients or ["alice@example.test"]],
        client_ip="127.0.0.1",
    )


def folder_messages(account, name):
    return list(Message.objects.filter(folder__account=account, folder__name=name).order_by("uid"))


def script(account, text, name="main"):
    return actions.put_script(account, name, text, activate=True)


def queued():
    """[(envelope sender, [recipient addresses], blob bytes)] on the outbound queue."""
    rows = []
    for message in QueuedMessage.objects.order_by("pk"):
        with blob_storage().open(message.blob.name, "rb") as f:
            data = f.read()
        addresses = list(message.recipients.order_by("pk").values_list("address", flat=True))
        rows.append((message.srs_sender or message.mail_from, addresses, data))
    return rows


# --- Filing and flags ---------------------------------------------------------------------------


def test_it_files_and_flags_as_the_script_says(alice):
    script(alice, 'require ["fileinto", "imap4flags"];\n'
                  'if header :contains "subject" "report" { fileinto :flags ["\\\\Flagged", "$Report"] "Archive"; }')
    assert accept(mail()).startswith("250 ")
    [message] = folder_messages(alice, "Archive")
    assert message.flags == ["\\Flagged", "$Report"]
    assert message_bytes(message).startswith(b"Return-Path: <mallory@elsewhere.test>\r\nDelivered-To: alice@example.test\r\n")
    assert inbox(alice) == []
    accept(mail("Lunch?"))
    assert len(inbox(alice)) == 1


def test_without_a_script_mail_goes_to_inbox(alice, bob):
    script(bob, "discard;")
    assert accept(mail(), "alice@example.test", "bob@example.test").startswith("250 ")
    assert len(inbox(alice)) == 1 and inbox(bob) == []


def test_a_missing_folder_is_created_only_with_create(alice):
    script(alice, 'require ["fileinto", "mailbox"]; fileinto "Projects/X"; fileinto :create "Projects/Y";')
    accept(mail())
    assert Folder.objects.filter(account=alice, name="Projects/X").exists() is False
    assert len(folder_messages(alice, "Projects/Y")) == 1
    assert len(inbox(alice)) == 1  # fileinto a folder that does not exist: INBOX


def test_subaddress_of_the_envelope_recipient(alice):
    script(alice, 'require ["fileinto", "envelope", "subaddress", "variables", "mailbox"];\n'
                  'if envelope :matches :detail "to" "*" { fileinto :create "${1}"; }')
    accept(mail(to="alice+shop@example.test"), "alice+shop@example.test")
    assert len(folder_messages(alice, "shop")) == 1


def test_a_failing_script_delivers_to_inbox_and_logs(alice, caplog):
    script(alice, 'require ["regex", "variables", "fileinto"]; set "p" "(";\n'
                  'if header :regex "subject" "${p}" { fileinto "Archive"; }')
    with caplog.at_level(logging.WARNING, logger="sieve.delivery"):
        assert accept(mail()).startswith("250 ")
    assert len(inbox(alice)) == 1
    assert "sieve script failed account=alice@example.test" in caplog.text


def test_a_global_before_script_runs_first(alice, bob):
    actions.set_global_script("junk", 'require ["fileinto", "imap4flags"]; addflag "$Checked";\n'
                                      'if header :contains "subject" "viagra" { fileinto "Junk"; stop; }', position="before")
    script(alice, 'require "fileinto"; fileinto "Archive";')
    accept(mail("cheap viagra"), "alice@example.test", "bob@example.test")
    accept(mail("hello"), "alice@example.test")
    assert len(folder_messages(alice, "Junk")) == 1 and len(folder_messages(bob, "Junk")) == 1
    [archived] = folder_messages(alice, "Archive")
    assert archived.flags == []  # the user's script does not use imap4flags
    assert inbox(alice) == []


# --- Reject (RFC 5429) ---------------------------------------------------------------------------


def test_reject_at_smtp_time_when_every_recipient_rejects(alice):
    script(alice, 'require "reject"; if header :contains "subject" "offer" { reject "No offers, thank you."; }')
    assert accept(mail("A great offer")) == "550 5.7.1 No offers, thank you."
    assert Message.objects.count() == 0 and QueuedMessage.objects.count() == 0


def test_reject_by_one_recipient_of_several_sends_a_dsn(alice, bob):
    script(alice, 'require "ereject"; ereject "Not here";')
    assert accept(mail(), "alice@example.test", "bob@example.test").startswith("250 ")
    assert inbox(alice) == [] and len(inbox(bob)) == 1
    [(sender, recipients, report)] = queued()
    assert (sender, recipients) == ("", [SENDER])
    assert b"Final-Recipient: rfc822; alice@example.test" in report
    assert b"Status: 5.7.1" in report and b"550 5.7.1 Not here" in report


def test_reject_of_a_bounce_sends_nothing(alice, bob):
    script(alice, 'require "reject"; reject "no";')
    assert accept(mail(), "alice@example.test", "bob@example.test", mail_from="").startswith("250 ")
    assert queued() == []


# --- Redirect ------------------------------------------------------------------------------------


def test_redirect_goes_to_the_queue_with_srs_and_delivered_to(alice):
    script(alice, 'redirect "alice@elsewhere.test";')
    assert accept(mail()).startswith("250 ")
    assert inbox(alice) == []
    [(sender, recipients, data)] = queued()
    assert sender.startswith("SRS0=") and recipients == ["alice@elsewhere.test"]
    assert data.startswith(b"Delivered-To: alice@example.test\r\n")


def test_redirect_copy_keeps_a_copy(alice):
    script(alice, 'require "copy"; redirect :copy "alice@elsewhere.test";')
    accept(mail())
    assert len(inbox(alice)) == 1 and len(queued()) == 1


def test_a_message_that_comes_back_is_kept_not_redirected_again(alice, caplog):
    script(alice, 'redirect "alice@elsewhere.test";')
    looped = mail(extra=b"Delivered-To: alice@example.test\r\n")
    with caplog.at_level(logging.WARNING, logger="sieve.delivery"):
        accept(looped)
    assert queued() == [] and len(inbox(alice)) == 1
    assert "redirect loop" in caplog.text


def test_redirects_between_two_local_accounts_stop(alice, bob):
    script(alice, 'redirect "bob@example.test";')
    script(bob, 'redirect "alice@example.test";')
    accept(mail())
    for _ in range(5):
        deliver_domain("")
    # alice → bob → alice, who sees her own Delivered-To and keeps it.
    assert len(inbox(alice)) == 1 and inbox(bob) == []
    assert QueuedRecipient.objects.filter(state=QueuedRecipient.State.DELIVERED).count() == 2


def test_redirects_are_limited_per_script_and_by_sending_limits(alice, settings, caplog):
    script(alice, "".join(f'redirect "r{i}@elsewhere.test";' for i in range(5)))
    accept(mail())
    assert len(inbox(alice)) == 1 and queued() == []  # more than 4: the script fails

    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 1
    script(alice, 'redirect "alice@elsewhere.test";')
    accept(mail("one"))
    with caplog.at_level(logging.WARNING, logger="sieve.delivery"):
        accept(mail("two"))
    assert len(queued()) == 1 and len(inbox(alice)) == 2
    assert "Sending limit reached" in caplog.text
    assert SendLimitAlert.objects.filter(account=alice).exists()


# --- Vacation (RFC 5230, RFC 3834) ----------------------------------------------------------------

VACATION = 'require "vacation"; vacation :days 7 :subject "Out of office" "I am away until Monday.";'


def test_vacation_answers_once_per_sender_per_period(alice):
    script(alice, VACATION)
    accept(mail("first"))
    accept(mail("second"))
    [(sender, recipients, reply)] = queued()
    assert (sender, recipients) == ("", [SENDER])
    assert b"Subject: Out of office\r\n" in reply and b"Auto-Submitted: auto-replied" in reply
    assert b"From: alice@example.test\r\n" in reply and b"In-Reply-To: <" in reply
    assert reply.endswith(b"\r\n\r\nI am away until Monday.\r\n")
    assert len(inbox(alice)) == 2
    # A new period answers again.
    VacationReply.objects.update(sent_at=VacationReply.objects.get().sent_at.replace(year=2000))
    accept(mail("third"))
    assert len(queued()) == 2


@pytest.mark.parametrize(
    "mail_from, extra, to",
    [
        ("", b"", "alice@example.test"),  # <>: a bounce
        (SENDER, b"List-Id: <news.elsewhere.test>\r\n", "alice@example.test"),
        (SENDER, b"Precedence: bulk\r\n", "alice@example.test"),
        (SENDER, b"Auto-Submitted: auto-generated\r\n", "alice@example.test"),
        ("owner-news@elsewhere.test", b"", "alice@example.test"),
        ("MAILER-DAEMON@elsewhere.test", b"", "alice@example.test"),
        (SENDER, b"", "undisclosed-recipients:;"),  # alice is not named in To/Cc
    ],
    ids=["null sender", "list-id", "precedence bulk", "auto-submitted", "owner-", "mailer-daemon", "not addressed"],
)
def test_vacation_never_answers_lists_robots_or_bounces(alice, mail_from, extra, to):
    script(alice, VACATION)
    assert accept(mail(to=to, extra=extra), mail_from=mail_from).startswith("250 ")
    assert queued() == [] and len(inbox(alice)) == 1


def test_vacation_to_a_local_sender_is_delivered_from_the_queue(alice, bob):
    script(alice, VACATION)
    accept(mail(), mail_from="bob@example.test")
    deliver_domain("")
    [reply] = inbox(bob)
    assert reply.subject == "Out of office"
    assert message_bytes(reply).startswith(b"Return-Path: <>\r\n")


# --- The queue's local deliveries run scripts too --------------------------------------------------


def test_a_queued_local_delivery_is_filtered(alice, bob):
    script(alice, 'redirect "bob@example.test";')
    script(bob, 'require "fileinto"; fileinto "Archive";')
    accept(mail())
    deliver_domain("")
    assert len(folder_messages(bob, "Archive")) == 1


def test_a_reject_in_a_queued_delivery_bounces(alice, bob):
    script(alice, 'redirect "bob@example.test";')
    script(bob, 'require "reject"; reject "Bob takes no forwarded mail";')
    accept(mail())
    deliver_domain("")
    recipient = QueuedRecipient.objects.get(address="bob@example.test")
    assert recipient.state == QueuedRecipient.State.BOUNCED
    assert recipient.last_error == "550 5.7.1 Bob takes no forwarded mail"


def test_a_full_mailbox_defers_and_the_script_runs_again(alice, bob):
    script(bob, 'require "fileinto"; fileinto "Archive";')
    account_actions.set_quota("bob@example.test", 10)
    assert accept(mail(), "alice@example.test", "bob@example.test").startswith("250 ")
    assert folder_messages(bob, "Archive") == []
    account_actions.set_quota("bob@example.test", 10**9)
    deliver_domain("")
    assert len(folder_messages(bob, "Archive")) == 1
