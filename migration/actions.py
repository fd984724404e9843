"""Moving mail in and out of an account: import from files, export to files.

Implementation notes:
- Every message goes into the store through mailstore.actions.append_many, a batch per
  folder at a time; the import ledger's rows commit in the same transaction as the
  batch (append_many's `record`), so a run stopped anywhere leaves nothing half-known:
  a rerun skips exactly what was stored.
- Memory is bounded by one batch (IMPORT_BATCH messages or IMPORT_BATCH_BYTES bytes) plus
  the run's occurrence counter: 16 bytes of digest per distinct message, needed to tell
  a second copy of the same bytes from the first.
- Folders are created through mailstore.actions.create_folder; names that the store
  refuses are reported, not guessed at.

- Long runs are TransferJobs (see "Jobs" below): a Celery task, or the CLI in the
  foreground, runs them through run_job(), which keeps the row's counts current and
  stops between messages when the job is cancelled.
"""
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from mailstore import actions as store, search_index
from mailstore.models import HIERARCHY_DELIMITER, Folder, Message
from mailstore.storage import blob_storage, sync_names
from migration import sources
from migration import workers as import_workers
from mailsuite.lib import secrets
from migration.models import ImportedMessage, MigratedFolder, MigratedMessage, TransferJob
from migration.remote import RemoteError, IMAPClient, parse_sequence_set, sequence_set

log = logging.getLogger(__name__)

IMPORT_BATCH = 200
IMPORT_BATCH_BYTES = 16 * 1024**2
LEDGER_ROWS_PER_INSERT = 500  # 2,500 values a statement: far below SQLite's and PostgreSQL's limits


class TransferError(Exception):
    """An import or export cannot go on; the message is one line for the user."""


class Cancelled(Exception):
    """The run stopped between two messages because its job was cancelled."""


def _check(should_stop):
    if should_stop is not None and should_stop():
        raise Cancelled()


@dataclass
class ImportReport:
    imported: int = 0
    already: int = 0  # skipped: a previous run stored them
    bytes: int = 0
    read_bytes: int = 0  # of every message read, imported or not (for progress)
    folders: Counter = field(default_factory=Counter)  # folder -> messages imported
    created_folders: list = field(default_factory=list)
    skipped: sources.Skipped = field(default_factory=sources.Skipped)
    workers: int = 0  # processes that parsed and wrote the messages (0: this one)
    worker_start: str = ""  # how they started: fork or spawn


def _target_folder(root, relative):
    if not relative:
        return root or "INBOX"
    if root:
        return f"{root}{HIERARCHY_DELIMITER}{relative}"
    return store.normalise_folder_name(relative)


def _ensure_folder(account, name, report, known):
    if name in known:
        return
    if not Folder.objects.filter(account=account, name=name).exists():
        try:
            store.create_folder(account, name)
        except store.FolderExists:
            pass
        except store.InvalidFolderName as error:
            raise TransferError(f"cannot create folder {name!r}: {error}") from None
        report.created_folders.append(name)
    known.add(name)


def import_messages(account, messages, *, root=None, report=None, progress=None, should_stop=None, workers=0,
                    worker_start=None):
    """Store SourceMessages in `account`, each in root/its folder, skipping those the
    ledger knows. `progress(report)` is called after each batch. `should_stop()` is asked
    before each message; if it says so, the batch not yet stored is dropped (the ledger
    does not know it either) and Cancelled is raised. Returns the report.

    With `workers`, batches are parsed and written to blob storage by that many worker
    processes (migration.workers; `worker_start` "fork" or "spawn", by default what is safe
    here) while this one reads the source and commits the batches before them, in order;
    0 does everything here.

    Raises TransferError for a folder that cannot be created, OverQuota when the
    account is full (what was stored so far stays, and a rerun goes on from there).
    """
    report = report or ImportReport()
    root = store.normalise_folder_name(root) if root else None
    if root:
        _ensure_folder(account, root, report, set())
    seen = _Occurrences()
    known_folders = set()
    batch, batch_bytes, batch_folder = [], 0, None
    preparer = import_workers.Preparer(workers, worker_start) if workers else None
    report.workers, report.worker_start = workers, preparer.method if preparer else ""
    pending = deque()  # (folder, new entries, future of their IncomingMessages), oldest first

    def place_oldest():
        folder, new, future = pending.popleft()
        _store_batch(account, folder, new, report, incomings=future.result())
        if progress:
            progress(report)

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            new = _not_yet_imported(account, batch_folder, batch, report)
            if new and preparer:
                pending.append((batch_folder, new, preparer.submit([m.raw for m, _, _ in new])))
                while len(pending) > preparer.depth:
                    place_oldest()
            elif new:
                _store_batch(account, batch_folder, new, report)
            if progress and not pending:
                progress(report)
        batch, batch_bytes = [], 0

    try:
        for message in messages:
            _check(should_stop)
            report.read_bytes += len(message.raw)
            folder = _target_folder(root, message.folder)
            if folder != batch_folder or len(batch) >= IMPORT_BATCH or batch_bytes + len(message.raw) > IMPORT_BATCH_BYTES:
                flush()
                batch_folder = folder
                _ensure_folder(account, folder, report, known_folders)
            digest = hashlib.sha256(message.raw).digest()
            batch.append((message, digest.hex(), seen.count(folder, digest)))
            batch_bytes += len(message.raw)
        flush()
        while pending:
            place_oldest()
        search_index.catch_up()  # the imported mail searchable when the import says it is done
    finally:
        # Stopped early (cancelled, over quota, a refusal): bytes prepared for batches that
        # were not committed are removed, as append_many does for its own.
        while pending:
            _, _, future = pending.popleft()
            if not future.exception():
                for incoming in future.result():
                    incoming.release()
        if preparer:
            preparer.close()
    return report


