"""SQLite's text index is brought up to date after the commit that stores a message
(mailstore.search_index), yet a search always sees every message stored before it."""
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from imap.search import search
from mailstore import actions, search_index
from mailstore.actions import Recipient
from mailstore.models import Blob, Folder, Message
from tests.conftest import database_vendor
from tests.imap.test_search import key_of, view_of

pytestmark = pytest.mark.skipif(database_vendor() != "sqlite3", reason="SQLite's FTS5 index; PostgreSQL indexes as it writes")


def store(account, subject, body):
    raw = f"From: sam@elsewhere.test\r\nTo: {account.address}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()
    [outcome] = actions.deliver(raw, [Recipient(account, account.address)], return_path="sam@elsewhere.test")
    return outcome.message


def rows(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def in_index(blob_id):
    return rows("SELECT count(*) FROM mailstore_blob_header_fts WHERE rowid = %s", [blob_id]) == [(1,)]


def index_is_sound():
    rows("INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts) VALUES ('integrity-check')")
    return True


def inbox_view(account):
    return view_of(Folder.objects.get(account=account, name="INBOX"))


@pytest.mark.django_db
def test_storing_a_message_does_not_index_it_but_a_search_finds_it_at_once(alice):
    message = store(alice, "Quarterly figures", "The turnover rose by a third.")
    assert rows("SELECT id FROM mailstore_search_pending") == [(message.blob_id,)]
    assert not in_index(message.blob_id)
    view = inbox_view(alice)
    assert search(view, key_of("BODY turnover")) == [message.uid]
    assert search(view, key_of("SUBJECT quarterly")) == [message.uid]
    assert rows("SELECT id FROM mailstore_search_pending") == []
    assert in_index(message.blob_id) and index_is_sound()
    assert search_index.catch_up() == 0


@pytest.mark.django_db
def test_a_message_removed_before_it_was_indexed_leaves_the_index_sound(alice):
    kept = store(alice, "Kept", "Still here.")
    search_index.catch_up()
    gone = store(alice, "Gone", "Never indexed.")
    Message.objects.filter(pk=gone.pk).delete()
    Blob.objects.filter(pk=gone.blob_id).delete()  # what the blob sweep does
    assert rows("SELECT id FROM mailstore_search_pending") == []
    Message.objects.filter(pk=kept.pk).delete()
    Blob.objects.filter(pk=kept.blob_id).delete()  # indexed: taken out of the index
    assert not in_index(kept.blob_id) and index_is_sound()


@pytest.mark.django_db
def test_a_pending_blob_changed_before_indexing_is_indexed_as_it_is_then(alice):
    message = store(alice, "Draft", "First words.")
    Blob.objects.filter(pk=message.blob_id).update(search_text="Second thoughts.", header_text="Subject: Revised")
    view = inbox_view(alice)
    assert search(view, key_of("BODY first")) == []
    assert search(view, key_of("BODY thoughts")) == [message.uid]
    assert search(view, key_of("SUBJECT revised")) == [message.uid]
    assert index_is_sound()


@pytest.mark.django_db
def test_a_message_expunged_before_indexing_is_never_indexed(alice):
    gone = store(alice, "Draft 1", "Saved again a moment later.")
    actions.expunge(Folder.objects.get(pk=gone.folder_id), [gone.uid])
    assert search_index.catch_up() == 0 and not search_index.waiting()
    assert not in_index(gone.blob_id)
    assert rows("SELECT id FROM mailstore_search_pending") == [(gone.blob_id,)]  # until the blob sweep


@pytest.mark.django_db
def test_the_background_indexes_only_what_has_settled(alice):
    message = store(alice, "Fresh", "Just stored.")
    assert search_index.catch_up(settle=search_index.SETTLE) == 0  # too young for the background
    Blob.objects.filter(pk=message.blob_id).update(created=timezone.now() - timedelta(seconds=search_index.SETTLE))
    assert search_index.catch_up(settle=search_index.SETTLE) == 1
    assert in_index(message.blob_id) and index_is_sound()


@pytest.mark.django_db
def test_catch_up_indexes_in_batches(alice, monkeypatch):
    monkeypatch.setattr(search_index, "BATCH", 2)
    messages = [store(alice, f"Note {n}", f"Word{n} here.") for n in range(5)]
    assert search_index.catch_up() == 5
    assert all(in_index(m.blob_id) for m in messages) and index_is_sound()


@pytest.fixture
def indexing_thread():
    search_index.run_in_background()
    yield
    search_index.stop_background()


@pytest.mark.django_db(transaction=True)
def test_a_daemon_indexes_new_messages_shortly_after_their_commit(alice, indexing_thread):
    message = store(alice, "Arrived", "Indexed in the background.")
    deadline = time.monotonic() + 10
    while not in_index(message.blob_id):
        assert time.monotonic() < deadline, "not indexed within 10 s"
        time.sleep(0.05)
    assert rows("SELECT id FROM mailstore_search_pending") == []


@pytest.mark.django_db
def test_elsewhere_nothing_indexes_before_a_search(alice):
    message = store(alice, "Waiting", "Until someone searches.")
    search_index.soon()  # what the commit does (here, inside the test's transaction, by hand)
    time.sleep(search_index.DELAY + 0.3)
    assert not in_index(message.blob_id)


@pytest.mark.django_db(transaction=True)
def test_migrating_back_indexes_what_waits_and_migrating_forward_defers_again(alice, monkeypatch):
    from django.db.migrations.executor import MigrationExecutor

    message = store(alice, "Pending", "Across migrations.")
    # The table later migrations add is not there in between: the store leaves it out.
    monkeypatch.setattr(actions, "_insert_summaries", lambda incomings: None)
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([("mailstore", "0008_conversation_indexes")])
        assert in_index(message.blob_id) and index_is_sound()
        later = store(alice, "Later", "Indexed as it is stored.")  # migration 0004's triggers again
        assert in_index(later.blob_id)
        MigrationExecutor(connection).migrate([("mailstore", "0009_search_index_after_commit")])
        newest = store(alice, "Newest", "Waits again.")
        assert rows("SELECT id FROM mailstore_search_pending") == [(newest.blob_id,)]
        assert search(inbox_view(alice), key_of("BODY across")) == [message.uid] and index_is_sound()
    finally:
        MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
