"""remove_unused_blobs(): the bytes of messages no mailbox, queue or unlearned training
example holds any more are removed, row and file, by the daily housekeeping; everything
still needed stays."""
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from mailstore import actions
from mailstore.actions import IncomingMessage, Recipient, remove_unused_blobs
from mailstore.models import Blob, Folder, Message, TrainingExample
from mailstore.storage import blob_storage
from mta import queue, tasks
from tests.conftest import database_vendor

pytestmark = pytest.mark.django_db


def store(account, subject):
    raw = f"From: sam@elsewhere.test\r\nTo: {account.address}\r\nSubject: {subject}\r\n\r\nText of {subject}.\r\n".encode()
    [outcome] = actions.deliver(raw, [Recipient(account, account.address)], return_path="sam@elsewhere.test")
    return Message.objects.select_related("blob").get(pk=outcome.message.pk)


def expunge(message):
    folder = Folder.objects.get(pk=message.folder_id)
    actions.expunge(folder, [message.uid])


def age(*blob_ids, by=timedelta(hours=2)):
    Blob.objects.filter(pk__in=blob_ids).update(created=timezone.now() - by)


def exists(blob):
    return Blob.objects.filter(pk=blob.pk).exists(), blob_storage().exists(blob.name)


def test_it_removes_the_row_and_bytes_of_an_expunged_message_and_keeps_the_rest(alice):
    gone, kept, copied = store(alice, "gone"), store(alice, "kept"), store(alice, "copied")
    actions.copy_messages(Folder.objects.get(pk=copied.folder_id), [copied.uid], "Archive")
    expunge(gone)
    expunge(copied)  # its copy in Archive still holds the bytes
    age(gone.blob_id, kept.blob_id, copied.blob_id)
    assert remove_unused_blobs() == 1
    assert exists(gone.blob) == (False, False)
    assert exists(kept.blob) == exists(copied.blob) == (True, True)
    assert Message.objects.filter(blob_id=copied.blob_id, folder__name="Archive").exists()


def test_a_blob_shared_by_two_mailboxes_stays_until_both_let_it_go(alice, bob):
    raw = b"From: sam@elsewhere.test\r\nSubject: shared\r\n\r\nFor both.\r\n"
    first, second = actions.deliver(
        raw, [Recipient(alice, alice.address), Recipient(bob, bob.address)], return_path="sam@elsewhere.test"
    )
    first, second = (Message.objects.select_related("blob").get(pk=o.message.pk) for o in (first, second))
    assert first.blob_id == second.blob_id
    age(first.blob_id)
    expunge(first)
    assert remove_unused_blobs() == 0
    expunge(second)
    assert remove_unused_blobs() == 1
    assert exists(first.blob) == (False, False)


def test_young_blobs_queued_mail_and_unlearned_examples_keep_their_bytes(alice):
    young = store(alice, "young")
    expunge(young)
    queued_incoming = IncomingMessage(b"From: alice@example.test\r\nSubject: out\r\n\r\nbye\r\n")
    with queued_incoming.atomic():
        queued = queue.enqueue(queued_incoming, mail_from=alice.address, recipients=["x@elsewhere.test"])
    judged, learned = store(alice, "judged"), store(alice, "learned")
    TrainingExample.objects.create(account=alice, blob_id=judged.blob_id, verdict=TrainingExample.SPAM)
    TrainingExample.objects.create(account=alice, blob_id=learned.blob_id, verdict=TrainingExample.HAM, learned=True)
    expunge(judged)
    expunge(learned)
    age(queued.blob_id, judged.blob_id, learned.blob_id)

    assert remove_unused_blobs() == 1  # the learned one: the filter has what it needed
    assert exists(learned.blob) == (False, False)
    assert not TrainingExample.objects.filter(blob_id=learned.blob_id).exists()
    assert exists(young.blob) == exists(queued.blob) == exists(judged.blob) == (True, True)
    assert remove_unused_blobs(older_than=timedelta(0)) == 1  # the young one, once old enough
    assert exists(young.blob) == (False, False)


@pytest.mark.skipif(database_vendor() != "sqlite3", reason="SQLite's FTS5 index")
def test_the_text_index_forgets_removed_blobs(alice):
    from mailstore import search_index

    message = store(alice, "indexed")
    search_index.catch_up()
    expunge(message)
    age(message.blob_id)
    assert remove_unused_blobs() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM mailstore_blob_text_fts WHERE rowid = %s", [message.blob_id])
        assert cursor.fetchone() == (0,)
        cursor.execute("INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts) VALUES ('integrity-check')")


def test_the_daily_prune_removes_unused_blobs(alice, settings):
    message = store(alice, "daily")
    expunge(message)
    age(message.blob_id)
    tasks.prune()
    assert exists(message.blob) == (False, False)
    assert settings.CELERY_BEAT_SCHEDULE["prune"]["task"] == "mta.tasks.prune"