class _Occurrences:
    """Which occurrence of the same bytes in the same folder a message is, this run: the
    ledger's key tells a second copy from the first. Compact, since a run may read
    millions: a set of 8-byte digest prefixes, with a counter only for repeats."""

    def __init__(self):
        self.once, self.more = set(), Counter()

    def count(self, folder, digest):
        # From the digest, not hash(): the same on every run, so a rerun counts alike.
        key = digest[:8] + folder.encode("utf-8", "surrogatepass")
        if key not in self.once:
            self.once.add(key)
            return 1
        self.more[(folder, digest)] += 1
        return self.more[(folder, digest)] + 1


def _not_yet_imported(account, folder, batch, report):
    done = set(
        ImportedMessage.objects.filter(account=account, folder=folder, sha256__in={digest for _, digest, _ in batch})
        .values_list("sha256", "occurrence")
    )
    new = [(m, digest, n) for m, digest, n in batch if (digest, n) not in done]
    report.already += len(batch) - len(new)
    return new


def _store_batch(account, folder, new, report, incomings=None):
    """Commit one batch and its ledger rows together; `incomings` are its messages
    already parsed and written (by import workers), else append_many does that here."""

    def record(stored):
        # Plain SQL, one INSERT of the batch's rows: building a model instance per ledger
        # row cost more than the insert, and a statement per row more than both.
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        rows = [(account.pk, folder, digest, n, now) for _, digest, n in new]
        with connection.cursor() as cursor:
            for start in range(0, len(rows), LEDGER_ROWS_PER_INSERT):
                chunk = rows[start : start + LEDGER_ROWS_PER_INSERT]
                cursor.execute(
                    f"INSERT INTO {ImportedMessage._meta.db_table} (account_id, folder, sha256, occurrence, imported_at) "
                    f"VALUES {', '.join(['(%s, %s, %s, %s, %s)'] * len(chunk))}",
                    [value for row in chunk for value in row],
                )

    uploads = [(m.raw, m.flags, m.internaldate) for m, _, _ in new]
    if incomings is None:
        store.append_many(account, folder, uploads, record=record)
    else:
        _append_prepared(account, folder, incomings, uploads, record)
    report.imported += len(new)
    report.bytes += sum(len(m.raw) for m, _, _ in new)
    report.folders[folder] += len(new)


def _append_prepared(account, folder, incomings, uploads, record):
    """append_many's transaction, for messages import workers parsed and wrote: all or none,
    their names made durable before the rows that name them commit."""
    try:
        # The workers wrote the files without an fsync each (mailstore.storage.fsync_each_file):
        # one sync of the file system makes the whole batch durable before its rows commit.
        sync_everything = getattr(blob_storage(), "sync_everything", None)
        if sync_everything is not None:
            sync_everything()
        sync_names([incoming.stored.name for incoming in incomings])
        with store.forget_new_blobs_on_rollback(incomings), transaction.atomic():
            record([outcome.message for outcome in store.place_uploads(account, folder, incomings, uploads)])
    finally:
        for incoming in incomings:
            incoming.release()


# A process with other threads running spawns its import workers (migration.workers), at
# about a second of CPU each: only sources at least this large get them there.
SPAWN_MIN_BYTES = 8 * 1024**2
MAX_WORKERS = 4


