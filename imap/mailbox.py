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
"""
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from imap.responses import flag_list, sequence_set
from mailstore.models import ExpungedMessage, Folder, Message

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_FLAG_COLUMNS = ("seen", "answered", "flagged", "deleted", "draft")
_ROW_FIELDS = ("uid", "modseq", *_FLAG_COLUMNS, "keywords")


class FolderGone(Exception):
    """The selected folder was deleted or renamed away by another session."""


def _flags_of(row, interned):
    flags = tuple(name for name, on in zip(SYSTEM_FLAGS, row[2:7]) if on) + tuple(row[7].split())
    return interned.setdefault(flags, flags)


@dataclass
class Snapshot:
    """What load/changes read from the database, for the event loop to apply."""

    folder: Folder
    rows: list = field(default_factory=list)  # (uid, modseq, seen, ..., keywords)
    expunged: list = field(default_factory=list)  # UIDs


def load(folder_id) -> Snapshot:
    folder = Folder.objects.get(pk=folder_id)
    rows = list(Message.objects.filter(folder_id=folder_id).order_by("uid").values_list(*_ROW_FIELDS))
    return Snapshot(folder, rows)


def changes_since(folder_id, modseq) -> Snapshot | None:
    """What changed in the folder after `modseq`; None when nothing did. FolderGone if gone."""
    folder = Folder.objects.filter(pk=folder_id).first()
    if folder is None:
        raise FolderGone()
    if folder.highestmodseq <= modseq:
        return None
    rows = list(
        Message.objects.filter(folder_id=folder_id, modseq__gt=modseq).order_by("uid").values_list(*_ROW_FIELDS)
    )
    expunged = list(
        ExpungedMessage.objects.filter(folder_id=folder_id, modseq__gt=modseq).values_list("uid", flat=True)
    )
    return Snapshot(folder, rows, expunged)


class SelectedMailbox:
    def __init__(self, snapshot: Snapshot, *, readonly: bool):
        folder = snapshot.folder
        self.folder = folder
        self.folder_id = folder.pk
        self.account_id = folder.account_id
        self.name = folder.name
        self.readonly = readonly
        self.uidvalidity = folder.uidvalidity
        self.uidnext = folder.uidnext
        self.highestmodseq = folder.highestmodseq
        self._interned = {}
        self.uids = [row[0] for row in snapshot.rows]
        self.flags = {row[0]: _flags_of(row, self._interned) for row in snapshot.rows}
        self.modseqs = {row[0]: row[1] for row in snapshot.rows}
        self.pending_expunges = set()  # gone from the store, not yet announced
        self.saved = None  # RFC 5182 SEARCHRES result, as UIDs
        self.keywords = {k for flags in self._interned for k in flags if not k.startswith("\\")}

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

    def set_flags(self, uid, flags, modseq):
        flags = tuple(flags)
        self.flags[uid] = self._interned.setdefault(flags, flags)
        self.modseqs[uid] = modseq
        self.keywords.update(k for k in flags if not k.startswith("\\"))

    @property
    def first_unseen(self):
        for seq, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self.flags[uid]:
                return seq
        return None

    # --- catching up -----------------------------------------------------------------

    def apply(self, snapshot: Snapshot, *, allow_expunge: bool, qresync: bool, condstore: bool):
        """Fold a Snapshot into the view; returns the untagged responses (bytes) to send."""
        out = []
        folder = snapshot.folder
        self.uidnext = folder.uidnext
        self.highestmodseq = max(self.highestmodseq, folder.highestmodseq)
        known = set(self.flags)
        self.pending_expunges.update(uid for uid in snapshot.expunged if uid in known)
        if allow_expunge:
            out.extend(self.announce_expunges(qresync=qresync))
        last_uid = self.uids[-1] if self.uids else 0
        added = 0
        for row in snapshot.rows:
            uid, modseq = row[0], row[1]
            flags = _flags_of(row, self._interned)
            if uid in self.flags:
                if uid in self.pending_expunges:
                    continue
                changed = flags != self.flags[uid]
                self.set_flags(uid, flags, modseq)
                if changed:
                    out.append(self.flags_response(uid, with_uid=qresync, modseq=condstore))
            elif uid > last_uid:
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
