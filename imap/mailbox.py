"""The selected mailbox as one session sees it, and how it catches up with the store.

Implementation notes
- The session's view (UID list, flags, MODSEQs) lives in memory, as Dovecot keeps its
  index: FETCH FLAGS, SEARCH on flags and sequence-number translation never touch the
  database. Message numbers are positions in `uids` (RFC 9051 §2.3.1.2).
- Catching up is one query when nothing changed (the folder's HIGHESTMODSEQ), else
  three: changed or new messages, tombstones of expunged ones, the folder row. Every
  change bumps HIGHESTMODSEQ, so nothing is missed, whichever process made it.
- Expunges are announced only where RFC 9051 §7.5.1 allows: not while FETCH, STORE or
  SEARCH (by sequence number) run; until then the expunged messages keep their numbers.
- Flag sets are interned: 100,000 messages with a handful of distinct flag
  combinations share a handful of tuples.
- Each runimap worker process keeps its own folder indexes. A worker that had to read a
  large folder whole says so on the change bus (an "opened" change), and the other
  workers read it too, in the background (prewarm()): a client's next connection, which
  may land on any worker, opens it as fast as the first one now does.
"""
import json
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter

from django.db import connection

from imap.fetch import SUMMARY_FALLBACK
from imap.responses import flag_list, sequence_set
from mailstore import events
from mailstore.models import Blob, BlobSummary, ExpungedMessage, Folder, Message

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
# The system flags come as one number (bit i set: SYSTEM_FLAGS[i]): fewer columns to fetch.
_FLAG_BITS = " + ".join(
    f"(CASE WHEN {column} THEN {1 << i} ELSE 0 END)"
    for i, column in enumerate(("seen", "answered", "flagged", "deleted", "draft"))
)
_ROW_SQL = (
    f"SELECT uid, modseq, {_FLAG_BITS}, keywords FROM {Message._meta.db_table} "
    "WHERE folder_id = %s{extra} ORDER BY uid"
)
_EXPUNGED_SQL = f"SELECT uid FROM {ExpungedMessage._meta.db_table} WHERE folder_id = %s AND modseq > %s"
_FOLDER_SQL = f"SELECT uidnext, highestmodseq FROM {Folder._meta.db_table} WHERE id = %s"
# What StoredMessage is built from, in this order; stored_messages() reads the ones asked
# for and puts NULL in place of the rest (fewer bytes to read, nothing to convert).
STORED_COLUMNS = (
    "m.uid", "m.internaldate", "m.size", "m.prefix", "m.thread_key", "b.name", "b.size", "b.sha256",
    "b.header_size", "b.envelope", "b.structure", "b.preview", "s.envelope", "s.bodystructure",
)
_KNOWN_COLUMNS = frozenset(STORED_COLUMNS)
_STORED_SQL = (
    f"SELECT {{columns}} FROM {Message._meta.db_table} m{{joins}} "
    "WHERE m.folder_id = %s AND {uids} ORDER BY m.uid"
)
_BLOB_JOIN = f" JOIN {Blob._meta.db_table} b ON b.id = m.blob_id"
_SUMMARY_JOIN = f" LEFT JOIN {BlobSummary._meta.db_table} s ON s.blob_id = m.blob_id"
MAX_INDEXES = 256  # folders whose index a process keeps
PREWARM_MESSAGES = 10_000  # a folder this large, read whole, is read by the other workers too


class _FlagSets(dict):
    """(system flag bits, keywords) -> the flag tuple, one tuple per distinct set: flag sets
    are interned process-wide, a few distinct tuples for any number of messages."""

    def __missing__(self, key):
        bits, keywords = key
        flags = tuple(name for i, name in enumerate(SYSTEM_FLAGS) if bits & (1 << i))
        if keywords:
            flags += tuple(keywords.split())
        flags = self[key] = _interned.setdefault(flags, flags)
        return flags


_interned = {}  # flag tuple -> itself
_flag_sets = _FlagSets()
_uid = itemgetter(0)
_uid_and_modseq = itemgetter(0, 1)
_bits_and_keywords = itemgetter(2, 3)
_keywords = itemgetter(3)


