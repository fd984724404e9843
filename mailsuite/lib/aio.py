"""Running the synchronous ORM from asyncio servers.

ORM work runs in one bounded thread pool per process (MAILSUITE_DB_THREADS), never
on the event loop. Each thread keeps its own database connection; a connection
that broke or aged out is replaced before the next job.
"""
import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from django.conf import settings
from django.db import close_old_connections, connections

_executor = None


def db_executor():
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=settings.MAILSUITE_DB_THREADS, thread_name_prefix="db")
    return _executor


def _call(fn, args, kwargs):
    close_old_connections()
    return fn(*args, **kwargs)


async def run_sync(fn, *args, **kwargs):
    """Run `fn(*args, **kwargs)` in the database thread pool and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(db_executor(), functools.partial(_call, fn, args, kwargs))


def shutdown_db_executor():
    """Close every pool thread's database connection, then stop the pool."""
    global _executor
    if _executor is None:
        return
    size = _executor._max_workers
    # One task per thread: each waits at the barrier, so no thread takes two.
    barrier = threading.Barrier(size)

    def close_connections():
        barrier.wait(timeout=30)
        connections.close_all()

    wait([_executor.submit(close_connections) for _ in range(size)])
    _executor.shutdown(wait=True)
    _executor = None
