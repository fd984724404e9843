"""STORE, COPY, MOVE, EXPUNGE and VANISHED on the mail store: exact rows, MODSEQ,
counters, quota usage, tombstones and the change events published after commit."""
import threading

import pytest
from django.db import connection

from accounts import actions as account_actions
from mailstore import actions, events
from mailstore.actions import CopyResult, NoSuchFolder, OverQuota, Recipient, StoreResult, deliver
from mailstore.models import Blob, ExpungedMessage, Folder, Message

RAW = b"From: m@elsewhere.test\r\nTo: alice@example.test\r\nSubject: test\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"


def deliver_to_alice(alice, count):
    for _ in range(count):
        [outcome] = deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="m@elsewhere.test")
        assert outcome.error is None


def folder(account, name):
    return Folder.objects.get(account=account, name=name)


def rows(account, name):
    """(uid, flags, modseq) of every message in a folder."""
    return [(m.uid, tuple(m.flags), m.modseq) for m in Message.objects.filter(folder=folder(account, name)).order_by("uid")]


@pytest.fixture
def published():
    seen = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()


@pytest.fixture
def three(alice):
    """Alice's INBOX with UIDs 1-3, unseen, MODSEQ 2-4 (the folder starts at 1)."""
    deliver_to_alice(alice, 3)
    return folder(alice, "INBOX")


# STORE ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_adds_flags_and_gives_only_changed_messages_one_new_modseq(alice, three, published, django_capture_on_commit_callbacks):
    assert rows(alice, "INBOX") == [(1, (), 2), (2, (), 3), (3, (), 4)]
    with django_capture_on_commit_callbacks(execute=True):
        result = actions.store_flags(three, [1, 2, 99], mode="add", flags=["\\SEEN", "$Label", "\\Recent", "$label"])
    assert result == StoreResult(changed=[(1, ("\\Seen", "$Label"), 5), (2, ("\\Seen", "$Label"), 5)], modified=[], modseq=5)
    assert rows(alice, "INBOX") == [(1, ("\\Seen", "$Label"), 5), (2, ("\\Seen", "$Label"), 5), (3, (), 4)]
    inbox = folder(alice, "INBOX")
    assert (inbox.highestmodseq, inbox.unseen_count, inbox.message_count) == (5, 1, 3)
    assert published == [events.Change("flags", alice.pk, inbox.pk, (1, 2), 5)]

    # Adding what is already there changes only message 3.
    result = actions.store_flags(inbox, [1, 2, 3], mode="add", flags=["\\Seen", "$LABEL"])
    assert result.changed == [(3, ("\\Seen", "$LABEL"), 6)]
    assert rows(alice, "INBOX")[:2] == [(1, ("\\Seen", "$Label"), 5), (2, ("\\Seen", "$Label"), 5)]
    assert folder(alice, "INBOX").unseen_count == 0


@pytest.mark.django_db
def test_it_removes_and_sets_flags_and_keeps_unseen_count(alice, three):
    actions.store_flags(three, [1, 2, 3], mode="set", flags=["\\Flagged", "$A", "$B", "\\Seen"])
    result = actions.store_flags(three, [1, 2], mode="remove", flags=["\\seen", "$a", "$Missing"])
    assert result.changed == [(1, ("\\Flagged", "$B"), 6), (2, ("\\Flagged", "$B"), 6)]
    assert folder(alice, "INBOX").unseen_count == 2
    result = actions.store_flags(three, [2, 3], mode="set", flags=["\\Draft", "\\Answered", "$C"])
    assert result.changed == [(2, ("\\Answered", "\\Draft", "$C"), 7), (3, ("\\Answered", "\\Draft", "$C"), 7)]
    assert rows(alice, "INBOX") == [
        (1, ("\\Flagged", "$B"), 6),
        (2, ("\\Answered", "\\Draft", "$C"), 7),
        (3, ("\\Answered", "\\Draft", "$C"), 7),
    ]
    inbox = folder(alice, "INBOX")
    assert (inbox.unseen_count, inbox.highestmodseq) == (3, 7)