def _keywords_in(columns):
    return {keyword for column in columns if column for keyword in column.split()}


class FolderGone(Exception):
    """The selected folder was deleted or renamed away by another session."""


def _flags_of(row):
    return _flag_sets[row[2], row[3]]


def _rows(folder_id, after_modseq=None):
    """(uid, modseq, system flag bits, keywords) by ascending UID.

    Plain SQL: on a 100,000-message SELECT the ORM's row handling cost more than the query.
    """
    extra, params = ("", [folder_id]) if after_modseq is None else (" AND modseq > %s", [folder_id, after_modseq])
    with connection.cursor() as cursor:
        cursor.execute(_ROW_SQL.format(extra=extra), params)
        return cursor.fetchall()


class StoredBlob:
    """The Blob and BlobSummary columns FETCH renders from; the JSON ones are decoded when first read."""

    __slots__ = (
        "name", "size", "sha256", "header_size", "preview", "_envelope", "_structure", "imap_envelope",
        "imap_bodystructure",
    )

    def __init__(self, name, size, sha256, header_size, envelope, structure, preview, imap_envelope,
                 imap_bodystructure):
        self.name, self.size, self.sha256, self.header_size, self.preview = name, size, sha256, header_size, preview
        self._envelope, self._structure = envelope, structure
        self.imap_envelope, self.imap_bodystructure = imap_envelope, imap_bodystructure

    @property
    def envelope(self):
        if isinstance(self._envelope, str):
            self._envelope = json.loads(self._envelope)
        return self._envelope

    @property
    def structure(self):
        if isinstance(self._structure, str):
            self._structure = json.loads(self._structure)
        return self._structure


class StoredMessage:
    """The Message columns FETCH renders from (uid, internaldate, size, prefix, thread_key, blob)."""

    __slots__ = ("uid", "_internaldate", "size", "prefix", "thread_key", "blob")

    def __init__(self, row):
        self.uid, self._internaldate, self.size, self.prefix, self.thread_key = row[:5]
        self.blob = StoredBlob(*row[5:])

    @property
    def internaldate(self):
        if isinstance(self._internaldate, str):  # SQLite keeps UTC as text
            self._internaldate = datetime.fromisoformat(self._internaldate).replace(tzinfo=timezone.utc)
        return self._internaldate


def stored_messages(folder_id, uids, columns=None):
    """StoredMessages of `uids` (ascending) in the folder; expunged ones are missing. With
    `columns`, only those of STORED_COLUMNS (and the UID) are read: the others are None,
    and a table none of them is in is not read at all.

    Plain SQL: for a one-message FETCH, compiling the ORM query and building two model
    instances a row cost several times the query itself.
    """
    if not uids:
        return []
    if columns is None:
        return _stored(folder_id, uids, _KNOWN_COLUMNS)
    if not columns <= _KNOWN_COLUMNS:  # a misspelt name would read as NULL
        raise ValueError(f"not stored columns: {sorted(columns - _KNOWN_COLUMNS)}")
    messages = _stored(folder_id, uids, columns)
    # Summaries missing (blobs stored before BlobSummary): read those blobs' JSON too.
    fallback = [(attribute, more) for column, (attribute, more) in SUMMARY_FALLBACK.items() if column in columns]
    missing = [m.uid for m in messages if any(getattr(m.blob, attribute) is None for attribute, _ in fallback)]
    if missing:
        again = {m.uid: m for m in _stored(folder_id, missing, columns.union(*(more for _, more in fallback)))}
        messages = [again.get(m.uid, m) for m in messages]
    return messages


def _stored(folder_id, uids, columns):
    selected = ", ".join(c if c in columns or c == "m.uid" else "NULL" for c in STORED_COLUMNS)
    joins = ""
    if any(c.startswith("b.") for c in columns):
        joins += _BLOB_JOIN
    if any(c.startswith("s.") for c in columns):
        joins += _SUMMARY_JOIN
    return [StoredMessage(row) for row in _select(folder_id, uids, selected, joins)]