def worker_plan(source_bytes=None, requested=None):
    """(worker processes, how they start) for an import run in this process: `requested`
    if given, else one per core (at most MAX_WORKERS); none for a source under
    SPAWN_MIN_BYTES (or of unknown size) where the workers would have to be spawned."""
    method = import_workers.start_method()
    if requested is not None:
        return max(0, requested), method
    if method != "fork" and (source_bytes or 0) < SPAWN_MIN_BYTES:
        return 0, method
    return min(MAX_WORKERS, os.cpu_count() or 1), method


def import_path(account, path, *, root=None, progress=None, should_stop=None, report=None, workers=0,
                worker_start=None):
    """Import an mbox, Maildir, EML or ZIP file (or a directory of them) into `account`.
    Raises TransferError (and sources.SourceError) with a one-line reason."""
    report = report or ImportReport()
    messages = sources.read_path(path, max_size=settings.MAILSUITE_MESSAGE_SIZE_LIMIT, skipped=report.skipped)
    return import_messages(account, messages, root=root, report=report, progress=progress, should_stop=should_stop,
                           workers=workers, worker_start=worker_start)


def source_size(path):
    """Bytes of mail under `path` as the readers will see them, for a progress bar: a
    ZIP's members uncompressed, a file's size, a directory's files; None if unreadable."""
    try:
        if os.path.isdir(path):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return sum(m.file_size for m in archive.infolist())
        return os.path.getsize(path)
    except OSError:
        return None


# --- Export ------------------------------------------------------------------------------


@dataclass
class ExportReport:
    exported: int = 0
    bytes: int = 0
    folders: Counter = field(default_factory=Counter)


def _folders_to_export(account, folder):
    folders = Folder.objects.filter(account=account).order_by("name")
    if folder:
        folder = store.normalise_folder_name(folder)
        if not folders.filter(name=folder).exists():
            raise TransferError(f"folder {folder} does not exist")
        folders = folders.filter(name=folder) | folders.filter(name__startswith=folder + HIERARCHY_DELIMITER)
    return list(folders.order_by("name"))


def _stored_messages(folder):
    """(message, full bytes) of a folder in UID order, a page of rows at a time."""
    last_uid = 0
    while True:
        page = list(
            Message.objects.filter(folder=folder, uid__gt=last_uid)
            .select_related("blob")
            .only("uid", "internaldate", "prefix", "seen", "answered", "flagged", "deleted", "draft",
                  "keywords", "from_address", "blob__name")
            .order_by("uid")[:500]
        )
        if not page:
            return
        for message in page:
            with blob_storage().open(message.blob.name, "rb") as f:
                yield message, bytes(message.prefix) + f.read()
        last_uid = page[-1].uid


def export_account(account, dest, *, format, folder=None, progress=None, should_stop=None, report=None):
    """Write `account`'s folders (or `folder` and its subfolders) under `dest`:
    - mbox: one file per folder, `dest/INBOX.mbox`, `dest/Work/Clients.mbox` (mboxrd; flags
      in Status/X-Status/X-Keywords; INTERNALDATE on the From line);
    - maildir: a Maildir++ tree, INBOX at `dest`, `dest/.Work.Clients`, flags in the file
      names, keywords in each folder's dovecot-keywords, INTERNALDATE as the file's mtime.
    Files are written with LF line ends, as both formats expect on disk."""
    if format not in ("mbox", "maildir"):
        raise TransferError(f"unknown export format {format!r}: mbox or maildir")
    folders = _folders_to_export(account, folder)
    os.makedirs(dest, exist_ok=True)
    if format == "mbox" and os.listdir(dest) or format == "maildir" and sources.is_maildir(dest):
        raise TransferError(f"{dest} is not empty; export into a new directory")
    report = report or ExportReport()
    writer = _write_mbox if format == "mbox" else _write_maildir
    for item in folders:
        writer(dest, item, report, should_stop)
        if progress:
            progress(report)
    return report


def mbox_entry(message, raw):
    """One stored message as it goes into an mbox file: From line, flag fields, mboxrd
    escaping, LF line ends, and the empty line that ends it."""
    text = sources.to_lf(sources.add_header_fields(raw, sources.mbox_state_fields(message.flags)))
    if not text.endswith(b"\n"):
        text += b"\n"
    sender = "".join(message.from_address.split())
    return sources.from_line(message.internaldate, sender) + sources.escape_mbox_body(text) + b"\n"


def mbox_path(folder_name):
    """'Work/Clients' -> 'Work/Clients.mbox' (relative, "/"-separated)."""
    return folder_name + ".mbox"


def maildir_path(folder_name):
    """Where a folder's Maildir++ directory is, relative to the root: "" for INBOX."""
    return "" if folder_name == "INBOX" else sources.maildir_dirname(folder_name)


