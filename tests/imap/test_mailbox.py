"""The per-process folder index behind SELECT: a second open reads only what changed."""
import pytest

from imap import mailbox
from mailstore import actions

pytestmark = pytest.mark.django_db(transaction=True)

RAW = b"From: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def fresh_indexes():
    mailbox._indexes.clear()
    yield
    mailbox._indexes.clear()


def test_a_second_open_reads_only_the_changes(alice, django_assert_max_num_queries):
    for _ in range(50):
        actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    _, uids, flags, _, keywords, _ = mailbox.load(folder.pk)
    assert uids == list(range(1, 51)) and keywords == set()

    actions.store_flags(folder, [2, 3], mode="add", flags=["\\Seen", "$Work"])
    actions.expunge(folder, [1, 4])
    actions.append(alice, "INBOX", RAW, flags=["\\Flagged"])
    with django_assert_max_num_queries(3):  # folder row, tombstones, changed rows
        opened_folder, uids, flags, modseqs, keywords, _ = mailbox.load(folder.pk)
    assert uids == [2, 3] + list(range(5, 52))
    assert flags[2] == ("\\Seen", "$Work") and flags[5] == () and flags[51] == ("\\Flagged",)
    assert opened_folder.highestmodseq == max(modseqs.values())
    assert keywords == {"$Work"}
    mailbox._indexes.clear()
    assert mailbox.load(folder.pk)[1:5] == (uids, flags, modseqs, keywords)  # read whole, the same



def test_openers_share_the_index_until_one_of_them_or_the_index_changes(alice):
    for _ in range(3):
        actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    first = mailbox.SelectedMailbox(mailbox.load(folder.pk), readonly=False)
    second = mailbox.SelectedMailbox(mailbox.load(folder.pk), readonly=False)
    assert first.uids is second.uids and first.flags is second.flags  # nothing copied to open it

    first.set_flags(2, ("\\Seen",), 99)  # a session's own change is its own
    assert second.flags[2] == () and second.modseqs[2] != 99
    assert mailbox.load(folder.pk)[2][2] == ()

    actions.expunge(folder, [1])  # the index's change reaches new openers only
    actions.append(alice, "INBOX", RAW)
    third = mailbox.SelectedMailbox(mailbox.load(folder.pk), readonly=False)
    assert third.uids == [2, 3, 4]
    assert first.uids == second.uids == [1, 2, 3]


def test_the_first_unseen_message_is_found_once_per_state_of_the_folder(alice, monkeypatch):
    for _ in range(3):
        actions.append(alice, "INBOX", RAW, flags=["\\Seen"])
    actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    walks = []
    walk = mailbox.first_unseen
    monkeypatch.setattr(mailbox, "first_unseen", lambda uids, flags: walks.append(1) or walk(uids, flags))
    opened = [mailbox.SelectedMailbox(mailbox.load(folder.pk), readonly=False) for _ in range(3)]
    assert [view.first_unseen for view in opened] == [4, 4, 4] and len(walks) == 1

    opened[0].set_flags(4, ("\\Seen",), 99)  # its own view now: walked afresh
    assert opened[0].first_unseen is None and opened[1].first_unseen == 4
    actions.store_flags(folder, [2], mode="remove", flags=["\\Seen"])  # a new state of the folder
    assert mailbox.SelectedMailbox(mailbox.load(folder.pk), readonly=False).first_unseen == 2
    assert opened[2].first_unseen == 4  # as it was when opened


def test_a_recreated_or_pruned_folder_is_read_whole(alice):
    from django.utils import timezone

    actions.create_folder(alice, "Work")
    work = alice.folders.get(name="Work")
    actions.append(alice, "Work", RAW)
    assert mailbox.load(work.pk)[1] == [1]
    actions.expunge(work, [1])
    actions.append(alice, "Work", RAW)
    actions.prune_expunged(timezone.now() + timezone.timedelta(seconds=1))
    assert mailbox.load(work.pk)[1] == [2]


def test_stored_messages_reads_only_the_columns_asked_for_over_ranges_and_lists(alice):
    for _ in range(6):
        actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    actions.expunge(folder, [3])
    every = mailbox.stored_messages(folder.pk, [1, 2, 3, 4])  # a range; 3 is gone
    assert [m.uid for m in every] == [1, 2, 4]
    assert every[0].blob.name and every[0].internaldate and every[0].blob.imap_envelope
    narrow = mailbox.stored_messages(folder.pk, [2, 5, 6], {"s.envelope", "m.size"})
    assert [m.uid for m in narrow] == [2, 5, 6]
    message = narrow[0]
    assert bytes(message.blob.imap_envelope) == bytes(every[1].blob.imap_envelope) and message.size == len(RAW)
    assert (message.blob.name, message.internaldate, message.blob.structure) == (None, None, None)
    with pytest.raises(ValueError):  # a name that is no stored column is an error, not NULL
        mailbox.stored_messages(folder.pk, [2], {"b.imap_envelop"})


