"""Every change to folders and messages goes through here.

Implementation notes:
- Message bytes are written and fsynced (mailstore.storage) before the transaction
  that creates the rows naming them; the transaction is short and does no network I/O.
- Lock order is account row, then folder row(s), everywhere, so concurrent writers on
  PostgreSQL cannot deadlock; on SQLite the IMMEDIATE transaction serialises writers.
- Quota usage and folder counters change in the same transaction as the messages.
- Change events are published after commit (mailstore.events.publish_on_commit).
"""
import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.db import connection, models, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account
from mailstore import events
from mailstore.mime import parse_message
from mailstore.models import DEFAULT_FOLDERS, Blob, Folder, Message
from mailstore.storage import blob_storage, new_blob_name, sync_names

log = logging.getLogger(__name__)

# Seam for tests: the clock UIDVALIDITY values are drawn from.
clock = time.time


class MailstoreError(Exception):
    """A request the mail store refuses; the message is one line for the user."""


class OverQuota(MailstoreError):
    pass


class NoSuchFolder(MailstoreError):
    pass


class FolderExists(MailstoreError):
    pass


@dataclass
class Recipient:
    """One mailbox a delivery goes to."""

    account: Account
    delivered_to: str  # the address as the envelope named it (after alias expansion: the mailbox's)
    folder: str = "INBOX"


@dataclass
class Outcome:
    recipient: Recipient
    message: Message | None = None
    error: MailstoreError | None = None


@dataclass
class StoredBytes:
    name: str
    size: int
    sha256: str


# Folders ----------------------------------------------------------------------------


def _lock_account(account_id):
    return Account.objects.select_for_update().get(pk=account_id)


def _next_uidvalidity(account):
    """A UIDVALIDITY larger than any this account has used (account row locked)."""
    value = max(int(clock()), account.uidvalidity_counter + 1)
    Account.objects.filter(pk=account.pk).update(uidvalidity_counter=value)
    account.uidvalidity_counter = value
    return value


@transaction.atomic
def create_folder(account, name, *, special_use="", subscribed=True):
    account = _lock_account(account.pk)
    if Folder.objects.filter(account=account, name=name).exists():
        raise FolderExists(f"folder {name} already exists")
    return Folder.objects.create(
        account=account,
        name=name,
        special_use=special_use,
        subscribed=subscribed,
        uidvalidity=_next_uidvalidity(account),
    )


@transaction.atomic
def create_default_folders(account):
    account = _lock_account(account.pk)
    base = _next_uidvalidity(account)
    folders = [
        Folder(account=account, name=name, special_use=use, uidvalidity=base + i)
        for i, (name, use) in enumerate(DEFAULT_FOLDERS)
    ]
    Folder.objects.bulk_create(folders)
    last = base + len(folders) - 1
    Account.objects.filter(pk=account.pk).update(uidvalidity_counter=last)
    events.publish_on_commit(events.Change("folder", account.pk))
    return folders


def delete_account_mail(account):
    """Remove an account's folders and messages (inside the caller's transaction).

    The blobs they used become unreferenced and are removed by the blob sweep.
    """
    Message.objects.filter(folder__account=account).delete()
    Folder.objects.filter(account=account).delete()


# Bytes ------------------------------------------------------------------------------


def queue_id(blob_name):
    """The short id logs and Received: fields use for a message."""
    return blob_name.rsplit("/", 1)[-1][:12].upper()


def store_bytes(raw, name=None):
    """Write `raw` durably to blob storage; nothing refers to it yet."""
    name = blob_storage().save(name or new_blob_name(), ContentFile(raw))
    return StoredBytes(name=name, size=len(raw), sha256=hashlib.sha256(raw).hexdigest())


def read_blob(blob):
    with blob_storage().open(blob.name, "rb") as f:
        return f.read()


def discard_bytes(stored):
    """Remove bytes that no committed row names (a delivery that failed for everyone)."""
    try:
        blob_storage().delete(stored.name)
    except OSError:
        log.warning("could not remove unused blob %s", stored.name, exc_info=True)


def _blob_row(stored, parsed):
    return Blob(
        name=stored.name,
        size=stored.size,
        sha256=stored.sha256,
        header_size=parsed.header_size,
        envelope=parsed.envelope,
        structure=parsed.structure,
        preview=parsed.preview[:256],
        search_text=parsed.search_text,
    )