class MaildirNamer:
    """File names (flags and keyword letters in the info part) for one folder's messages;
    `keyword_file()` is that folder's dovecot-keywords text (None if it has no keywords)."""

    host = "mailsuite"

    def __init__(self, folder):
        self.folder = folder
        self.keywords = {}  # name -> letter

    def name(self, message, size):
        flags = {flag.lower() for flag in message.flags}
        letters = [letter for letter, flag in sources.MAILDIR_FLAGS.items() if flag.lower() in flags]
        for keyword in message.keywords.split():
            if keyword.lower() == "$forwarded":
                continue  # the P flag says it
            if keyword not in self.keywords and len(self.keywords) < 26:
                self.keywords[keyword] = chr(ord("a") + len(self.keywords))
            if keyword in self.keywords:
                letters.append(self.keywords[keyword])
        stamp = int(message.internaldate.timestamp())
        return f"{stamp}.M{message.uid}V{self.folder.uidvalidity}.{self.host},S={size}:2,{''.join(sorted(letters))}"

    def keyword_file(self):
        if not self.keywords:
            return None
        return "".join(f"{ord(letter) - ord('a')} {keyword}\n" for keyword, letter in self.keywords.items())


def _write_mbox(dest, folder, report, should_stop=None):
    path = os.path.join(dest, *mbox_path(folder.name).split(HIERARCHY_DELIMITER))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        for message, raw in _stored_messages(folder):
            _check(should_stop)
            out.write(mbox_entry(message, raw))
            report.exported += 1
            report.bytes += len(raw)
            report.folders[folder.name] += 1


def _write_maildir(dest, folder, report, should_stop=None):
    path = os.path.join(dest, maildir_path(folder.name))
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    namer = MaildirNamer(folder)
    for message, raw in _stored_messages(folder):
        _check(should_stop)
        file_path = os.path.join(path, "cur", namer.name(message, len(raw)))
        with open(file_path, "wb") as out:
            out.write(sources.to_lf(raw))
        stamp = int(message.internaldate.timestamp())
        os.utime(file_path, (stamp, stamp))
        report.exported += 1
        report.bytes += len(raw)
        report.folders[folder.name] += 1
    keyword_file = namer.keyword_file()
    if keyword_file:
        with open(os.path.join(path, "dovecot-keywords"), "w", encoding="utf-8") as out:
            out.write(keyword_file)


# --- IMAP migration ------------------------------------------------------------------------

MIGRATE_BATCH = 100  # messages per UID FETCH and per append_many


@dataclass
class FolderCheck:
    """One remote folder after a migration run: the verification report's row."""

    remote: str
    local: str
    copied: int = 0  # this run
    copied_bytes: int = 0
    flags_updated: int = 0  # copied earlier, flags changed on the remote since and brought over
    remote_count: int = 0
    remote_size: int = 0
    local_count: int = 0
    local_size: int = 0
    missing: int = 0  # remote messages not (yet) copied: too large, or failed
    skipped: list = field(default_factory=list)

    @property
    def ok(self):
        return self.missing == 0 and self.local_count >= self.remote_count


@dataclass
class MigrationReport:
    folders: list = field(default_factory=list)

    @property
    def copied(self):
        return sum(f.copied for f in self.folders)

    @property
    def copied_bytes(self):
        return sum(f.copied_bytes for f in self.folders)

    @property
    def ok(self):
        return all(f.ok for f in self.folders)


def _local_name(remote_folder, prefix, special):
    """The local folder for a remote one: the remote delimiter becomes "/", the personal
    namespace prefix ("INBOX." on some servers) goes, and a special-use folder (RFC 6154)
    lands in ours with the same use, whatever it is called there."""
    for attribute in remote_folder.attributes:
        if attribute.lower() in special:
            return special[attribute.lower()]
    name = remote_folder.name
    if prefix and name.startswith(prefix) and name != prefix.rstrip(remote_folder.delimiter):
        name = name[len(prefix):]
    if remote_folder.delimiter and remote_folder.delimiter != HIERARCHY_DELIMITER:
        name = name.replace(HIERARCHY_DELIMITER, "_").replace(remote_folder.delimiter, HIERARCHY_DELIMITER)
    return store.normalise_folder_name(name)


