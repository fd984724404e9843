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

Functions for the webmail's upload and download pages (not built yet):
import_path(account, path, *, root=None, progress=None) for an uploaded file saved to disk,
export_account(account, dest, *, format, folder=None) then zip the directory for download.
"""
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone

from mailstore import actions as store
from mailstore.models import HIERARCHY_DELIMITER, Folder, Message
from mailstore.storage import blob_storage
from migration import sources
from migration.models import ImportedMessage, MigratedFolder
from migration.remote import IMAPClient, parse_sequence_set, sequence_set

IMPORT_BATCH = 200
IMPORT_BATCH_BYTES = 16 * 1024**2


class TransferError(Exception):
    """An import or export cannot go on; the message is one line for the user."""


@dataclass
class ImportReport:
    imported: int = 0
    already: int = 0  # skipped: a previous run stored them
    bytes: int = 0
    folders: Counter = field(default_factory=Counter)  # folder -> messages imported
    created_folders: list = field(default_factory=list)
    skipped: sources.Skipped = field(default_factory=sources.Skipped)


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


def import_messages(account, messages, *, root=None, report=None, progress=None):
    """Store SourceMessages in `account`, each in root/its folder, skipping those the
    ledger knows. `progress(report)` is called after each batch. Returns the report.

    Raises TransferError for a folder that cannot be created, OverQuota when the
    account is full (what was stored so far stays, and a rerun goes on from there).
    """
    report = report or ImportReport()
    root = store.normalise_folder_name(root) if root else None
    if root:
        _ensure_folder(account, root, report, set())
    seen = Counter()  # (folder, digest[:16]) -> occurrences so far in this run
    known_folders = set()
    batch, batch_bytes, batch_folder = [], 0, None

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            _import_batch(account, batch_folder, batch, report)
            if progress:
                progress(report)
        batch, batch_bytes = [], 0

    for message in messages:
        folder = _target_folder(root, message.folder)
        if folder != batch_folder or len(batch) >= IMPORT_BATCH or batch_bytes + len(message.raw) > IMPORT_BATCH_BYTES:
            flush()
            batch_folder = folder
            _ensure_folder(account, folder, report, known_folders)
        digest = hashlib.sha256(message.raw).digest()
        seen[(folder, digest[:16])] += 1
        batch.append((message, digest.hex(), seen[(folder, digest[:16])]))
        batch_bytes += len(message.raw)
    flush()
    return report


def _import_batch(account, folder, batch, report):
    done = set(
        ImportedMessage.objects.filter(account=account, folder=folder, sha256__in={digest for _, digest, _ in batch})
        .values_list("sha256", "occurrence")
    )
    new = [(m, digest, n) for m, digest, n in batch if (digest, n) not in done]
    report.already += len(batch) - len(new)
    if not new:
        return

    def record(stored):
        # Plain SQL: building a model instance per ledger row cost more than the insert.
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {ImportedMessage._meta.db_table} (account_id, folder, sha256, occurrence, imported_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(account.pk, folder, digest, n, now) for _, digest, n in new],
            )

    store.append_many(account, folder, [(m.raw, m.flags, m.internaldate) for m, _, _ in new], record=record)
    report.imported += len(new)
    report.bytes += sum(len(m.raw) for m, _, _ in new)
    report.folders[folder] += len(new)


def import_path(account, path, *, root=None, progress=None):
    """Import an mbox, Maildir, EML or ZIP file (or a directory of them) into `account`.
    Raises TransferError (and sources.SourceError) with a one-line reason."""
    report = ImportReport()
    messages = sources.read_path(path, max_size=settings.MAILSUITE_MESSAGE_SIZE_LIMIT, skipped=report.skipped)
    return import_messages(account, messages, root=root, report=report, progress=progress)


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


def export_account(account, dest, *, format, folder=None, progress=None):
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
    report = ExportReport()
    writer = _write_mbox if format == "mbox" else _write_maildir
    for item in folders:
        writer(dest, item, report)
        if progress:
            progress(report)
    return report


def _write_mbox(dest, folder, report):
    path = os.path.join(dest, *folder.name.split(HIERARCHY_DELIMITER)) + ".mbox"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        for message, raw in _stored_messages(folder):
            text = sources.to_lf(sources.add_header_fields(raw, sources.mbox_state_fields(message.flags)))
            if not text.endswith(b"\n"):
                text += b"\n"
            sender = "".join(message.from_address.split())
            out.write(sources.from_line(message.internaldate, sender))
            out.write(sources.escape_mbox_body(text))
            out.write(b"\n")
            report.exported += 1
            report.bytes += len(raw)
            report.folders[folder.name] += 1


def _write_maildir(dest, folder, report):
    path = dest if folder.name == "INBOX" else os.path.join(dest, sources.maildir_dirname(folder.name))
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    keywords = {}  # name -> letter
    host = "mailsuite"
    for message, raw in _stored_messages(folder):
        flags = {flag.lower() for flag in message.flags}
        letters = [letter for letter, flag in sources.MAILDIR_FLAGS.items() if flag.lower() in flags]
        for keyword in message.keywords.split():
            if keyword.lower() == "$forwarded":
                continue  # the P flag says it
            if keyword not in keywords and len(keywords) < 26:
                keywords[keyword] = chr(ord("a") + len(keywords))
            if keyword in keywords:
                letters.append(keywords[keyword])
        stamp = int(message.internaldate.timestamp())
        name = f"{stamp}.M{message.uid}V{folder.uidvalidity}.{host},S={len(raw)}:2,{''.join(sorted(letters))}"
        file_path = os.path.join(path, "cur", name)
        with open(file_path, "wb") as out:
            out.write(sources.to_lf(raw))
        os.utime(file_path, (stamp, stamp))
        report.exported += 1
        report.bytes += len(raw)
        report.folders[folder.name] += 1
    if keywords:
        with open(os.path.join(path, "dovecot-keywords"), "w", encoding="utf-8") as out:
            for keyword, letter in keywords.items():
                out.write(f"{ord(letter) - ord('a')} {keyword}\n")


# --- IMAP migration ------------------------------------------------------------------------

MIGRATE_BATCH = 100  # messages per UID FETCH and per append_many


@dataclass
class FolderCheck:
    """One remote folder after a migration run: the verification report's row."""

    remote: str
    local: str
    copied: int = 0  # this run
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