def stored_summaries(folder_id, uids):
    """(uid, stored ENVELOPE, stored BODYSTRUCTURE) of `uids` (ascending) in the folder,
    None for a blob without a BlobSummary; expunged ones are missing."""
    if not uids:
        return []
    return _select(folder_id, uids, "m.uid, s.envelope, s.bodystructure", _SUMMARY_JOIN)


def _select(folder_id, uids, selected, joins):
    if uids[-1] - uids[0] + 1 == len(uids):  # a range (1:*, 500:999): no list to look up
        where, params = "m.uid BETWEEN %s AND %s", [folder_id, uids[0], uids[-1]]
    else:
        where, params = "m.uid IN ({})".format(", ".join(["%s"] * len(uids))), [folder_id, *uids]
    with connection.cursor() as cursor:
        cursor.execute(_STORED_SQL.format(columns=selected, joins=joins, uids=where), params)
        return cursor.fetchall()


def _expunged(folder_id, after_modseq):
    with connection.cursor() as cursor:
        cursor.execute(_EXPUNGED_SQL, [folder_id, after_modseq])
        return [row[0] for row in cursor.fetchall()]


@dataclass
class Snapshot:
    """What changes_since read from the database, for the event loop to apply."""

    uidnext: int
    highestmodseq: int
    rows: list = field(default_factory=list)  # (uid, modseq, system flag bits, keywords), as _rows()
    expunged: list = field(default_factory=list)  # UIDs


class FolderIndex:
    """A process's latest knowledge of one folder (UIDs, flags, MODSEQs), shared by every
    SELECT of it in this process: opening a folder costs the changes since the index was
    last brought up to date, not a read of every row.

    Copy on write: load() hands its containers to the opener as they are, so a SELECT
    copies nothing; the index copies them before it next changes them (once, however many
    openers hold them), and a SelectedMailbox copies them before its first change of its own.
    """

    def __init__(self, folder):
        self.uidvalidity = folder.uidvalidity
        rows = _rows(folder.pk)
        # C-level maps: a 100,000-message folder is read in a third of the time of a loop.
        self.uids = list(map(_uid, rows))
        self.flags = dict(zip(self.uids, map(_flag_sets.__getitem__, map(_bits_and_keywords, rows))))
        self.modseqs = dict(map(_uid_and_modseq, rows))
        self.keywords = _keywords_in(set(map(_keywords, rows)))  # every keyword any message has had
        self.highestmodseq = folder.highestmodseq
        self.lock = threading.Lock()
        self.handed_out = False  # whether an opener holds uids/flags/modseqs as they are
        self._first_unseen = (None, None)  # (the flags it was found in, its sequence number)

    def first_unseen(self, uids, flags):
        """first_unseen(uids, flags), remembered for these very flags: every IMAP4rev1
        SELECT reports it, and in a large folder read to the end it is a walk of every
        message. Without the lock (the event loop calls it): containers once handed out are
        never changed again, and catch_up() forgets the answer whenever it changes any."""
        found_in, seq = self._first_unseen
        if found_in is flags:
            return seq
        seq = first_unseen(uids, flags)
        if flags is self.flags:
            self._first_unseen = (flags, seq)
        return seq

    def usable_for(self, folder):
        # Tombstones older than the index may be gone: then only a full read is exact.
        return folder.uidvalidity == self.uidvalidity and folder.expunged_pruned_modseq <= self.highestmodseq

    def catch_up(self, folder):
        if folder.highestmodseq <= self.highestmodseq:
            return
        gone = set(_expunged(folder.pk, self.highestmodseq))
        rows = _rows(folder.pk, self.highestmodseq)
        if (gone or rows) and self.handed_out:
            self.uids, self.flags, self.modseqs = list(self.uids), dict(self.flags), dict(self.modseqs)
            self.handed_out = False
        if gone or rows:
            self._first_unseen = (None, None)
        if gone:
            self.uids = [uid for uid in self.uids if uid not in gone]
            for uid in gone:
                self.flags.pop(uid, None)
                self.modseqs.pop(uid, None)
        last = self.uids[-1] if self.uids else 0
        for row in rows:
            uid = row[0]
            if uid in gone:
                continue
            if uid > last:
                self.uids.append(uid)
                last = uid
            self.flags[uid] = _flags_of(row)
            self.modseqs[uid] = row[1]
            if row[3]:
                self.keywords.update(row[3].split())
        self.highestmodseq = folder.highestmodseq