@pytest.mark.django_db
def test_a_store_that_changes_nothing_bumps_nothing(alice, three, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = actions.store_flags(three, [1, 2, 3], mode="remove", flags=["\\Seen"])
    assert result == StoreResult(changed=[], modified=[], modseq=None)
    assert folder(alice, "INBOX").highestmodseq == 4
    assert published == []


@pytest.mark.django_db
def test_unchangedsince_leaves_messages_modified_since_and_reports_them(alice, three):
    # RFC 7162 §3.1.3: MODSEQs are 2, 3, 4; UNCHANGEDSINCE 3 refuses message 3 only.
    result = actions.store_flags(three, [1, 2, 3], mode="add", flags=["\\Flagged"], unchangedsince=3)
    assert result == StoreResult(changed=[(1, ("\\Flagged",), 5), (2, ("\\Flagged",), 5)], modified=[3], modseq=5)
    assert rows(alice, "INBOX")[2] == (3, (), 4)
    assert actions.store_flags(three, [1], mode="add", flags=["\\Seen"], unchangedsince=0).modified == [1]


@pytest.mark.django_db
def test_it_refuses_an_unknown_store_mode(alice, three):
    with pytest.raises(ValueError):
        actions.store_flags(three, [1], mode="replace", flags=["\\Seen"])


def double_inbox_to(alice, total):
    """Grow alice's one-message INBOX to `total` messages by copying it into itself."""
    inbox = folder(alice, "INBOX")
    while inbox.message_count < total:
        count = min(inbox.message_count, total - inbox.message_count)
        actions.copy_messages(inbox, range(1, count + 1), "INBOX")
        inbox.refresh_from_db()
    return inbox


@pytest.mark.django_db
def test_a_store_on_ten_thousand_messages_takes_a_bounded_number_of_queries(alice, django_assert_max_num_queries):
    deliver_to_alice(alice, 1)
    inbox = double_inbox_to(alice, 10_000)
    assert inbox.uidnext == 10_001
    with django_assert_max_num_queries(8):
        result = actions.store_flags(inbox, range(1, 10_001), mode="add", flags=["\\Seen"])
    assert len(result.changed) == 10_000 and result.modseq == inbox.highestmodseq + 1
    # Every other message (no ranges: 5000 single UIDs) gets a keyword ...
    with django_assert_max_num_queries(30):
        actions.store_flags(inbox, range(1, 10_001, 2), mode="add", flags=["$Odd"])
    # ... so this STORE meets two flag states, and writes each in batches.
    with django_assert_max_num_queries(30):
        result = actions.store_flags(inbox, range(1, 10_001), mode="add", flags=["$All"])
    assert {flags for _, flags, _ in result.changed} == {("\\Seen", "$Odd", "$All"), ("\\Seen", "$All")}
    inbox.refresh_from_db()
    assert (inbox.unseen_count, inbox.message_count) == (0, 10_000)
    assert Message.objects.filter(folder=inbox, modseq=inbox.highestmodseq).count() == 10_000


# COPY ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_copy_shares_the_bytes_and_keeps_flags_dates_and_fields(alice, three, published, django_capture_on_commit_callbacks):
    actions.store_flags(three, [2], mode="add", flags=["\\Seen", "$Work"])
    archive = folder(alice, "Archive")
    blobs = Blob.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        result = actions.copy_messages(three, [3, 2, 7], "Archive")
    assert result == CopyResult(archive.uidvalidity, [(2, 1), (3, 2)])
    assert rows(alice, "Archive") == [(1, ("\\Seen", "$Work"), 2), (2, (), 2)]
    archive.refresh_from_db()
    assert (archive.uidnext, archive.highestmodseq, archive.message_count, archive.unseen_count) == (3, 2, 2, 1)
    originals = {m.uid: m for m in Message.objects.filter(folder=three)}
    for source_uid, copy in zip((2, 3), Message.objects.filter(folder=archive).order_by("uid")):
        original = originals[source_uid]
        assert (copy.blob_id, bytes(copy.prefix), copy.internaldate, copy.size, copy.subject, copy.message_id) == (
            original.blob_id, bytes(original.prefix), original.internaldate, original.size, original.subject, original.message_id,
        )
    assert Blob.objects.count() == blobs
    alice.refresh_from_db()
    inbox = folder(alice, "INBOX")
    assert archive.total_size == originals[2].size + originals[3].size
    assert alice.quota_used == inbox.total_size + archive.total_size
    assert rows(alice, "INBOX") == [(1, (), 2), (2, ("\\Seen", "$Work"), 5), (3, (), 4)]
    assert published == [events.Change("append", alice.pk, archive.pk, (1, 2), 2)]


@pytest.mark.django_db
def test_copy_names_the_target_case_insensitively_only_for_inbox(alice, three):
    trash = folder(alice, "Trash")
    actions.copy_messages(three, [1], "Trash")
    assert actions.copy_messages(trash, [1], "inbox").pairs == [(1, 4)]
    with pytest.raises(NoSuchFolder):
        actions.copy_messages(three, [1], "trash")
    with pytest.raises(NoSuchFolder):
        actions.copy_messages(three, [1], "Nowhere")


@pytest.mark.django_db
def test_copy_over_quota_is_refused_and_changes_nothing(alice, three):
    alice.refresh_from_db()
    account_actions.set_quota("alice@example.test", alice.quota_used + 10)
    with pytest.raises(OverQuota):
        actions.copy_messages(three, [1], "Archive")
    archive = folder(alice, "Archive")
    assert (archive.uidnext, archive.highestmodseq, archive.message_count) == (1, 1, 0)
    assert not Message.objects.filter(folder=archive).exists()


@pytest.mark.django_db
def test_copying_nothing_changes_nothing(alice, three):
    archive = folder(alice, "Archive")
    assert actions.copy_messages(three, [42], "Archive") == CopyResult(archive.uidvalidity, [])
    archive.refresh_from_db()
    assert (archive.uidnext, archive.highestmodseq) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_into_one_folder_get_distinct_ascending_uids(alice):
    deliver_to_alice(alice, 3)
    inbox, errors, results = folder(alice, "INBOX"), [], []

    def worker():
        try:
            for _ in range(10):
                results.append(actions.copy_messages(inbox, [1, 2, 3], "Archive"))
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    pool = [threading.Thread(target=worker) for _ in range(2)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    for result in results:
        sources, new = zip(*result.pairs)
        assert sources == (1, 2, 3) and new == tuple(range(new[0], new[0] + 3))
    assert sorted(uid for result in results for _, uid in result.pairs) == list(range(1, 61))
    archive = folder(alice, "Archive")
    messages = list(Message.objects.filter(folder=archive))
    assert sorted(m.uid for m in messages) == list(range(1, 61))
    assert (archive.uidnext, archive.message_count, archive.highestmodseq) == (61, 60, 21)
    alice.refresh_from_db()
    assert alice.quota_used == archive.total_size + inbox.total_size == sum(m.size for m in messages) + inbox.total_size


# MOVE and EXPUNGE ---------------------------------------------------------------------


@pytest.mark.django_db
def test_move_copies_and_expunges_in_one_step_with_tombstones(alice, three, published, django_capture_on_commit_callbacks):
    actions.store_flags(three, [3], mode="add", flags=["\\Seen"])
    alice.refresh_from_db()
    used = alice.quota_used
    # A full mailbox can still move: the move frees what it uses.
    account_actions.set_quota("alice@example.test", used)
    trash = folder(alice, "Trash")
    with django_capture_on_commit_callbacks(execute=True):
        result = actions.move_messages(three, [1, 3], "Trash")
    assert result == CopyResult(trash.uidvalidity, [(1, 1), (3, 2)])
    assert rows(alice, "INBOX") == [(2, (), 3)]
    assert rows(alice, "Trash") == [(1, (), 2), (2, ("\\Seen",), 2)]
    inbox, trash = folder(alice, "INBOX"), folder(alice, "Trash")
    assert (inbox.highestmodseq, inbox.message_count, inbox.unseen_count, inbox.uidnext) == (6, 1, 1, 4)
    assert (trash.highestmodseq, trash.message_count, trash.unseen_count, trash.uidnext) == (2, 2, 1, 3)
    alice.refresh_from_db()
    assert alice.quota_used == used == inbox.total_size + trash.total_size
    assert sorted(ExpungedMessage.objects.filter(folder=inbox).values_list("uid", "modseq")) == [(1, 6), (3, 6)]
    assert published == [
        events.Change("append", alice.pk, trash.pk, (1, 2), 2),
        events.Change("expunge", alice.pk, inbox.pk, (1, 3), 6),
    ]
    assert actions.vanished_since(inbox, 5) == [1, 3]
    assert actions.vanished_since(inbox, 6) == []


@pytest.mark.django_db
def test_move_within_one_folder_renumbers_at_one_modseq(alice, three):
    result = actions.move_messages(three, [1, 2], "INBOX")
    assert result.pairs == [(1, 4), (2, 5)]
    assert rows(alice, "INBOX") == [(3, (), 4), (4, (), 5), (5, (), 5)]
    inbox = folder(alice, "INBOX")
    assert (inbox.highestmodseq, inbox.message_count, inbox.unseen_count, inbox.uidnext) == (5, 3, 3, 6)
    assert actions.vanished_since(inbox, 4) == [1, 2]


@pytest.mark.django_db
def test_move_to_a_missing_folder_changes_nothing(alice, three):
    with pytest.raises(NoSuchFolder):
        actions.move_messages(three, [1], "Nowhere")
    assert [uid for uid, _, _ in rows(alice, "INBOX")] == [1, 2, 3]
    assert not ExpungedMessage.objects.exists()


@pytest.mark.django_db
def test_expunge_writes_tombstones_at_its_modseq(alice, three, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert actions.expunge(three, [3, 1, 99]) == [1, 3]
    assert sorted(ExpungedMessage.objects.filter(folder=three).values_list("uid", "modseq")) == [(1, 5), (3, 5)]
    assert published == [events.Change("expunge", alice.pk, three.pk, (1, 3), 5)]
    assert actions.expunge(three, [2]) == [2]
    assert actions.vanished_since(three, 1) == [1, 2, 3]
    assert actions.vanished_since(three, 5) == [2]
    assert actions.vanished_since(three, 0, uids=[2, 3, 4]) == [2, 3]
    inbox = folder(alice, "INBOX")
    alice.refresh_from_db()
    assert (inbox.message_count, inbox.unseen_count, inbox.total_size, inbox.highestmodseq, alice.quota_used) == (0, 0, 0, 6, 0)
