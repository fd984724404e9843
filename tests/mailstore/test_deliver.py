"""The MDA and mail store invariants: one blob per message, UIDs, MODSEQ, quota, events."""
import threading

import pytest
from django.db import connection, transaction

from accounts import actions as account_actions
from mailstore import actions, events
from mailstore.actions import OverQuota, Recipient, deliver
from mailstore.models import Blob, Folder, Message
from tests.conftest import inbox, message_bytes

RAW = b"From: m@elsewhere.test\r\nTo: alice@example.test\r\nSubject: test\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"


@pytest.mark.django_db
def test_it_creates_the_default_folders_with_special_use(alice):
    folders = {f.name: f for f in Folder.objects.filter(account=alice)}
    assert {name: f.special_use for name, f in folders.items()} == {
        "INBOX": "", "Drafts": "\\Drafts", "Sent": "\\Sent", "Archive": "\\Archive", "Junk": "\\Junk", "Trash": "\\Trash",
    }
    assert len({f.uidvalidity for f in folders.values()}) == 6
    assert all(f.uidnext == 1 and f.subscribed for f in folders.values())


@pytest.mark.django_db
def test_one_blob_serves_every_recipient(alice, bob):
    outcomes = deliver(RAW, [Recipient(alice, "alice@example.test"), Recipient(bob, "team@example.test")], return_path="m@elsewhere.test")
    assert [o.error for o in outcomes] == [None, None]
    assert Blob.objects.count() == 1
    [a], [b] = inbox(alice), inbox(bob)
    assert a.blob_id == b.blob_id
    assert message_bytes(a) == b"Return-Path: <m@elsewhere.test>\r\nDelivered-To: alice@example.test\r\n" + RAW
    assert message_bytes(b) == b"Return-Path: <m@elsewhere.test>\r\nDelivered-To: team@example.test\r\n" + RAW
    blob = a.blob
    assert blob.envelope[1] == "test" and blob.structure["type"] == "text"


@pytest.mark.django_db
def test_a_full_mailbox_fails_alone_and_unused_bytes_are_removed(alice, bob, blob_dir):
    account_actions.set_quota("alice@example.test", 10)
    outcomes = deliver(RAW, [Recipient(alice, "alice@example.test"), Recipient(bob, "bob@example.test")], return_path="")
    assert isinstance(outcomes[0].error, OverQuota)
    assert outcomes[1].message is not None
    assert len(inbox(bob)) == 1 and inbox(alice) == []

    account_actions.set_quota("bob@example.test", 10)
    deliver(RAW, [Recipient(bob, "bob@example.test")], return_path="")
    assert Blob.objects.count() == 1
    assert sum(1 for p in blob_dir.rglob("*") if p.is_file()) == 1


@pytest.mark.django_db
def test_append_keeps_flags_and_keywords(alice):
    message = actions.append(alice, "Drafts", RAW, flags=["\\Seen", "\\Draft", "$Forwarded", "\\Recent"])
    assert (message.seen, message.draft, message.flagged) == (True, True, False)
    assert message.flags == ["\\Seen", "\\Draft", "$Forwarded"]
    folder = Folder.objects.get(pk=message.folder_id)
    assert (folder.message_count, folder.unseen_count) == (1, 0)


@pytest.mark.django_db
def test_append_over_quota_is_refused(alice):
    account_actions.set_quota("alice@example.test", 10)
    with pytest.raises(OverQuota):
        actions.append(alice, "INBOX", RAW)
    assert Blob.objects.count() == 0


@pytest.mark.django_db
def test_expunge_gives_back_quota_and_bumps_modseq(alice):
    for _ in range(3):
        deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
    folder = Folder.objects.get(account=alice, name="INBOX")
    before = folder.highestmodseq
    assert actions.expunge(folder, [1, 3, 99]) == [1, 3]
    folder.refresh_from_db()
    alice.refresh_from_db()
    assert [m.uid for m in inbox(alice)] == [2]
    assert folder.highestmodseq == before + 1
    assert (folder.message_count, folder.unseen_count, folder.uidnext) == (1, 1, 4)
    assert alice.quota_used == folder.total_size == inbox(alice)[0].size


@pytest.mark.django_db
def test_a_recreated_folder_gets_a_new_uidvalidity(alice, monkeypatch):
    monkeypatch.setattr(actions, "clock", lambda: 1000)
    first = actions.create_folder(alice, "Projects")
    Folder.objects.filter(pk=first.pk).delete()
    second = actions.create_folder(alice, "Projects")
    assert second.uidvalidity > first.uidvalidity


@pytest.mark.django_db(transaction=True)
def test_change_events_are_published_after_commit(alice):
    seen = []
    unsubscribe = events.subscribe(seen.append)
    try:
        with transaction.atomic():
            deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
            assert seen == []
        [change] = seen
        assert (change.kind, change.account_id, change.uids) == ("append", alice.pk, (1,))
    finally:
        unsubscribe()


@pytest.mark.django_db(transaction=True)
def test_parallel_deliveries_into_one_folder_keep_the_invariants(alice):
    threads, per_thread, errors = 8, 15, []

    def worker():
        try:
            for _ in range(per_thread):
                [outcome] = deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
                assert outcome.error is None
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    total = threads * per_thread
    messages = inbox(alice)
    assert sorted(m.uid for m in messages) == list(range(1, total + 1))
    assert len({m.modseq for m in messages}) == total
    folder = Folder.objects.get(account=alice, name="INBOX")
    alice.refresh_from_db()
    assert (folder.uidnext, folder.message_count, folder.unseen_count) == (total + 1, total, total)
    assert folder.highestmodseq == max(m.modseq for m in messages)
    assert alice.quota_used == folder.total_size == sum(m.size for m in messages)
    assert Message.objects.values("blob").distinct().count() == total