_indexes = OrderedDict()  # folder id -> FolderIndex, least recently opened first
_indexes_lock = threading.Lock()


def first_unseen(uids, flags):
    """The sequence number of the first message without \\Seen, or None."""
    for seq, uid in enumerate(uids, 1):
        if "\\Seen" not in flags[uid]:
            return seq
    return None


def load(folder_id, folder=None):
    """Open a folder: (Folder, uids, flags, modseqs, keywords, FolderIndex). The caller must
    not change uids, flags or modseqs in place (copy them first: SelectedMailbox does);
    keywords is its own. `folder` is the folder's row when the caller has just read it."""
    if folder is None:
        folder = Folder.objects.get(pk=folder_id)
    index, read_whole = _index_for(folder)
    if read_whole and len(index.uids) >= PREWARM_MESSAGES:
        events.publish(events.Change("opened", folder.account_id, folder_id, modseq=index.highestmodseq))
    with index.lock:
        index.catch_up(folder)
        # The index may be ahead of the row read above (another thread caught it up).
        folder.highestmodseq = max(folder.highestmodseq, index.highestmodseq)
        index.handed_out = True
        return folder, index.uids, index.flags, index.modseqs, set(index.keywords), index


def _index_for(folder):
    """(this process's FolderIndex of the folder, whether it was read whole just now)."""
    with _indexes_lock:
        index = _indexes.get(folder.pk)
        if index is not None:
            _indexes.move_to_end(folder.pk)
    if index is not None and index.usable_for(folder):
        return index, False
    index = FolderIndex(folder)
    with _indexes_lock:
        _indexes[folder.pk] = index
        while len(_indexes) > MAX_INDEXES:
            _indexes.popitem(last=False)
    return index, True


def prewarm(folder_id):
    """Read the folder's index ahead of its first SELECT in this process (another worker
    read it whole: see the notes above). Nothing when it is here already or gone."""
    with _indexes_lock:
        if folder_id in _indexes:
            return
    folder = Folder.objects.filter(pk=folder_id).first()
    if folder is not None:
        index, _ = _index_for(folder)
        with index.lock:
            index.first_unseen(index.uids, index.flags)  # what an IMAP4rev1 SELECT walks for


def changes_since(folder_id, modseq) -> Snapshot | None:
    """What changed in the folder after `modseq`; None when nothing did. FolderGone if gone.

    Runs after most commands: plain SQL, as the ORM's query building cost more than the query.
    """
    with connection.cursor() as cursor:
        cursor.execute(_FOLDER_SQL, [folder_id])
        row = cursor.fetchone()
    if row is None:
        raise FolderGone()
    uidnext, highestmodseq = row
    if highestmodseq <= modseq:
        return None
    return Snapshot(uidnext, highestmodseq, _rows(folder_id, modseq), _expunged(folder_id, modseq))


def with_changes(fn, folder_id, since):
    """`fn` followed by changes_since(folder_id, since) in the same call (for a write, in
    its transaction, so the look sees the write): returns (fn's result, Snapshot | None)."""
    def call(*args, **kwargs):
        return fn(*args, **kwargs), changes_since(folder_id, since)

    call.commits_lazily = getattr(fn, "commits_lazily", False)  # mailsuite.db.durability
    return call


