"""Which commits wait for the disk.

New mail is committed durably: SMTP says 250 and IMAP APPEND says OK only once the
message would survive a power cut (synchronous=FULL on SQLite, the default
synchronous_commit on PostgreSQL). State changes to mail already stored (flags,
expunges, copies and moves) are committed without waiting for the disk, as Dovecot's
`mail_fsync = optimized` does: a power cut may undo the last few of them, never corrupt
anything, and a crash of the process loses nothing (the operating system has the
write). Both databases write their log in order, so whatever survives is a prefix of
what was committed: a move can never survive without the copy it started with, and
the next durable commit makes every earlier one durable too.

Holding the write lock through an fsync is what limits writers on SQLite; these
commits release it at once.
"""
import functools
from contextlib import contextmanager

from django.db import connection, transaction


def lazy_commit(function):
    """Run `function` in a transaction committed without waiting for the disk (see above).

    Inside an enclosing transaction it just runs: the outer commit decides. The wrapper
    is marked `commits_lazily`, for callers that group such calls in one transaction
    (mailsuite.lib.aio.run_shared_write).
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if connection.in_atomic_block:
            return function(*args, **kwargs)
        with atomic(lazily=True):
            return function(*args, **kwargs)

    wrapper.commits_lazily = True
    return wrapper


@contextmanager
def atomic(*, lazily):
    """transaction.atomic() whose commit waits for the disk unless `lazily` (see above).
    Outermost blocks only: the commit of an enclosing transaction would decide."""
    if not lazily:
        with transaction.atomic():
            yield
        return
    if connection.vendor == "sqlite":
        # The pragma cannot change inside a transaction: set it around this one.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=NORMAL")
        try:
            with transaction.atomic():
                yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA synchronous=FULL")
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO off")
        yield