def _resync_flags(client, account, state, local_name):
    """Give the local copies of a remote folder's messages the flags they have there now
    (the remote wins, as at the first copy). With CONDSTORE and a HIGHESTMODSEQ from the
    last run, only messages changed since are asked for (RFC 7162 §3.1.4.1 CHANGEDSINCE),
    and nothing at all if the folder's HIGHESTMODSEQ has not moved; otherwise every
    message's FLAGS are swept. Messages with the same flags are set in one store_flags,
    which leaves those already right (and their MODSEQ) alone. Returns how many changed."""
    if client.condstore and state.highestmodseq:
        if client.highestmodseq == state.highestmodseq:
            return 0
        remote = client.flags(changedsince=state.highestmodseq)
    else:
        remote = client.flags()
    if not remote:
        return 0
    local_uid = {}
    uids = sorted(remote)
    for start in range(0, len(uids), 500):
        local_uid.update(MigratedMessage.objects.filter(folder=state, remote_uid__in=uids[start : start + 500])
                         .values_list("remote_uid", "local_uid"))
    groups = {}  # flags -> local UIDs that should have exactly them
    for uid, flags in remote.items():
        if uid in local_uid:
            wanted = tuple(sorted({f for f in flags if f.lower() != "\\recent"}, key=str.lower))
            groups.setdefault(wanted, []).append(local_uid[uid])
    folder = Folder.objects.get(account=account, name=local_name)
    changed = 0
    for flags, local_uids in groups.items():
        changed += len(store.store_flags(folder, local_uids, mode="set", flags=list(flags)).changed)
    return changed


def migrate_imap(account, *, host, port, user, password, tls="implicit", verify=True, only=None, progress=None,
                 should_stop=None, report=None):
    """Copy every folder of a remote IMAP account (or the folders named in `only`) into
    `account`: flags, keywords and INTERNALDATE kept, remote UIDs remembered per folder
    and UIDVALIDITY so that a rerun copies only what arrived since. Returns a
    MigrationReport with counts and sizes on both sides. Raises remote.RemoteError,
    TransferError, or OverQuota (what was copied stays)."""

    source = f"{user}@{host}:{port}"
    report = report or MigrationReport()
    special = {
        use.lower(): name
        for name, use in Folder.objects.filter(account=account).exclude(special_use="").values_list("name", "special_use")
    }
    limit = settings.MAILSUITE_MESSAGE_SIZE_LIMIT
    with IMAPClient(host, port, tls=tls, user=user, password=password, verify=verify) as client:
        prefix = client.personal_prefix()
        remote_folders = client.folders()
        if only:
            wanted = set(only)
            remote_folders = [f for f in remote_folders if f.name in wanted]
            missing = wanted - {f.name for f in remote_folders}
            if missing:
                raise TransferError(f"no folder {sorted(missing)[0]!r} on {host}")
        for remote_folder in remote_folders:
            check = FolderCheck(remote_folder.name, _local_name(remote_folder, prefix, special))
            report.folders.append(check)
            _ensure_folder(account, check.local, ImportReport(), set())
            uidvalidity, _ = client.examine(remote_folder)
            state, _ = MigratedFolder.objects.get_or_create(
                account=account, source=source, remote_name=remote_folder.name,
                defaults={"local_name": check.local, "uidvalidity": uidvalidity},
            )
            same_folder = state.uidvalidity == uidvalidity
            done = parse_sequence_set(state.copied_uids) if same_folder else set()
            if not same_folder:
                MigratedMessage.objects.filter(folder=state).delete()  # UIDs of a folder that is gone
            elif done:
                _check(should_stop)
                check.flags_updated = _resync_flags(client, account, state, check.local)
            remote_uids = client.uids()
            todo = [uid for uid in remote_uids if uid not in done]
            for start in range(0, len(todo), MIGRATE_BATCH):
                _check(should_stop)
                chunk = todo[start : start + MIGRATE_BATCH]
                meta = client.fetch(chunk, "UID RFC822.SIZE")
                small = [m.uid for m in meta if m.size <= limit]
                check.skipped += [f"UID {m.uid}: larger than {limit} bytes" for m in meta if m.size > limit]
                fetched = [m for m in client.fetch(small, "UID FLAGS INTERNALDATE BODY.PEEK[]") if m.raw is not None]
                done.update(m.uid for m in fetched)

                def record(stored, uids=frozenset(done), fetched=fetched):
                    MigratedFolder.objects.filter(pk=state.pk).update(
                        copied_uids=sequence_set(uids), uidvalidity=uidvalidity, local_name=check.local
                    )
                    MigratedMessage.objects.bulk_create(
                        MigratedMessage(folder_id=state.pk, remote_uid=m.uid, local_uid=message.uid)
                        for m, message in zip(fetched, stored)
                    )

                if fetched:
                    store.append_many(account, check.local, [(m.raw, m.flags, m.internaldate) for m in fetched], record=record)
                check.copied += len(fetched)
                check.copied_bytes += sum(len(m.raw) for m in fetched)
                if progress:
                    progress(report)
            if not same_folder and not todo:
                MigratedFolder.objects.filter(pk=state.pk).update(uidvalidity=uidvalidity, copied_uids="")
            # Flags changed on the remote after this point are the next run's to bring.
            MigratedFolder.objects.filter(pk=state.pk).update(highestmodseq=client.highestmodseq)
            sizes = client.fetch(remote_uids, "UID RFC822.SIZE") if remote_uids else []
            check.remote_count, check.remote_size = len(sizes), sum(m.size for m in sizes)
            check.missing = len(set(remote_uids) - done)
            local = Folder.objects.get(account=account, name=check.local)
            check.local_count, check.local_size = local.message_count, local.total_size
    return report