class SelectedMailbox:
    def __init__(self, opened, *, readonly: bool):
        folder, self.uids, self.flags, self.modseqs, self.keywords, self._index = opened
        self._owned = False  # uids, flags and modseqs may be the folder index's: copy before changing
        self.folder = folder
        self.folder_id = folder.pk
        self.account_id = folder.account_id
        self.name = folder.name
        self.readonly = readonly
        self.uidvalidity = folder.uidvalidity
        self.uidnext = folder.uidnext
        self.highestmodseq = folder.highestmodseq
        self.pending_expunges = set()  # gone from the store, not yet announced
        self.saved = None  # RFC 5182 SEARCHRES result, as UIDs

    # --- numbers ---------------------------------------------------------------------

    @property
    def exists(self):
        return len(self.uids)

    def seq_of(self, uid):
        index = bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def uids_in(self, ranges):
        """UIDs of messages whose UID lies in the resolved `ranges` (list of range)."""
        found = []
        for r in ranges:
            found.extend(self.uids[bisect_left(self.uids, r.start) : bisect_right(self.uids, r.stop - 1)])
        return found

    def uids_at(self, ranges):
        """UIDs of the message numbers in the resolved `ranges`."""
        found = []
        for r in ranges:
            found.extend(self.uids[r.start - 1 : r.stop - 1])
        return found

    def _own(self):
        if not self._owned:
            self.uids, self.flags, self.modseqs = list(self.uids), dict(self.flags), dict(self.modseqs)
            self._owned = True

    def set_flags(self, uid, flags, modseq):
        self._own()
        flags = tuple(flags)
        self.flags[uid] = _interned.setdefault(flags, flags)
        self.modseqs[uid] = modseq
        self.keywords.update(k for k in flags if not k.startswith("\\"))

    @property
    def first_unseen(self):
        if self._owned:
            return first_unseen(self.uids, self.flags)
        return self._index.first_unseen(self.uids, self.flags)  # the index's own: it may know

    # --- catching up -----------------------------------------------------------------

    def apply(self, snapshot: Snapshot, *, allow_expunge: bool, qresync: bool, condstore: bool):
        """Fold a Snapshot into the view; returns the untagged responses (bytes) to send."""
        out = []
        self.uidnext = snapshot.uidnext
        self.highestmodseq = max(self.highestmodseq, snapshot.highestmodseq)
        self.pending_expunges.update(uid for uid in snapshot.expunged if uid in self.flags)
        if allow_expunge:
            out.extend(self.announce_expunges(qresync=qresync))
        last_uid = self.uids[-1] if self.uids else 0
        added = 0
        for row in snapshot.rows:
            uid, modseq = row[0], row[1]
            flags = _flags_of(row)
            if uid in self.flags:
                if uid in self.pending_expunges:
                    continue
                changed = flags != self.flags[uid]
                self.set_flags(uid, flags, modseq)
                if changed:
                    out.append(self.flags_response(uid, with_uid=qresync, modseq=condstore))
            elif uid > last_uid:
                self._own()
                self.uids.append(uid)
                self.set_flags(uid, flags, modseq)
                last_uid = uid
                added += 1
        if added:
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
        return out

    def announce_expunges(self, *, qresync: bool):
        if not self.pending_expunges:
            return []
        gone = sorted(self.pending_expunges)
        self.pending_expunges.clear()
        if qresync:  # RFC 7162 §3.2.10: VANISHED instead of EXPUNGE once QRESYNC is on
            out = [b"* VANISHED " + sequence_set(gone) + b"\r\n"]
        else:
            out = []
            # Highest first, so each number is still right when the client reads it.
            for uid in reversed(gone):
                out.append(b"* %d EXPUNGE\r\n" % self.seq_of(uid))
        self._own()
        for uid in gone:
            del self.uids[bisect_left(self.uids, uid)]
            del self.flags[uid]
            del self.modseqs[uid]
        return out

    def flags_response(self, uid, *, with_uid=False, modseq=False):
        parts = [b"FLAGS " + flag_list(self.flags[uid])]
        if with_uid:
            parts.insert(0, b"UID %d" % uid)
        if modseq:
            parts.append(b"MODSEQ (%d)" % self.modseqs[uid])
        return b"* %d FETCH (%s)\r\n" % (self.seq_of(uid), b" ".join(parts))
