"""Running the synchronous ORM from asyncio servers.

ORM work runs in bounded thread pools, never on the event loop: `run_sync` for reads
(MAILSUITE_DB_THREADS) and `run_write` for work that writes (MAILSUITE_DB_WRITE_THREADS).
Writers queue for the database's write lock (one writer at a time on SQLite); in their
own pool they cannot take every thread while reads wait behind them. Each thread
keeps its own database connection; a connection that broke or aged out is replaced
before the next job. `run_shared_write` lets short writes of many sessions share one
transaction on SQLite.
"""
import asyncio
import functools
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction

_executors = {}  # "read"/"write" -> ThreadPoolExecutor


def db_executor(kind="read"):
    executor = _executors.get(kind)
    if executor is None:
        size = settings.MAILSUITE_DB_THREADS if kind == "read" else settings.MAILSUITE_DB_WRITE_THREADS
        executor = _executors[kind] = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"db-{kind}")
    return executor


def _call(fn, args, kwargs):
    close_old_connections()
    return fn(*args, **kwargs)


async def run_sync(fn, *args, **kwargs):
    """Run `fn(*args, **kwargs)` in the database read pool and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(db_executor(), functools.partial(_call, fn, args, kwargs))


async def run_write(fn, *args, **kwargs):
    """Like run_sync, for work that writes: it runs in the writers' pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(db_executor("write"), functools.partial(_call, fn, args, kwargs))


def shutdown_db_executor():
    """Close every pool thread's database connection, then stop the pools."""
    while _executors:
        _, executor = _executors.popitem()
        size = executor._max_workers
        # One task per thread: each waits at the barrier, so no thread takes two.
        barrier = threading.Barrier(size)

        def close_connections():
            barrier.wait(timeout=30)
            connections.close_all()

        wait([executor.submit(close_connections) for _ in range(size)])
        executor.shutdown(wait=True)


class GroupCommit:
    """Runs `fn(items) -> results` on batches of items submitted by many coroutines.

    One batch at a time runs in the database thread pool; whatever is submitted
    meanwhile forms the next batch, so under load many sessions share one commit
    and with one client nothing waits for company.
    """

    def __init__(self, fn, *, max_batch=64):
        self.fn = fn
        self.max_batch = max_batch
        self._waiting = []
        self._drainer = None

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        # A session cancelled here (client gone) does not stop the batch it is in.
        return await future

    async def _drain(self):
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                try:
                    results = await run_write(self.fn, [item for item, _ in batch])
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._drainer = None


def _together(calls):
    """Run `calls` in one transaction, each in a savepoint of its own: a (True, result)
    or (False, exception) for each. The commit waits for the disk unless every call
    commits lazily (mailsuite.db.durability)."""
    from mailsuite.db import durability

    outcomes = []
    with durability.atomic(lazily=all(getattr(call.func, "commits_lazily", False) for call in calls)):
        for call in calls:
            try:
                # Alone in its transaction, a call needs no savepoint: its failure rolls the whole back.
                with transaction.atomic(savepoint=len(calls) > 1):
                    outcomes.append((True, call()))
            except Exception as error:
                outcomes.append((False, error))
    return outcomes


_shared_writes = weakref.WeakKeyDictionary()  # event loop -> GroupCommit(_together)


async def run_shared_write(fn, *args, **kwargs):
    """run_write for a short change of the database and nothing else (no network, no
    password hashing), which may share its transaction with other sessions' changes.

    On SQLite every write transaction takes the one write lock in turn, and one that
    waits for the interpreter while other threads run holds it all the longer: the
    changes waiting in this process take the lock once and commit once, each in a
    savepoint of its own, so one that fails (a full quota, a folder gone) leaves the
    others committed. On PostgreSQL each runs alone: its row locks let writers to other
    folders go ahead side by side.
    """
    call = functools.partial(fn, *args, **kwargs)
    if connections[DEFAULT_DB_ALIAS].vendor == "sqlite":
        loop = asyncio.get_running_loop()
        group = _shared_writes.get(loop)
        if group is None:
            group = _shared_writes[loop] = GroupCommit(_together)
        succeeded, value = await group.submit(call)
    else:
        [(succeeded, value)] = await run_write(_together, [call])
    if not succeeded:
        raise value
    return value