# --- Jobs -------------------------------------------------------------------------------------
#
# A TransferJob row is the truth about a long run; the Celery task only carries its id.
# States: queued -> running -> done | failed | cancelled; a failed or cancelled job can be
# queued again (resume), and the ledgers make that run skip what is already done.

# Seams: how often a running job looks at its cancel flag and writes its counts, and the clock.
CANCEL_CHECK_SECONDS = 0.5
PROGRESS_SECONDS = 0.5
clock = time.monotonic
UPLOADS_PREFIX = "uploads"  # blob storage names of files the webmail received, until imported
UPLOADS_SCRATCH = "tmp"  # under MAILSUITE_DATA_DIR: a local copy of an upload in object storage, while read
UPLOADS_DIR = "uploads"  # under MAILSUITE_DATA_DIR: where uploads were kept before they went to blob storage


def _enqueue(job_id):
    from migration import tasks

    try:
        tasks.run_transfer_job.delay(job_id)
    except Exception:  # noqa: BLE001 - the broker is down: the job stays queued, `mail job-resume` retries
        log.warning("could not hand transfer job %s to the workers", job_id, exc_info=True)


def create_job(account, kind, *, source, folder="", label="", options=None, password=None, remove_source=False,
               total_bytes=None, background=True):
    """A new queued job; with `background`, a Celery worker is asked to run it once the
    row is committed. `password` (a migration's remote login) is stored encrypted only
    for a background job: a foreground run gets it from its caller."""
    if kind not in TransferJob.Kind.values:
        raise TransferError(f"unknown job kind {kind!r}")
    options = dict(options or {})
    if kind == TransferJob.Kind.EXPORT and options.get("format") not in ("mbox", "maildir"):
        raise TransferError(f"unknown export format {options.get('format')!r}: mbox or maildir")
    if kind == TransferJob.Kind.MIGRATE and background and not password:
        raise TransferError("a migration needs the remote password")
    with transaction.atomic():
        job = TransferJob.objects.create(
            account=account, kind=kind, source=str(source)[:1000], folder=folder or "", label=label[:300],
            options=options, secret=secrets.encrypt(password) if background and password else "",
            remove_source=remove_source, total_bytes=total_bytes,
        )
        if background:
            transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def save_upload(account, uploaded, *, folder=""):
    """Keep an uploaded file (a Django UploadedFile, read in chunks) in blob storage, where
    a worker on any node can read it (object storage when there are several), and queue
    its import. Returns the job; the file is deleted when the job is done or discarded."""
    # The browser's name, kept only as a plain file name (no directory, no leading dot).
    name = re.sub(r"[\x00-\x1f/\\]", "_", os.path.basename(uploaded.name or "")).lstrip(".")[:200] or "upload"
    if folder:
        folder = store.normalise_folder_name(folder)
        if not Folder.objects.filter(account=account, name=folder).exists():
            raise TransferError(f"folder {folder} does not exist")
    total_bytes = _uploaded_size(uploaded)
    stored = blob_storage().save(f"{UPLOADS_PREFIX}/{uuid.uuid4().hex}/{name}", uploaded)
    try:
        sync_names([stored])  # durable before the job row that names it commits
        return create_job(account, TransferJob.Kind.IMPORT, source=stored, folder=folder, label=name,
                          options={"upload": True}, remove_source=True, total_bytes=total_bytes)
    except BaseException:
        _delete_upload(stored)
        raise


def _uploaded_size(uploaded):
    """source_size() of an UploadedFile: a ZIP's members uncompressed, else its size."""
    try:
        uploaded.seek(0)
        if zipfile.is_zipfile(uploaded):
            uploaded.seek(0)
            with zipfile.ZipFile(uploaded) as archive:
                return sum(m.file_size for m in archive.infolist())
    except (OSError, zipfile.BadZipFile):
        pass
    finally:
        uploaded.seek(0)
    return uploaded.size


