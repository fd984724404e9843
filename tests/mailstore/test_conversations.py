"""The folders' Conversation rows (one per thread per folder, for the webmail's grouped
list) follow every change to the messages in the same transaction: delivery, APPEND,
flags, COPY, MOVE, EXPUNGE, RENAME INBOX and DELETE. Each case compares the rows with
what grouping the folder's messages gives."""
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from django.db.models import Count, Max, Q

from mailstore import actions
from mailstore.actions import Recipient, deliver
from mailstore.models import Conversation, Folder, Message

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def mail(n, root=None, *, date=True, attachment=False):
    """Message n (its Message-ID <n@x>), a reply in the thread of `root` when given."""
    head = [f"From: m@elsewhere.test", "To: alice@example.test", f"Subject: message {n}", f"Message-ID: <{n}@x>"]
    if date:
        head.append("Date: " + format_datetime(BASE + timedelta(hours=n)))
    if root is not None:
        head += [f"In-Reply-To: <{root}@x>", f"References: <{root}@x>"]
    if attachment:
        head += ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b"']
        body = '--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"\r\n\r\nPDF\r\n--b--\r\n'
    else:
        body = "body\r\n"
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def to_alice(alice, raw, folder="INBOX"):
    [outcome] = deliver(raw, [Recipient(alice, "alice@example.test", folder)], return_path="m@elsewhere.test")
    assert outcome.error is None
    return outcome.message


def folder(account, name):
    return Folder.objects.get(account=account, name=name)


def kept(account, name):
    """The folder's Conversation rows: {thread_key: (latest_date, latest_id, messages, unread, flagged, attachments)}."""
    return {
        c.thread_key: (c.latest_date, c.latest_id, c.messages, c.unread, c.flagged, c.attachments)
        for c in Conversation.objects.filter(folder=folder(account, name))
    }


def grouped(account, name):
    """The same worked out from the folder's messages."""
    rows = (
        Message.objects.filter(folder=folder(account, name)).values("thread_key")
        .annotate(latest=Max("sent_date"), last=Max("id"), n=Count("id"), unread=Count("id", filter=Q(seen=False)),
                  flagged=Count("id", filter=Q(flagged=True)), attachments=Count("id", filter=Q(has_attachments=True)))
        .order_by()
    )
    return {r["thread_key"]: (r["latest"], r["last"], r["n"], r["unread"], r["flagged"], r["attachments"]) for r in rows}


def assert_in_line(account, *names):
    for name in names:
        assert kept(account, name) == grouped(account, name), name


@pytest.fixture
def threads(alice):
    """INBOX: a thread of three (1, 2, 3) and two lone messages (4 with an attachment, 5
    without a date)."""
    to_alice(alice, mail(1))
    to_alice(alice, mail(2, 1))
    to_alice(alice, mail(3, 1))
    to_alice(alice, mail(4, attachment=True))
    to_alice(alice, mail(5, date=False))
    return folder(alice, "INBOX")


def key_of(account, n):
    return Message.objects.filter(folder__account=account, message_id=f"<{n}@x>").values_list("thread_key", flat=True).first()


@pytest.mark.django_db
def test_it_keeps_a_row_per_thread_as_mail_arrives(alice, threads):
    rows = kept(alice, "INBOX")
    assert len(rows) == 3
    latest_date, latest_id, messages, unread, flagged, attachments = rows[key_of(alice, 1)]
    assert (latest_date, messages, unread, flagged, attachments) == (BASE + timedelta(hours=3), 3, 3, 0, 0)
    assert latest_id == Message.objects.get(message_id="<3@x>").pk
    assert rows[key_of(alice, 4)][2:] == (1, 1, 0, 1)
    assert rows[key_of(alice, 5)][0] is None
    assert_in_line(alice, "INBOX")
    # APPEND (and a batch of several) goes the same way.
    actions.append_many(alice, "Archive", [(mail(6), ("\\Seen",), None), (mail(7, 6), ("\\Flagged",), None)])
    assert kept(alice, "Archive") == {key_of(alice, 6): (BASE + timedelta(hours=7), Message.objects.get(message_id="<7@x>").pk, 2, 1, 1, 0)}


@pytest.mark.django_db
def test_it_counts_read_and_flagged_messages_as_flags_change(alice, threads):
    uids = dict(Message.objects.filter(folder=threads).values_list("message_id", "uid"))
    actions.store_flags(threads, [uids["<1@x>"], uids["<2@x>"]], mode="add", flags=["\\Seen", "\\Flagged"])
    assert kept(alice, "INBOX")[key_of(alice, 1)][2:] == (3, 1, 2, 0)
    actions.store_flags(threads, [uids["<1@x>"]], mode="remove", flags=["\\Flagged"])
    actions.store_flags(threads, [uids["<3@x>"]], mode="add", flags=["$Label", "\\Answered"])  # not counted
    assert kept(alice, "INBOX")[key_of(alice, 1)][2:] == (3, 1, 1, 0)
    actions.store_flags(threads, list(uids.values()), mode="set", flags=["\\Seen"])
    assert_in_line(alice, "INBOX")
    assert all(row[3] == 0 and row[4] == 0 for row in kept(alice, "INBOX").values())


@pytest.mark.django_db
def test_it_follows_moves_copies_and_expunges(alice, threads):
    uids = dict(Message.objects.filter(folder=threads).values_list("message_id", "uid"))
    actions.move_messages(threads, [uids["<3@x>"]], "Archive")  # the thread's newest leaves
    assert kept(alice, "INBOX")[key_of(alice, 1)][:3] == (BASE + timedelta(hours=2), Message.objects.get(message_id="<2@x>", folder=threads).pk, 2)
    assert kept(alice, "Archive")[key_of(alice, 1)][2] == 1
    actions.copy_messages(threads, [uids["<1@x>"], uids["<4@x>"]], "Archive")
    assert_in_line(alice, "INBOX", "Archive")
    actions.expunge(threads, [uids["<1@x>"], uids["<2@x>"], uids["<5@x>"]])  # the whole thread and a lone one
    assert set(kept(alice, "INBOX")) == {key_of(alice, 4)}
    assert_in_line(alice, "INBOX", "Archive")
    actions.move_messages(folder(alice, "Archive"), [1, 2, 3], "INBOX")
    assert kept(alice, "Archive") == {}
    assert_in_line(alice, "INBOX")


@pytest.mark.django_db
def test_renaming_inbox_takes_the_rows_along_and_deleting_a_folder_drops_them(alice, threads):
    before = kept(alice, "INBOX")
    actions.rename_folder(alice, "INBOX", "Old")
    assert kept(alice, "INBOX") == {} and kept(alice, "Old") == before
    actions.delete_folder(alice, "Old")
    assert not Conversation.objects.filter(folder__account=alice).exists()


@pytest.mark.django_db
def test_a_rebuild_recomputes_a_folders_rows(alice, threads):
    expected = kept(alice, "INBOX")
    Conversation.objects.filter(folder=threads).update(messages=99)
    Conversation.objects.filter(folder=threads, thread_key=key_of(alice, 4)).delete()
    actions.rebuild_conversations(threads)
    assert kept(alice, "INBOX") == expected
