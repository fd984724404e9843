"""Group commit: many sessions' messages stored in one transaction, failures kept apart."""
import asyncio
import os
import threading

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from accounts import actions
from accounts.resolve import resolve
from mailsuite.lib.aio import GroupCommit, shutdown_db_executor
from mailstore.models import Blob
from antispam.policy import Assessment
from mta import inbound
from mta.models import QueuedRecipient
from tests.conftest import inbox

RAW = b"From: m@elsewhere.test\r\nSubject: batch\r\n\r\nbody\r\n"


def pending_for(address, mail_from="m@elsewhere.test"):
    return inbound.prepare(RAW, mail_from=mail_from, resolutions=[resolve(address)], client_ip="127.0.0.1")


@pytest.mark.django_db
def test_a_batch_stores_every_message_and_a_full_mailbox_fails_alone(alice, bob):
    carol = actions.create_account("carol@example.test")
    actions.set_quota("bob@example.test", 10)
    batch = [pending_for("alice@example.test"), pending_for("bob@example.test"), pending_for("carol@example.test")]
    replies = inbound.commit(batch)
    assert replies[0].startswith("250 2.0.0 Ok: queued as ")
    assert replies[1] == "452 4.2.2 Mailbox full"
    assert replies[2].startswith("250 2.0.0 Ok: queued as ")
    assert (len(inbox(alice)), len(inbox(bob)), len(inbox(carol))) == (1, 0, 1)
    assert Blob.objects.count() == 2


@pytest.mark.django_db
def test_a_batchs_statements_do_not_grow_with_its_messages(alice):
    """The commit service's transaction is the SMTP server's bottleneck: no statement per
    message in it (a lazy foreign key read per verdict once cost a tenth of its time)."""
    for n in range(6):
        actions.create_account(f"user{n}@example.test")
    spam = Assessment(rules=[("SOME_RULE", 0.5, "a rule")], results={"spf": "pass"})

    def statements(addresses):
        batch = [inbound.prepare(RAW, mail_from="m@elsewhere.test", resolutions=[resolve(a)], client_ip="127.0.0.1",
                                 spam=spam) for a in addresses]
        with CaptureQueriesContext(connection) as queries:
            replies = inbound.commit(batch)
        assert all(reply.startswith("250 ") for reply in replies)
        return len(queries)

    assert statements(["user0@example.test"]) == statements([f"user{n}@example.test" for n in range(1, 6)])


@pytest.mark.django_db
def test_a_database_error_in_a_batch_is_retried_message_by_message(alice, monkeypatch):
    actions.create_redirect("old@example.test", "new@elsewhere.test")
    real_enqueue = inbound.enqueue

    def enqueue(incoming, **kwargs):
        if kwargs["mail_from"] == "broken@elsewhere.test":
            raise IntegrityError("simulated")
        return real_enqueue(incoming, **kwargs)

    monkeypatch.setattr(inbound, "enqueue", enqueue)
    batch = [
        pending_for("alice@example.test"),
        pending_for("old@example.test", mail_from="broken@elsewhere.test"),
        pending_for("old@example.test"),
    ]
    replies = inbound.commit(batch)
    assert replies[0].startswith("250 ") and replies[2].startswith("250 ")
    assert replies[1] == "451 4.3.0 Local error in processing; try again later"
    assert len(inbox(alice)) == 1
    assert QueuedRecipient.objects.count() == 1
    assert Blob.objects.count() == 2  # the failed message left no row behind


def test_group_commit_batches_concurrent_submissions():
    calls = []
    gate = threading.Event()

    def work(items):
        calls.append(list(items))
        gate.wait(5)  # hold the first batch so the rest pile up behind it
        if "boom" in items:
            raise ValueError("boom")
        return [item.upper() for item in items]

    async def main():
        committer = GroupCommit(work)
        first = asyncio.ensure_future(committer.submit("a"))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(committer.submit(x)) for x in "bcd"]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == "A"
        assert await asyncio.gather(*rest) == ["B", "C", "D"]
        with pytest.raises(ValueError):
            await committer.submit("boom")

    try:
        asyncio.run(main())
    finally:
        shutdown_db_executor()
    assert calls == [["a"], ["b", "c", "d"], ["boom"]]


@pytest.mark.django_db
def test_a_batchs_files_are_fsynced_together_before_its_commit(alice, bob, monkeypatch):
    """accept() prepares one message after the other without an fsync each; the files
    reach the disk together, before the transaction that names them."""
    from mailstore import storage

    events = []
    real_fsync, real_sync_names, real_store = storage.os.fsync, storage.DurableFileSystemStorage.sync_names, inbound._store

    def fsync(fd):
        if os.path.isfile(os.readlink(f"/proc/self/fd/{fd}")):
            events.append("fsync")
        return real_fsync(fd)

    def sync_names(self, names):
        events.append(f"sync_names {len(names)}")
        return real_sync_names(self, names)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage.DurableFileSystemStorage, "sync_names", sync_names)
    monkeypatch.setattr(inbound, "_store", lambda batch: (events.append("store"), real_store(batch)))
    requests = [
        {"raw": RAW, "mail_from": "m@elsewhere.test", "resolutions": [resolve(a)], "client_ip": "127.0.0.1"}
        for a in ("alice@example.test", "bob@example.test", "alice@example.test")
    ]
    replies = inbound.accept(requests)
    assert all(reply.startswith("250 ") for reply in replies)
    assert events == ["sync_names 3", "fsync", "fsync", "fsync", "store"]
    assert len(inbox(alice)) == 2 and len(inbox(bob)) == 1