def _message_row(folder_id, uid, modseq, blob, parsed, *, prefix, internaldate, flags):
    message = Message(
        folder_id=folder_id,
        uid=uid,
        modseq=modseq,
        internaldate=internaldate,
        size=len(prefix) + blob.size,
        blob=blob,
        prefix=prefix,
        sent_date=parsed.date,
        subject=parsed.subject,
        from_display=parsed.from_,
        from_address=parsed.from_address[:320],
        to_display=parsed.to,
        cc_display=parsed.cc,
        message_id=parsed.message_id[:998],
        in_reply_to=parsed.in_reply_to[:998],
        references=" ".join(parsed.references),
        has_attachments=parsed.has_attachments,
    )
    set_flag_fields(message, flags)
    return message


SYSTEM_FLAGS = {
    "\\seen": "seen",
    "\\answered": "answered",
    "\\flagged": "flagged",
    "\\deleted": "deleted",
    "\\draft": "draft",
}


def set_flag_fields(message, flags):
    keywords = []
    for flag in flags:
        field = SYSTEM_FLAGS.get(flag.lower())
        if field:
            setattr(message, field, True)
        elif flag.startswith("\\"):
            continue  # \Recent and unknown system flags are not stored
        elif flag not in keywords:
            keywords.append(flag)
    message.keywords = " ".join(keywords)


@dataclass
class Placement:
    """One copy of a message into one folder."""

    account: Account
    folder: str = "INBOX"
    prefix: bytes = b""  # per-copy header fields in front of the shared bytes
    flags: tuple = ()
    internaldate: object = None  # datetime; now when None


@dataclass
class Job:
    """A message and where its copies go, for place_messages()."""

    incoming: "IncomingMessage"
    placements: list
    outcomes: list = field(default_factory=list)  # one Outcome per placement, filled in


@dataclass
class _FolderState:
    """A locked folder's counters as place_messages() advances them."""

    id: int
    account_id: int
    name: str
    uidnext: int
    highestmodseq: int
    message_count: int
    unseen_count: int
    total_size: int
    uids: list = field(default_factory=list)


def _for_update(sql):
    return sql + (" FOR UPDATE" if connection.features.has_select_for_update else "")


def _placeholders(values):
    return ", ".join(["%s"] * len(values))