@contextmanager
def _upload_on_disk(name):
    """A local path to an upload kept in blob storage, for the readers (a ZIP needs to
    seek): the file itself on a file system storage, else a copy streamed into the data
    dir's tmp/ and removed afterwards."""
    storage = blob_storage()
    if not storage.exists(name):
        raise TransferError("the uploaded file is no longer there: upload it again")
    try:
        path = storage.path(name)
    except NotImplementedError:  # object storage (mailstore.objectstore): no local path, but download()
        path = None
    if path is not None:
        yield path
        return
    scratch = Path(settings.DATA_DIR) / UPLOADS_SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch))
    try:
        local = directory / os.path.basename(name)
        with open(local, "wb") as out:
            storage.download(name, out)
        yield local
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def cancel_job(job):
    """Ask a job to stop: a queued one is cancelled at once, a running one stops before
    its next message (the worker marks it cancelled)."""
    now = timezone.now()
    with transaction.atomic():
        TransferJob.objects.filter(pk=job.pk, state=TransferJob.State.QUEUED).update(
            state=TransferJob.State.CANCELLED, cancel_requested=True, finished=now)
        TransferJob.objects.filter(pk=job.pk, state=TransferJob.State.RUNNING).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def resume_job(job, *, password=None, background=True):
    """Queue a failed, cancelled or stalled job again; the new run skips what earlier runs
    stored."""
    if not job.resumable:
        raise TransferError(f"job {job.pk} is {job.state}: only a failed or cancelled job can be resumed")
    if job.kind == TransferJob.Kind.MIGRATE and background and not (password or job.secret):
        raise TransferError(f"job {job.pk} needs the remote password again")
    with transaction.atomic():
        changes = dict(state=TransferJob.State.QUEUED, cancel_requested=False, error="", finished=None)
        if password and background:
            changes["secret"] = secrets.encrypt(password)
        TransferJob.objects.filter(pk=job.pk).update(**changes)
        if background:
            transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()
    return job


def discard_job(job):
    """Forget a job that is not running, and the uploaded file it kept."""
    if job.active:
        raise TransferError(f"job {job.pk} is {job.state}: cancel it first")
    if job.remove_source:
        _remove_upload(job)
    job.delete()


def _remove_upload(job):
    if job.options.get("upload"):
        _delete_upload(job.source)
        return
    # Kept in the data dir by an earlier version: only ever a directory save_upload made there.
    directory = Path(job.source).parent
    uploads = (Path(settings.DATA_DIR) / UPLOADS_DIR).resolve()
    if directory.resolve().parent == uploads:
        shutil.rmtree(directory, ignore_errors=True)


def _delete_upload(name):
    if not name.startswith(UPLOADS_PREFIX + "/"):  # only ever a name save_upload made
        return
    storage = blob_storage()
    try:
        storage.delete(name)
    except OSError:
        log.warning("could not remove upload %s", name, exc_info=True)
        return
    try:
        os.rmdir(os.path.dirname(storage.path(name)))  # its directory, on a file system
    except (NotImplementedError, OSError):
        pass


class _Progress:
    """Writes a running job's counts at most every PROGRESS_SECONDS, and answers
    should_stop() from its cancel flag, read at most every CANCEL_CHECK_SECONDS."""

    def __init__(self, job, echo=None):
        self.job, self.echo = job, echo
        self.last_write = self.last_check = clock()
        self.stop = False

    def should_stop(self):
        now = clock()
        if not self.stop and now - self.last_check >= CANCEL_CHECK_SECONDS:
            self.last_check = now
            self.stop = TransferJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
        return self.stop

    def __call__(self, report, *, force=False):
        counts = _counts(self.job.kind, report)
        now = clock()
        if force or now - self.last_write >= PROGRESS_SECONDS:
            self.last_write = now
            TransferJob.objects.filter(pk=self.job.pk).update(**counts, updated=timezone.now())
        if self.echo:
            self.echo(report)


def _counts(kind, report):
    if kind == TransferJob.Kind.IMPORT:
        return dict(messages=report.imported, already=report.already, bytes=report.bytes,
                    read_bytes=report.read_bytes, skipped=len(report.skipped.reasons))
    if kind == TransferJob.Kind.EXPORT:
        return dict(messages=report.exported, bytes=report.bytes, read_bytes=report.bytes)
    return dict(messages=report.copied, bytes=report.copied_bytes, read_bytes=report.copied_bytes,
                skipped=sum(len(c.skipped) for c in report.folders))


