"""Folder structure: CREATE, RENAME, DELETE, SUBSCRIBE and tombstone pruning, with
exact names, UIDVALIDITY, counters, quota usage and change events."""
from datetime import timedelta

import pytest
from django.utils import timezone

from mailstore import actions, events
from mailstore.actions import CannotDelete, FolderExists, InvalidFolderName, NoSuchFolder, Recipient, deliver
from mailstore.models import ExpungedMessage, Folder, Message, Subscription

RAW = b"From: m@elsewhere.test\r\nTo: alice@example.test\r\nSubject: test\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"
DEFAULTS = ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]


def names(account):
    return sorted(Folder.objects.filter(account=account).values_list("name", flat=True))


def folder(account, name):
    return Folder.objects.get(account=account, name=name)


@pytest.fixture
def published():
    seen = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()


@pytest.fixture
def counter(alice, monkeypatch):
    """UIDVALIDITY's clock stands still from here: new folders get the account's counter
    plus one, two, ...; returns the counter's value now."""
    monkeypatch.setattr(actions, "clock", lambda: 1000)
    alice.refresh_from_db()
    return alice.uidvalidity_counter


# CREATE -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_makes_missing_parents_and_publishes(alice, counter, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = actions.create_folder(alice, "Projects/2026/Q1")
    assert names(alice) == sorted(DEFAULTS + ["Projects", "Projects/2026", "Projects/2026/Q1"])
    parents = [folder(alice, "Projects"), folder(alice, "Projects/2026")]
    assert [f.uidvalidity for f in parents] + [created.uidvalidity] == [counter + 1, counter + 2, counter + 3]
    assert all(f.subscribed for f in parents)
    assert published == [events.Change("folder", alice.pk, created.pk)]
    assert actions.create_folder(alice, "Projects/2026/Q2").uidvalidity == counter + 4


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["INBOX", "inbox", "InBoX", "Trash", "Projects"])
def test_create_refuses_a_name_that_exists(alice, name):
    actions.create_folder(alice, "Projects")
    with pytest.raises(FolderExists):
        actions.create_folder(alice, name)


@pytest.mark.django_db
def test_inbox_children_are_named_under_inbox_in_any_case(alice):
    assert actions.create_folder(alice, "inbox/Lists").name == "INBOX/Lists"
    with pytest.raises(FolderExists):
        actions.create_folder(alice, "Inbox/Lists")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["", "/Projects", "Projects/", "Projects//Q1", "a\x00b", "tab\there", "del\x7f", "c1\x85", "star*", "per%cent", "x" * 1001],
)
def test_create_refuses_invalid_names(alice, name):
    with pytest.raises(InvalidFolderName):
        actions.create_folder(alice, name)
    assert names(alice) == DEFAULTS


@pytest.mark.django_db
def test_create_accepts_the_longest_name_and_non_ascii(alice):
    assert actions.create_folder(alice, "x" * 1000).name == "x" * 1000
    assert actions.create_folder(alice, "Entwürfe/日本").name == "Entwürfe/日本"


# RENAME -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rename_moves_the_subtree_and_keeps_uidvalidity(alice, counter, published, django_capture_on_commit_callbacks):
    for name in ("Work/a", "Work/a/deep", "Workshop"):
        actions.create_folder(alice, name)
    before = {f.name: (f.pk, f.uidvalidity, f.highestmodseq) for f in Folder.objects.filter(account=alice)}
    with django_capture_on_commit_callbacks(execute=True):
        actions.rename_folder(alice, "Work", "Done/2026")
    assert names(alice) == sorted(DEFAULTS + ["Done", "Done/2026", "Done/2026/a", "Done/2026/a/deep", "Workshop"])
    for old, new in (("Work", "Done/2026"), ("Work/a", "Done/2026/a"), ("Work/a/deep", "Done/2026/a/deep")):
        renamed = folder(alice, new)
        pk, uidvalidity, modseq = before[old]
        assert (renamed.pk, renamed.uidvalidity, renamed.highestmodseq) == (pk, uidvalidity, modseq + 1)
    assert folder(alice, "Workshop").highestmodseq == before["Workshop"][2]
    assert folder(alice, "Done").uidvalidity == counter + 5  # created: the next value
    assert published == [events.Change("folder", alice.pk)]


@pytest.mark.django_db
def test_a_renamed_folder_keeps_its_messages_and_uids(alice):
    actions.create_folder(alice, "Work")
    for _ in range(2):
        deliver(RAW, [Recipient(alice, "alice@example.test", folder="Work")], return_path="")
    actions.rename_folder(alice, "Work", "Old work")
    renamed = folder(alice, "Old work")
    assert list(Message.objects.filter(folder=renamed).order_by("uid").values_list("uid", flat=True)) == [1, 2]
    assert (renamed.message_count, renamed.uidnext) == (2, 3)