def _lock_for_placement(account_ids, folder_names):
    """Lock and read the accounts' quota state and the folders' counters.

    Plain SQL: this runs inside the locked section of every delivery, where the ORM's
    query building cost more than the statements themselves.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _for_update(
                f"SELECT id, quota, quota_used FROM {Account._meta.db_table} "
                f"WHERE id IN ({_placeholders(account_ids)}) ORDER BY id"
            ),
            account_ids,
        )
        quotas = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
        cursor.execute(
            _for_update(
                "SELECT id, account_id, name, uidnext, highestmodseq, message_count, unseen_count, total_size "
                f"FROM {Folder._meta.db_table} WHERE account_id IN ({_placeholders(account_ids)}) "
                f"AND name IN ({_placeholders(folder_names)}) ORDER BY id"
            ),
            [*account_ids, *folder_names],
        )
        folders = {(row[1], row[2]): _FolderState(*row) for row in cursor.fetchall()}
    return quotas, folders


# Columns the delivery path inserts (all but the primary key).
_BLOB_FIELDS = ("name", "size", "sha256", "created", "header_size", "envelope", "structure", "preview", "search_text")
_MESSAGE_FIELDS = tuple(f.name for f in Message._meta.concrete_fields if not f.primary_key)


def _insert(model, field_names, objects):
    """INSERT objects in one statement and set their primary keys (RETURNING).

    What bulk_create() does, minus its per-field machinery: only the field types whose
    values need converting for the database go through get_db_prep_save().
    """
    if len(objects) > 500:  # stay far below the databases' limits on parameters
        for start in range(0, len(objects), 500):
            _insert(model, field_names, objects[start : start + 500])
        return
    if not objects:
        return
    fields = [model._meta.get_field(name) for name in field_names]
    converted = {i for i, f in enumerate(fields) if isinstance(f, (models.DateTimeField, models.JSONField, models.BinaryField))}
    rows = []
    for obj in objects:
        for i, field in enumerate(fields):
            value = getattr(obj, field.attname)
            rows.append(field.get_db_prep_save(value, connection) if i in converted else value)
    quote = connection.ops.quote_name
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([row] * len(objects))} RETURNING {quote(model._meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, rows)
        ids = [r[0] for r in cursor.fetchall()]
    for obj, pk in zip(objects, ids):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias


def _save_counters(folders, quota_changes):
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {Folder._meta.db_table} SET uidnext = %s, highestmodseq = %s, message_count = %s, "
            "unseen_count = %s, total_size = %s WHERE id = %s",
            [(f.uidnext, f.highestmodseq, f.message_count, f.unseen_count, f.total_size, f.id) for f in folders],
        )
        if quota_changes:
            cursor.executemany(
                f"UPDATE {Account._meta.db_table} SET quota_used = %s WHERE id = %s",
                [(used, pk) for pk, used in quota_changes.items()],
            )


def place_messages(jobs):
    """Store every job's copies in the caller's transaction, which must be open.

    This is the one write path for new messages: delivery, APPEND and the SMTP
    server's group commit all come here. Rows are locked account first, then folder,
    each in primary-key order. A copy that does not fit its account's quota, or names
    a folder that does not exist, gets an Outcome with an error and is not stored;
    the other copies are. Blob rows are created only for messages that got a copy.
    """
    now = timezone.now()
    account_ids = sorted({p.account.pk for job in jobs for p in job.placements})
    folder_names = sorted({p.folder for job in jobs for p in job.placements})
    if not account_ids:  # only external recipients: nothing to place
        for job in jobs:
            job.outcomes = []
        return jobs
    quotas, folders = _lock_for_placement(account_ids, folder_names)
    usage = {pk: used for pk, (_, used) in quotas.items()}
    touched, messages, new_blobs = {}, [], []
    for job in jobs:
        job.outcomes = []
        parsed, blob = job.incoming.parsed, job.incoming.blob
        for placement in job.placements:
            account_id = placement.account.pk
            folder = folders.get((account_id, placement.folder))
            size = len(placement.prefix) + blob.size
            if account_id not in quotas or folder is None:
                error = NoSuchFolder(f"folder {placement.folder} does not exist")
                job.outcomes.append(Outcome(placement, error=error))
                continue
            quota = quotas[account_id][0]
            if quota and usage[account_id] + size > quota:
                error = OverQuota(f"{placement.account.address} is over its quota")
                job.outcomes.append(Outcome(placement, error=error))
                continue
            usage[account_id] += size
            uid, modseq = folder.uidnext, folder.highestmodseq + 1
            folder.uidnext, folder.highestmodseq = uid + 1, modseq
            message = _message_row(
                folder.id, uid, modseq, blob, parsed,
                prefix=placement.prefix, internaldate=placement.internaldate or now, flags=placement.flags,
            )
            folder.message_count += 1
            folder.unseen_count += 0 if message.seen else 1
            folder.total_size += size
            folder.uids.append(uid)
            touched[folder.id] = folder
            messages.append(message)
            job.outcomes.append(Outcome(placement, message=message))
        if blob.pk is None and any(o.message for o in job.outcomes):
            new_blobs.append(blob)
    for blob in new_blobs:
        blob.created = now
    _insert(Blob, _BLOB_FIELDS, new_blobs)
    for message in messages:
        message.blob_id = message.blob.pk
    _insert(Message, _MESSAGE_FIELDS, messages)
    _save_counters(touched.values(), {pk: used for pk, used in usage.items() if used != quotas[pk][1]})
    for folder in touched.values():
        change = events.Change("append", folder.account_id, folder.id, tuple(folder.uids), folder.highestmodseq)
        events.publish_on_commit(change)
    return jobs


def trace_prefix(return_path, delivered_to):
    """The fields the MDA adds (RFC 5321 §4.4 Return-Path; Delivered-To as other MDAs do)."""
    return f"Return-Path: <{return_path}>\r\nDelivered-To: {delivered_to}\r\n".encode("utf-8")


@contextmanager
def forget_new_blobs_on_rollback(incomings):
    """If the block raises, the Blob rows it created were rolled back: forget their ids.

    Callers make the bytes' names durable (sync_names) before the transaction: a Blob
    row must never commit naming bytes a crash could lose.
    """
    new = [i for i in incomings if i.blob.pk is None]
    try:
        yield
    except BaseException:
        for incoming in new:
            incoming.blob.pk = None
        raise


class IncomingMessage:
    """Message bytes parsed once and written durably once, shared by every mailbox and
    queue entry that receives them. Call release() when done: if no committed row
    names the bytes, they are removed."""

    def __init__(self, raw, *, name=None):
        self.parsed = parse_message(raw)
        self.stored = store_bytes(raw, name)
        self.blob = _blob_row(self.stored, self.parsed)

    @classmethod
    def from_blob(cls, blob):
        """A message already stored (e.g. on the outbound queue), to place without copying its bytes."""
        incoming = cls.__new__(cls)
        raw = read_blob(blob)
        incoming.parsed = parse_message(raw)
        incoming.stored = StoredBytes(name=blob.name, size=blob.size, sha256=blob.sha256)
        incoming.blob = blob
        return incoming

    @property
    def queue_id(self):
        return queue_id(self.stored.name)

    @contextmanager
    def atomic(self):
        """A transaction that may create the Blob row; if it rolls back, so does our note of it."""
        sync_names([self.stored.name])
        with forget_new_blobs_on_rollback([self]), transaction.atomic():
            yield self.blob

    def save_blob(self):
        """Create the Blob row if no transaction has yet (call inside self.atomic())."""
        if self.blob.pk is None:
            self.blob.save()
        return self.blob

    def release(self):
        if self.blob.pk is None:
            discard_bytes(self.stored)


def placements_for(recipients, return_path, received_at=None):
    return [
        Placement(r.account, r.folder, trace_prefix(return_path, r.delivered_to), internaldate=received_at)
        for r in recipients
    ]


def deliver(message, recipients, *, return_path, received_at=None):
    """Deliver to each recipient's folder: the MDA. Returns one Outcome per recipient.

    `message` is raw bytes or an IncomingMessage (whose release() is then the caller's).
    A recipient whose mailbox is full or gone gets an Outcome with an error; the
    others still get their copy.
    """
    incoming = IncomingMessage(message) if isinstance(message, bytes) else message
    job = Job(incoming, placements_for(recipients, return_path, received_at))
    try:
        with incoming.atomic():
            place_messages([job])
    finally:
        if incoming is not message:
            incoming.release()
    return [Outcome(r, message=o.message, error=o.error) for r, o in zip(recipients, job.outcomes)]


def append(account, folder_name, raw, *, flags=(), internaldate=None):
    """Add a message a client uploads (IMAP APPEND, webmail drafts, imports)."""
    incoming = IncomingMessage(raw)
    job = Job(incoming, [Placement(account, folder_name, flags=tuple(flags), internaldate=internaldate)])
    try:
        with incoming.atomic():
            place_messages([job])
    finally:
        incoming.release()
    [outcome] = job.outcomes
    if outcome.error:
        raise outcome.error
    return outcome.message


@transaction.atomic
def expunge(folder, uids):
    """Remove messages by UID from a folder; returns the UIDs removed."""
    account = _lock_account(folder.account_id)
    folder = Folder.objects.select_for_update().get(pk=folder.pk)
    doomed = list(Message.objects.filter(folder=folder, uid__in=uids).values_list("pk", "uid", "size", "seen"))
    if not doomed:
        return []
    Message.objects.filter(pk__in=[row[0] for row in doomed]).delete()
    size = sum(row[2] for row in doomed)
    unseen = sum(1 for row in doomed if not row[3])
    modseq = folder.highestmodseq + 1
    Folder.objects.filter(pk=folder.pk).update(
        highestmodseq=modseq,
        message_count=F("message_count") - len(doomed),
        unseen_count=F("unseen_count") - unseen,
        total_size=F("total_size") - size,
    )
    Account.objects.filter(pk=account.pk).update(quota_used=F("quota_used") - size)
    removed = tuple(sorted(row[1] for row in doomed))
    events.publish_on_commit(events.Change("expunge", account.pk, folder.pk, removed, modseq))
    return list(removed)