def test_envelope_and_bodystructure_are_read_from_the_summaries_alone(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    with CaptureQueriesContext(connection) as queries:
        messages = mailbox.stored_messages(folder.pk, [1, 2, 3], {"s.envelope", "s.bodystructure"})
    assert [m.uid for m in messages] == [1, 2, 3] and all(m.blob.imap_bodystructure for m in messages)
    # One query, and the blobs' wide rows are not part of it.
    assert len(queries) == 1 and "mailstore_blob " not in queries[0]["sql"]
    assert "mailstore_blobsummary" in queries[0]["sql"]


def test_a_blob_without_a_summary_renders_from_its_json(alice):
    from imap import fetch
    from imap.commands.selected import _render_batch
    from imap.parser import parse_command
    from mailstore.models import BlobSummary

    for _ in range(3):
        actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    wanted = parse_command(b"a FETCH 1:3 (ENVELOPE BODYSTRUCTURE)").items
    columns = fetch.columns_needed(wanted)

    views = {uid: (uid, (), 1) for uid in (1, 2, 3)}

    def rendered():
        return [fetch.render(wanted, message=m, flags=(), modseq=1)
                for m in mailbox.stored_messages(folder.pk, [1, 2, 3], columns)]

    def fetched():  # what FETCH sends: straight from the summaries while it can
        return _render_batch(folder.pk, [1, 2, 3], wanted, views, utf8=False, by_uid=True, extra_flags=set())

    with_summaries, sent = rendered(), fetched()
    assert sent == [b"* %d FETCH (%s)\r\n" % (uid, body) for uid, body in zip((1, 2, 3), with_summaries)]
    BlobSummary.objects.filter(blob__messages__folder=folder, blob__messages__uid=2).delete()  # as stored before them
    messages = mailbox.stored_messages(folder.pk, [1, 2, 3], columns)
    assert [m.blob.envelope is not None for m in messages] == [False, True, False]  # its JSON read, the others' not
    assert rendered() == with_summaries and fetched() == sent


def test_a_large_folder_read_whole_is_announced_once_for_the_other_workers(alice, monkeypatch):
    from mailstore import events

    monkeypatch.setattr(mailbox, "PREWARM_MESSAGES", 3)
    published = []
    monkeypatch.setattr(events, "publish", lambda change: change.kind == "opened" and published.append(change))
    folder = alice.folders.get(name="INBOX")
    actions.append(alice, "INBOX", RAW)
    mailbox.load(folder.pk)  # one message: not worth the others' while
    assert published == []
    mailbox._indexes.clear()
    for _ in range(2):
        actions.append(alice, "INBOX", RAW)
    mailbox.load(folder.pk)
    mailbox.load(folder.pk)  # from the index: nothing to announce
    folder.refresh_from_db()
    assert published == [events.Change("opened", alice.pk, folder.pk, modseq=folder.highestmodseq)]


def test_a_worker_told_of_an_opened_folder_reads_it_before_its_first_select(alice, django_assert_max_num_queries):
    import asyncio

    from imap.server import Notifier
    from mailstore import events

    for _ in range(3):
        actions.append(alice, "INBOX", RAW)
    folder = alice.folders.get(name="INBOX")
    told = []

    async def tell():
        notifier = Notifier(asyncio.get_running_loop())
        notifier.watch(alice.pk, type("Session", (), {"notify": told.append})())
        notifier._from_bus(events.Change("opened", alice.pk, folder.pk, modseq=folder.highestmodseq))
        notifier._from_bus(events.Change("opened", alice.pk, 10**9, modseq=1))  # a folder since deleted
        while len(mailbox._indexes) < 1 or notifier.prewarming:
            await asyncio.sleep(0.01)

    asyncio.run(asyncio.wait_for(tell(), 10))
    assert told == []  # nothing changed for the sessions
    assert list(mailbox._indexes) == [folder.pk]
    index = mailbox._indexes[folder.pk]
    assert index._first_unseen == (index.flags, 1)  # what an IMAP4rev1 SELECT would walk for
    with django_assert_max_num_queries(1):  # the folder row: the index is ready
        assert mailbox.load(folder.pk)[1] == [1, 2, 3]