@pytest.mark.django_db
def test_rename_refuses_taken_names_missing_folders_and_itself(alice):
    for name in ("Work/a", "Done/a"):
        actions.create_folder(alice, name)
    with pytest.raises(FolderExists):
        actions.rename_folder(alice, "Work", "Trash")
    with pytest.raises(FolderExists):
        actions.rename_folder(alice, "Work", "Done")  # Done/a, Work/a's new name, is taken too
    with pytest.raises(FolderExists):
        actions.rename_folder(alice, "Work", "inbox")
    with pytest.raises(NoSuchFolder):
        actions.rename_folder(alice, "Nowhere", "Somewhere")
    with pytest.raises(NoSuchFolder):
        actions.rename_folder(alice, "work", "Somewhere")  # only INBOX is case-insensitive
    with pytest.raises(InvalidFolderName):
        actions.rename_folder(alice, "Work", "Work/a/b")
    with pytest.raises(InvalidFolderName):
        actions.rename_folder(alice, "Work", "Work/")
    assert names(alice) == sorted(DEFAULTS + ["Done", "Done/a", "Work", "Work/a"])


@pytest.mark.django_db
def test_renaming_a_child_with_like_wildcards_touches_only_it(alice):
    for name in ("a_b", "a_b/c", "axb/c", "A_B/c"):
        actions.create_folder(alice, name)
    actions.rename_folder(alice, "a_b", "z")
    assert names(alice) == sorted(DEFAULTS + ["A_B", "A_B/c", "axb", "axb/c", "z", "z/c"])


@pytest.mark.django_db
def test_renaming_inbox_moves_its_messages_and_leaves_it_empty(alice, counter, published, django_capture_on_commit_callbacks):
    actions.create_folder(alice, "INBOX/Lists")
    for _ in range(3):
        deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
    inbox = folder(alice, "INBOX")
    actions.store_flags(inbox, [2], mode="add", flags=["\\Seen"])
    inbox.refresh_from_db()
    alice.refresh_from_db()
    used = alice.quota_used
    with django_capture_on_commit_callbacks(execute=True):
        actions.rename_folder(alice, "inbox", "Old mail/2026")
    assert names(alice) == sorted(DEFAULTS + ["INBOX/Lists", "Old mail", "Old mail/2026"])
    old = folder(alice, "Old mail/2026")
    assert old.uidvalidity == counter + 3 and old.special_use == ""
    assert list(Message.objects.filter(folder=old).order_by("uid").values_list("uid", "seen")) == [(1, False), (2, True), (3, False)]
    assert (old.uidnext, old.message_count, old.unseen_count, old.total_size) == (4, 3, 2, inbox.total_size)
    assert old.highestmodseq == 6
    emptied = folder(alice, "INBOX")
    assert (emptied.uidvalidity, emptied.uidnext, emptied.highestmodseq) == (inbox.uidvalidity, 4, 6)
    assert (emptied.message_count, emptied.unseen_count, emptied.total_size) == (0, 0, 0)
    assert actions.vanished_since(emptied, 5) == [1, 2, 3]
    alice.refresh_from_db()
    assert alice.quota_used == used
    assert published == [
        events.Change("expunge", alice.pk, inbox.pk, (1, 2, 3), 6),
        events.Change("folder", alice.pk),
    ]
    # INBOX goes on: new mail gets UIDs never used there.
    deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
    assert list(Message.objects.filter(folder=emptied).values_list("uid", flat=True)) == [4]


@pytest.mark.django_db
def test_renaming_inbox_to_a_taken_name_is_refused(alice):
    deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
    with pytest.raises(FolderExists):
        actions.rename_folder(alice, "INBOX", "Archive")
    assert folder(alice, "INBOX").message_count == 1
    assert not ExpungedMessage.objects.exists()


# DELETE -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_delete_removes_the_folder_its_messages_and_their_quota(alice, published, django_capture_on_commit_callbacks):
    for _ in range(2):
        deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
    inbox = folder(alice, "INBOX")
    actions.copy_messages(inbox, [1, 2], "Junk")
    actions.expunge(folder(alice, "Junk"), [1])
    junk = folder(alice, "Junk")
    alice.refresh_from_db()
    assert alice.quota_used == inbox.total_size + junk.total_size
    with django_capture_on_commit_callbacks(execute=True):
        actions.delete_folder(alice, "Junk")
    assert names(alice) == sorted(set(DEFAULTS) - {"Junk"})
    assert not Message.objects.filter(folder_id=junk.pk).exists()
    assert not ExpungedMessage.objects.filter(folder_id=junk.pk).exists()
    alice.refresh_from_db()
    assert alice.quota_used == inbox.total_size
    assert published == [events.Change("folder", alice.pk, junk.pk)]
    assert Message.objects.filter(folder=inbox).count() == 2  # the blobs the copies shared are still used


@pytest.mark.django_db
def test_a_folder_created_again_gets_a_larger_uidvalidity(alice, counter):
    first = actions.create_folder(alice, "Projects")
    actions.delete_folder(alice, "Projects")
    second = actions.create_folder(alice, "Projects")
    assert (first.uidvalidity, second.uidvalidity) == (counter + 1, counter + 2)
    assert second.uidnext == 1


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["INBOX", "inbox"])
def test_inbox_cannot_be_deleted(alice, name):
    with pytest.raises(CannotDelete, match="INBOX cannot be deleted"):
        actions.delete_folder(alice, name)


