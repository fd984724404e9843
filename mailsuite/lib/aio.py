"""Running the synchronous ORM from asyncio servers.

ORM work runs in one bounded thread pool per process (MAILSUITE_DB_THREADS), never
on the event loop. Each thread keeps its own database connection; a connection
that broke or aged out is replaced before the next job.
"""
import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

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
