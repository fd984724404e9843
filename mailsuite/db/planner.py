"""Hints to PostgreSQL's planner, where its costs are known to be wrong for our data."""
from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def text_index_preferred(searching=True):
    """PostgreSQL prices ILIKE on a long text like any comparison (detoasting the text is not
    in its costs), so until a table is large it reads every candidate's text rather than
    the pg_trgm index: seconds on 10,000 messages where the index takes milliseconds
    (bench/webmail.py, bench/imap.py). Queries run inside this with sequential scans priced
    out; a handful of candidates still goes through the primary and foreign keys. Nothing
    happens when `searching` is false or on other databases."""
    if not searching or connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
        yield
