"""The SQLite text index (the FTS5 tables of migration 0004), brought up to date after commit.

Indexing a message's text with the trigram tokenizer costs about 2 ms of CPU (one index
entry per three characters of its body), and about half that in batches. So the
transaction that stores a blob does not index it:
- each daemon indexes what it stored shortly after the commit, in batches, in a thread
  of its own (run_in_background(), then soon() after each such commit), once the blob has
  been stored for SETTLE seconds: a message expunged sooner (a draft saved again, mail
  moved on by a client's filter) is never indexed at all;
- a search first indexes whatever still waits (catch_up()), so it sees every message;
  so does the end of an import.
Only blobs some message holds are indexed: a search only ever looks at messages. A blob
nothing holds waits (or goes with the blob sweep) until a message holds it.

A trigger notes each new blob's id in mailstore_search_pending (migration 0009); the
delete and update triggers touch the index only for blobs not pending. On PostgreSQL the
pg_trgm GIN indexes follow every write by themselves: nothing here does anything there.
"""
import logging
import threading
import time
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

PENDING = "mailstore_search_pending"
TEXT = "mailstore_blob_text_fts"
HEADER = "mailstore_blob_header_fts"
BATCH = 50  # blobs indexed per transaction (about 65 ms of holding the write lock)
DELAY = 0.2  # seconds soon() waits, so one batch gathers the commits of that moment
SETTLE = 1.0  # seconds a blob is stored before the background indexes it

# The pending blobs some message holds; a search needs these indexed.
_HELD = (
    f"FROM {PENDING} p JOIN mailstore_blob b ON b.id = p.id "
    "WHERE EXISTS (SELECT 1 FROM mailstore_message m WHERE m.blob_id = p.id)"
)

_wake = threading.Event()
_enabled = False
_thread = None
_thread_lock = threading.Lock()


def _applies():
    return connection.vendor == "sqlite"


def _settled(settle):
    """The extra condition and parameters for blobs stored `settle` seconds ago or more."""
    if not settle:
        return "", []
    before = timezone.now() - timedelta(seconds=settle)
    return " AND b.created <= %s", [connection.ops.adapt_datetimefield_value(before)]


def waiting(*, settle=0):
    """Whether blobs some message holds wait to be indexed, stored `settle` seconds ago
    or more (one cheap read)."""
    if not _applies():
        return False
    extra, params = _settled(settle)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 {_HELD}{extra})", params)
        return bool(cursor.fetchone()[0])


def catch_up(*, settle=0):
    """Index the pending blobs some message holds, BATCH to a transaction; only those
    stored `settle` seconds ago or more when given. Returns how many."""
    if not waiting(settle=settle):
        return 0
    done = 0
    while True:
        extra, params = _settled(settle)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT b.id, b.search_text, b.header_text {_HELD}{extra} ORDER BY p.id LIMIT %s", [*params, BATCH]
            )
            rows = cursor.fetchall()
            if not rows:
                return done
            cursor.executemany(f"INSERT INTO {TEXT}(rowid, search_text) VALUES (%s, %s)", [r[:2] for r in rows])
            cursor.executemany(f"INSERT INTO {HEADER}(rowid, header_text) VALUES (%s, %s)", [(r[0], r[2]) for r in rows])
            cursor.execute(f"DELETE FROM {PENDING} WHERE id IN ({', '.join(['%s'] * len(rows))})", [r[0] for r in rows])
        done += len(rows)
        if len(rows) < BATCH:
            return done  # the last batch: no write-locked transaction just to find nothing


def run_in_background():
    """From now on this process indexes what it stores in a thread of its own (daemons
    call this at start; it also indexes what waits from before)."""
    global _enabled, _thread
    if not _applies():
        return
    with _thread_lock:
        _enabled = True
        if _thread is None:
            _thread = threading.Thread(target=_index_forever, name="search-index", daemon=True)
            _thread.start()
    _wake.set()


def stop_background():
    """End run_in_background()'s thread (after the batch under way)."""
    global _enabled, _thread
    with _thread_lock:
        _enabled, thread, _thread = False, _thread, None
    _wake.set()
    if thread is not None:
        thread.join()


def soon():
    """Have this process's indexing thread, if it runs one, index new blobs shortly
    (called after each commit that stored some)."""
    if _enabled:
        _wake.set()


def _index_forever():
    while True:
        _wake.wait()
        time.sleep(DELAY)
        _wake.clear()
        if not _enabled:
            return
        try:
            catch_up(settle=SETTLE)
            if waiting():
                # Blobs too young yet: look again once they have settled, commits or not.
                time.sleep(SETTLE)
                _wake.set()
        except Exception:
            log.exception("search index: indexing new messages failed; the next commit or search tries again")
        finally:
            connection.close()