def describe(kind, report):
    """The lines a finished (or stopped) run leaves in its job's report."""
    lines = []
    if kind == TransferJob.Kind.IMPORT:
        lines += [f"created folder {name}" for name in report.created_folders]
        lines += [f"{name}: {count} imported" for name, count in sorted(report.folders.items())]
        lines += [f"skipped {reason}" for reason in report.skipped.reasons]
        if report.workers:
            lines.append(f"parsed and stored by {report.workers} worker processes ({report.worker_start})")
        lines.append(f"{report.imported} imported, {report.already} already there")
    elif kind == TransferJob.Kind.EXPORT:
        lines += [f"{name}: {count} exported" for name, count in sorted(report.folders.items())]
        lines.append(f"{report.exported} exported")
    else:
        for check in report.folders:
            state = "ok" if check.ok else f"{check.missing} missing"
            lines.append(f"{check.remote} -> {check.local}: copied {check.copied}, flags updated on "
                         f"{check.flags_updated}; remote {check.remote_count} "
                         f"({check.remote_size} bytes), local {check.local_count} ({check.local_size} bytes); {state}")
            lines += [f"{check.remote}: skipped {reason}" for reason in check.skipped]
        lines.append(f"{report.copied} copied")
    return "\n".join(lines)


def _empty_report(kind):
    return {TransferJob.Kind.IMPORT: ImportReport, TransferJob.Kind.EXPORT: ExportReport}.get(kind, MigrationReport)()


def run_job(job_id, *, password=None, echo=None):
    """Run a queued job to its end in this process; returns (job, report), report None if
    the job was not queued (already taken, or cancelled before it started).

    `echo(report)` is called on every progress step (the CLI prints from it). Refusals
    (TransferError, SourceError, MailstoreError, RemoteError, OSError) end the job as
    failed with their one-line reason; KeyboardInterrupt ends it as cancelled."""
    now = timezone.now()
    claimed = TransferJob.objects.filter(pk=job_id, state=TransferJob.State.QUEUED).update(
        state=TransferJob.State.RUNNING, started=now, finished=None, error="", report="",
        messages=0, already=0, bytes=0, read_bytes=0, skipped=0,
    )
    if not claimed:
        return TransferJob.objects.filter(pk=job_id).first(), None
    job = TransferJob.objects.select_related("account", "account__domain").get(pk=job_id)
    progress = _Progress(job, echo)
    report = _empty_report(job.kind)
    outcome, error = TransferJob.State.DONE, ""
    try:
        report = _run(job, report, progress, password)
    except (Cancelled, KeyboardInterrupt) as stop:
        outcome = TransferJob.State.CANCELLED
        if isinstance(stop, KeyboardInterrupt):
            _finish(job, report, outcome, "")
            raise
    except (TransferError, sources.SourceError, store.MailstoreError, RemoteError, ValueError) as refusal:
        outcome, error = TransferJob.State.FAILED, str(refusal)
    except OSError as failure:
        outcome, error = TransferJob.State.FAILED, f"{failure.filename or ''}: {failure.strerror or failure}".lstrip(": ")
    except Exception:
        log.exception("transfer job %s failed", job_id)
        outcome, error = TransferJob.State.FAILED, "internal error (the server log has the details)"
    _finish(job, report, outcome, error)
    job.refresh_from_db()
    return job, report


def _run(job, report, progress, password):
    options = job.options
    if job.kind == TransferJob.Kind.IMPORT:
        workers, start = worker_plan(job.total_bytes, options.get("workers"))
        if not options.get("upload"):
            return import_path(job.account, job.source, root=job.folder or None, progress=progress,
                               should_stop=progress.should_stop, report=report, workers=workers, worker_start=start)
        with _upload_on_disk(job.source) as path:
            return import_path(job.account, path, root=job.folder or None, progress=progress,
                               should_stop=progress.should_stop, report=report, workers=workers, worker_start=start)
    if job.kind == TransferJob.Kind.EXPORT:
        return export_account(job.account, job.source, format=options["format"], folder=job.folder or None,
                              progress=progress, should_stop=progress.should_stop, report=report)
    if password is None:
        password = secrets.decrypt(job.secret)
        if not password:
            raise TransferError("the remote password is not stored: resume the job with the password")
    return migrate_imap(
        job.account, host=options["host"], port=options["port"], user=options["user"], password=password,
        tls=options.get("tls", "implicit"), verify=options.get("verify", True), only=options.get("only") or None,
        progress=progress, should_stop=progress.should_stop, report=report,
    )


def _finish(job, report, state, error):
    changes = dict(_counts(job.kind, report), state=state, error=error[:2000], finished=timezone.now(),
                   report=describe(job.kind, report)[:100_000])
    if state == TransferJob.State.DONE:
        changes["secret"] = ""
    TransferJob.objects.filter(pk=job.pk).update(**changes)
    if state == TransferJob.State.DONE and job.remove_source:
        _remove_upload(job)
