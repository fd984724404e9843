"""run_shared_write (mailsuite.lib.aio): sessions' short changes share a transaction on
SQLite, each in a savepoint of its own; on PostgreSQL each runs alone. On both, a call runs
inside a transaction, a failing one changes nothing and gets its own error back, and the
commit waits for the disk unless every call in it commits lazily."""
import asyncio
import threading

import pytest
from django.db import connection

from mailsuite.db.durability import lazy_commit
from mailsuite.lib.aio import run_shared_write, shutdown_db_executor
from mailstore import actions
from mailstore.models import Folder
from tests.conftest import database_vendor
from tests.mailstore.test_durability import durability_setting

pytestmark = pytest.mark.django_db(transaction=True)


class Refused(Exception):
    pass


def rename(folder_id, name, *, fail=False):
    Folder.objects.filter(pk=folder_id).update(name=name)
    if fail:
        raise Refused(name)
    return (connection.in_atomic_block, name)


def run(coroutine):
    try:
        return asyncio.run(coroutine)
    finally:
        shutdown_db_executor()


def test_each_change_commits_or_fails_alone(alice):
    a = actions.create_folder(alice, "A")
    b = actions.create_folder(alice, "B")
    c = actions.create_folder(alice, "C")

    async def main():
        return await asyncio.gather(
            run_shared_write(rename, a.pk, "A2"),
            run_shared_write(rename, b.pk, "B2", fail=True),
            run_shared_write(rename, c.pk, "C2"),
            return_exceptions=True,
        )

    first, second, third = run(main())
    assert first == (True, "A2") and third == (True, "C2")  # inside a transaction
    assert isinstance(second, Refused)
    names = set(Folder.objects.filter(pk__in=[a.pk, b.pk, c.pk]).values_list("name", flat=True))
    assert names == {"A2", "B", "C2"}


@pytest.mark.skipif(database_vendor() != "sqlite3", reason="SQLite's one write lock; PostgreSQL runs each change alone")
def test_changes_waiting_together_share_one_transaction_on_sqlite(alice):
    folders = [actions.create_folder(alice, f"F{n}") for n in range(4)]
    committed, seen_committed = [], []
    first_started, release_first = threading.Event(), threading.Event()

    def change(folder_id):
        seen_committed.append(len(committed))  # how many earlier changes had committed when this one ran
        connection.on_commit(lambda: committed.append(folder_id))
        if folder_id == folders[0].pk:
            first_started.set()
            release_first.wait(5)  # the others queue up behind this batch
        return folder_id

    async def main():
        first = asyncio.ensure_future(run_shared_write(change, folders[0].pk))
        await asyncio.get_running_loop().run_in_executor(None, first_started.wait, 5)
        rest = [asyncio.ensure_future(run_shared_write(change, f.pk)) for f in folders[1:]]
        await asyncio.sleep(0.05)
        release_first.set()
        return [await first, *await asyncio.gather(*rest)]

    assert run(main()) == [f.pk for f in folders]
    # The first ran alone; the three that waited ran together: none saw another commit.
    assert seen_committed == [0, 1, 1, 1]
    assert committed == [f.pk for f in folders]


def test_a_batch_commits_lazily_only_when_every_change_may(alice):
    seen = []

    @lazy_commit
    def lazy():
        seen.append(("lazy", durability_setting()))

    def durable():
        seen.append(("durable", durability_setting()))

    async def main():
        await run_shared_write(lazy)
        await run_shared_write(durable)

    run(main())
    assert seen == [("lazy", "lazy"), ("durable", "durable")]