def migrate_imap(account, *, host, port, user, password, tls="implicit", verify=True, only=None, progress=None):
    """Copy every folder of a remote IMAP account (or the folders named in `only`) into
    `account`: flags, keywords and INTERNALDATE kept, remote UIDs remembered per folder
    and UIDVALIDITY so that a rerun copies only what arrived since. Returns a
    MigrationReport with counts and sizes on both sides. Raises remote.RemoteError,
    TransferError, or OverQuota (what was copied stays)."""

    source = f"{user}@{host}:{port}"
    report = MigrationReport()
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
            done = parse_sequence_set(state.copied_uids) if state.uidvalidity == uidvalidity else set()
            remote_uids = client.uids()
            todo = [uid for uid in remote_uids if uid not in done]
            for start in range(0, len(todo), MIGRATE_BATCH):
                chunk = todo[start : start + MIGRATE_BATCH]
                meta = client.fetch(chunk, "UID RFC822.SIZE")
                small = [m.uid for m in meta if m.size <= limit]
                check.skipped += [f"UID {m.uid}: larger than {limit} bytes" for m in meta if m.size > limit]
                fetched = [m for m in client.fetch(small, "UID FLAGS INTERNALDATE BODY.PEEK[]") if m.raw is not None]
                done.update(m.uid for m in fetched)

                def record(stored, uids=frozenset(done)):
                    MigratedFolder.objects.filter(pk=state.pk).update(
                        copied_uids=sequence_set(uids), uidvalidity=uidvalidity, local_name=check.local
                    )

                if fetched:
                    store.append_many(account, check.local, [(m.raw, m.flags, m.internaldate) for m in fetched], record=record)
                check.copied += len(fetched)
                if progress:
                    progress(report)
            if state.uidvalidity != uidvalidity and not todo:
                MigratedFolder.objects.filter(pk=state.pk).update(uidvalidity=uidvalidity, copied_uids="")
            sizes = client.fetch(remote_uids, "UID RFC822.SIZE") if remote_uids else []
            check.remote_count, check.remote_size = len(sizes), sum(m.size for m in sizes)
            check.missing = len(set(remote_uids) - done)
            local = Folder.objects.get(account=account, name=check.local)
            check.local_count, check.local_size = local.message_count, local.total_size
    return report