@pytest.mark.django_db
def test_a_folder_with_children_cannot_be_deleted(alice):
    actions.create_folder(alice, "Projects/Q1")
    with pytest.raises(CannotDelete, match="Projects has child folders"):
        actions.delete_folder(alice, "Projects")
    actions.delete_folder(alice, "Projects/Q1")
    actions.delete_folder(alice, "Projects")
    assert names(alice) == DEFAULTS
    with pytest.raises(NoSuchFolder):
        actions.delete_folder(alice, "Projects")


@pytest.mark.django_db
def test_a_sibling_with_a_longer_name_is_not_a_child(alice):
    actions.create_folder(alice, "Projects")
    actions.create_folder(alice, "Projects-old/x")
    actions.delete_folder(alice, "Projects")
    assert "Projects" not in names(alice)


# SUBSCRIBE ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_subscribe_and_unsubscribe_an_existing_folder(alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        actions.set_subscribed(alice, "Junk", False)
    assert not folder(alice, "Junk").subscribed
    assert published == [events.Change("folder", alice.pk)]
    assert actions.subscribed_names(alice) == ["Archive", "Drafts", "INBOX", "Sent", "Trash"]
    actions.set_subscribed(alice, "inbox", False)
    actions.set_subscribed(alice, "Junk", True)
    assert actions.subscribed_names(alice) == ["Archive", "Drafts", "Junk", "Sent", "Trash"]
    assert not Subscription.objects.exists()


@pytest.mark.django_db
def test_a_name_without_a_folder_can_be_subscribed_and_its_folder_adopts_it(alice):
    actions.set_subscribed(alice, "Lists/future", True)
    actions.set_subscribed(alice, "Lists/future", True)  # once is enough
    assert "Lists/future" in actions.subscribed_names(alice)
    assert "Lists/future" not in names(alice)
    created = actions.create_folder(alice, "Lists/future", subscribed=False)
    assert created.subscribed and folder(alice, "Lists/future").subscribed
    assert not Subscription.objects.exists()


@pytest.mark.django_db
def test_unsubscribing_a_name_that_is_not_subscribed_changes_nothing(alice):
    actions.set_subscribed(alice, "Nowhere", False)
    assert actions.subscribed_names(alice) == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    with pytest.raises(InvalidFolderName):
        actions.set_subscribed(alice, "bad//name", True)


@pytest.mark.django_db
def test_a_deleted_folder_stays_subscribed_until_unsubscribed(alice):
    actions.create_folder(alice, "Projects")
    actions.delete_folder(alice, "Projects")
    assert "Projects" in actions.subscribed_names(alice)
    actions.set_subscribed(alice, "Projects", False)
    assert "Projects" not in actions.subscribed_names(alice)
    actions.create_folder(alice, "Quiet", subscribed=False)
    actions.delete_folder(alice, "Quiet")
    assert "Quiet" not in actions.subscribed_names(alice)


@pytest.mark.django_db
def test_renaming_onto_a_subscribed_name_makes_the_folder_subscribed(alice):
    actions.create_folder(alice, "Old", subscribed=False)
    actions.create_folder(alice, "Old/child", subscribed=False)
    actions.set_subscribed(alice, "New/child", True)
    actions.rename_folder(alice, "Old", "New")
    assert (folder(alice, "New").subscribed, folder(alice, "New/child").subscribed) == (False, True)
    assert not Subscription.objects.exists()


# Pruning tombstones -------------------------------------------------------------------


@pytest.mark.django_db
def test_pruned_tombstones_make_vanished_answer_with_every_absent_uid(alice):
    for _ in range(6):
        deliver(RAW, [Recipient(alice, "alice@example.test")], return_path="")
    inbox = folder(alice, "INBOX")  # UIDs 1-6, MODSEQ 2-7
    actions.expunge(inbox, [1, 2])  # MODSEQ 8
    ExpungedMessage.objects.update(expunged_at=timezone.now() - timedelta(days=60))
    actions.expunge(inbox, [4])  # MODSEQ 9
    assert actions.vanished_since(inbox, 7) == [1, 2, 4]

    assert actions.prune_expunged(timezone.now() - timedelta(days=30)) == 2
    assert list(ExpungedMessage.objects.values_list("uid", "modseq")) == [(4, 9)]
    assert folder(alice, "INBOX").expunged_pruned_modseq == 8
    # Since MODSEQ 8 or later the answer is still exact ...
    assert actions.vanished_since(inbox, 8) == [4]
    # ... before it, every UID the folder does not hold is reported.
    assert actions.vanished_since(inbox, 7) == [1, 2, 4]
    assert actions.vanished_since(inbox, 0, uids=[2, 3, 4, 99]) == [2, 4]
    # Pruning again finds nothing older and leaves the mark.
    assert actions.prune_expunged(timezone.now() - timedelta(days=30)) == 0
    assert folder(alice, "INBOX").expunged_pruned_modseq == 8
