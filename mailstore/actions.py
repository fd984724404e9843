"""Every change to folders and messages goes through here.

Implementation notes:
- Message bytes are written and fsynced (mailstore.storage) before the transaction
  that creates the rows naming them; the transaction is short and does no network I/O.
- Lock order is account row, then folder row(s), everywhere, so concurrent writers on
  PostgreSQL cannot deadlock; on SQLite the IMMEDIATE transaction serialises writers.
- Quota usage, folder counters and the folders' Conversation rows change in the same
  transaction as the messages (_refresh_conversations).
- Change events are published after commit (mailstore.events.publish_on_commit).
"""
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from operator import attrgetter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.files.base import ContentFile
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, models, transaction
from django.db.models import F, Max, OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat, Greatest, Substr
from django.utils import timezone

from accounts.models import Account
from imap.fetch import render_summary
from mailsuite.db.durability import lazy_commit
from mailstore import events
from mailstore import search_index
from mailstore.mime import parse_message
from mailstore.models import (
    DEFAULT_FOLDERS,
    HIERARCHY_DELIMITER,
    Blob,
    BlobSummary,
    Conversation,
    ExpungedMessage,
    Folder,
    Message,
    Subscription,
    TrainingExample,
)
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


class InvalidFolderName(MailstoreError):
    pass


class CannotDelete(MailstoreError):
    """DELETE refused: the message says why (INBOX, or the folder has children)."""


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
    uidvalidity: int = 0  # the stored message's folder's (IMAP APPENDUID, RFC 4315)


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


# Longest full name a folder may have (Folder.name's column).
MAX_FOLDER_NAME = 1000


def normalise_folder_name(name):
    """INBOX is case-insensitive (RFC 9051 §5.1); so is its name as the first level of a
    hierarchical name, so that "inbox/x" and "INBOX/x" are one folder."""
    head, sep, rest = name.partition(HIERARCHY_DELIMITER)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


def validate_folder_name(name):
    """Raise InvalidFolderName unless `name` can be a folder's full name.

    Wildcards are refused because LIST patterns (RFC 9051 §6.3.9) could not name such a
    folder alone; control characters because they cannot be sent as a quoted string.
    A trailing delimiter is refused too: CREATE's "intends to create children" suffix
    (RFC 9051 §6.3.4) is for the protocol layer to strip before calling.
    """
    if not name:
        raise InvalidFolderName("a folder name cannot be empty")
    if len(name) > MAX_FOLDER_NAME:
        raise InvalidFolderName(f"a folder name is at most {MAX_FOLDER_NAME} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise InvalidFolderName("a folder name cannot contain control characters")
    if "*" in name or "%" in name:
        raise InvalidFolderName("a folder name cannot contain * or %")
    if "" in name.split(HIERARCHY_DELIMITER):
        raise InvalidFolderName(f"a folder name cannot have an empty level (leading, trailing or doubled {HIERARCHY_DELIMITER})")


def _ancestors(name):
    """"a/b/c" -> ["a", "a/b"]."""
    levels = name.split(HIERARCHY_DELIMITER)
    return [HIERARCHY_DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def _create_missing_parents(account, name):
    """Create the ancestors of `name` that do not exist (account row locked): RFC 9051
    §6.3.4 lets CREATE make them, and a name whose parent is missing would be
    unreachable by a client browsing the hierarchy."""
    parents = _ancestors(name)
    if not parents:
        return []
    existing = set(Folder.objects.filter(account=account, name__in=parents).values_list("name", flat=True))
    created = [
        Folder.objects.create(account=account, name=parent, uidvalidity=_next_uidvalidity(account))
        for parent in parents
        if parent not in existing
    ]
    _adopt_subscriptions(account, [f.name for f in created])
    return created


def _adopt_subscriptions(account, names):
    """Folders now exist under these names: subscriptions remembered for the names
    (Subscription rows) become the folders' subscribed flag."""
    remembered = list(Subscription.objects.filter(account=account, name__in=names).values_list("name", flat=True))
    if remembered:
        Folder.objects.filter(account=account, name__in=remembered).update(subscribed=True)
        Subscription.objects.filter(account=account, name__in=remembered).delete()


@transaction.atomic
def create_folder(account, name, *, special_use="", subscribed=True):
    """Create a folder and any missing parents (which get the defaults).

    Raises InvalidFolderName, or FolderExists (INBOX in any case always exists).
    """
    validate_folder_name(name)
    name = normalise_folder_name(name)
    account = _lock_account(account.pk)
    if Folder.objects.filter(account=account, name=name).exists():
        raise FolderExists(f"folder {name} already exists")
    _create_missing_parents(account, name)
    folder = Folder.objects.create(
        account=account,
        name=name,
        special_use=special_use,
        subscribed=subscribed,
        uidvalidity=_next_uidvalidity(account),
    )
    if Subscription.objects.filter(account=account, name=name).delete()[0]:
        # The user subscribed to this name before it existed.
        folder.subscribed = True
        Folder.objects.filter(pk=folder.pk).update(subscribed=True)
    events.publish_on_commit(events.Change("folder", account.pk, folder.pk))
    return folder


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


def _blob_rows(stored, parsed):
    """The Blob row of new bytes and its BlobSummary (whose blob_id comes once the blob has its id)."""
    blob = Blob(
        name=stored.name,
        size=stored.size,
        sha256=stored.sha256,
        header_size=parsed.header_size,
        envelope=parsed.envelope,
        structure=parsed.structure,
        preview=parsed.preview[:256],
        search_text=parsed.search_text,
        header_text=parsed.header_text,
    )
    envelope, bodystructure = render_summary(parsed.envelope, parsed.structure)
    return blob, BlobSummary(envelope=envelope, bodystructure=bodystructure)


def thread_key(message_id, in_reply_to, references, sha256):
    """The conversation a message belongs to, as a signed 64-bit number.

    The thread's root is the first Message-ID of References (RFC 5322 §3.6.4: a reply
    carries its parent's References followed by the parent's Message-ID, so the first
    one names the message that started the conversation), else In-Reply-To, else the
    message's own Message-ID: a message and all the replies to it get the same key from
    their own header alone, without looking another message up. A message without any
    of those is a conversation of its own (keyed by its bytes, so copies stay together).
    A reply that has In-Reply-To but no References starts a conversation under its
    parent's id, so it joins the parent only if the parent started the thread.
    """
    root = references[0] if references else (in_reply_to.split()[0] if in_reply_to.strip() else message_id)
    root = root or "sha256:" + sha256
    return int.from_bytes(hashlib.sha256(root.encode("utf-8", "surrogateescape")).digest()[:8], "big", signed=True)


# Message's columns in the order its constructor takes them positionally, with their
# defaults: a row built that way costs a fifth of one built from keyword arguments, and an
# import builds one per message inside the write transaction.
_MESSAGE_ATTNAMES = [f.attname for f in Message._meta.concrete_fields]
_MESSAGE_DEFAULTS = [f.get_default() for f in Message._meta.concrete_fields]
_MESSAGE_COLUMN = {name: i for i, name in enumerate(_MESSAGE_ATTNAMES)}
_cache_blob = Message._meta.get_field("blob").set_cached_value


def _message_row(folder_id, uid, modseq, blob, parsed, *, prefix, internaldate, flags):
    message_id, in_reply_to = parsed.message_id[:998], parsed.in_reply_to[:998]
    values = _MESSAGE_DEFAULTS.copy()
    column = _MESSAGE_COLUMN
    for name, value in (
        ("folder_id", folder_id),
        ("uid", uid),
        ("modseq", modseq),
        ("internaldate", internaldate),
        ("size", len(prefix) + blob.size),
        ("blob_id", blob.pk),
        ("prefix", prefix),
        ("sent_date", parsed.date),
        ("subject", parsed.subject),
        ("from_display", parsed.from_),
        ("from_address", parsed.from_address[:320]),
        ("to_display", parsed.to),
        ("cc_display", parsed.cc),
        ("message_id", message_id),
        ("in_reply_to", in_reply_to),
        ("references", " ".join(parsed.references)),
        ("has_attachments", parsed.has_attachments),
        ("thread_key", thread_key(message_id, in_reply_to, parsed.references, blob.sha256)),
    ):
        values[column[name]] = value
    message = Message(*values)
    _cache_blob(message, blob)  # what `message.blob = blob` does, without the descriptor's checks
    set_flag_fields(message, flags)
    return message


SYSTEM_FLAGS = {
    "\\seen": "seen",
    "\\answered": "answered",
    "\\flagged": "flagged",
    "\\deleted": "deleted",
    "\\draft": "draft",
}


# Message's boolean flag columns, in the order Message.flags lists them.
FLAG_FIELDS = ("seen", "answered", "flagged", "deleted", "draft")


def parse_flags(flags):
    """(set of system flag field names, tuple of keywords) for IMAP flag strings.

    System flags are case-insensitive; \\Recent and unknown system flags are not stored
    (RFC 9051 dropped \\Recent). Keywords keep the spelling first given and are
    de-duplicated ignoring case, so a client spelling $forwarded and $Forwarded does
    not end up with two keywords.
    """
    system, keywords, folded = set(), [], set()
    for flag in flags:
        name = SYSTEM_FLAGS.get(flag.lower())
        if name:
            system.add(name)
        elif flag.startswith("\\"):
            continue
        elif flag.lower() not in folded:
            folded.add(flag.lower())
            keywords.append(flag)
    return system, tuple(keywords)


def set_flag_fields(message, flags):
    system, keywords = parse_flags(flags)
    for name in system:
        setattr(message, name, True)
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
    uidvalidity: int
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
                "SELECT id, account_id, name, uidnext, highestmodseq, message_count, unseen_count, total_size, uidvalidity "
                f"FROM {Folder._meta.db_table} WHERE account_id IN ({_placeholders(account_ids)}) "
                f"AND name IN ({_placeholders(folder_names)}) ORDER BY id"
            ),
            [*account_ids, *folder_names],
        )
        folders = {(row[1], row[2]): _FolderState(*row) for row in cursor.fetchall()}
    return quotas, folders


# Columns the delivery path inserts (all but the primary key).
_BLOB_FIELDS = (
    "name", "size", "sha256", "created", "header_size", "envelope", "structure", "preview", "search_text",
    "header_text",
)
_SUMMARY_FIELDS = ("blob", "envelope", "bodystructure")
_MESSAGE_FIELDS = tuple(f.name for f in Message._meta.concrete_fields if not f.primary_key)


def _insert(model, field_names, objects):
    """INSERT objects in one statement and set their primary keys (RETURNING).

    What bulk_create() does, minus its per-field machinery: a row's values are read in
    one attrgetter call, and only the field types whose values need converting for the
    database go through get_db_prep_save() (a datetime shared by the rows, once).
    """
    if len(objects) > 500:  # stay far below the databases' limits on parameters
        for start in range(0, len(objects), 500):
            _insert(model, field_names, objects[start : start + 500])
        return
    if not objects:
        return
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: the proxy's lookups cost per value
    fields = [model._meta.get_field(name) for name in field_names]
    values_of = attrgetter(*[f.attname for f in fields])
    single = len(fields) == 1
    converted = [
        (i, field, {} if isinstance(field, models.DateTimeField) else None)
        for i, field in enumerate(fields)
        if isinstance(field, (models.DateTimeField, models.JSONField, models.BinaryField))
    ]
    rows = []
    for obj in objects:
        row = [values_of(obj)] if single else list(values_of(obj))
        for i, field, seen in converted:
            value = row[i]
            if seen is None:
                row[i] = field.get_db_prep_save(value, db)
            elif value in seen:
                row[i] = seen[value]
            else:
                row[i] = seen[value] = field.get_db_prep_save(value, db)
        rows += row
    quote = db.ops.quote_name
    row = f"({', '.join(['%s'] * len(fields))})"
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([row] * len(objects))} RETURNING {quote(model._meta.pk.column)}"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, rows)
        ids = [r[0] for r in cursor.fetchall()]
    for obj, pk in zip(objects, ids):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = db.alias


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


def _refresh_conversations(threads, *, removed=False):
    """Bring the Conversation rows of these threads, {folder id: thread keys}, in line
    with the folders' messages after messages of theirs were added, changed or (with
    `removed`) taken away: each row is recomputed from its thread's messages in the
    folder (a few rows, read through the (folder, thread_key) index), and rows whose
    thread has no message left there go. Plain SQL, in the caller's transaction; one
    upsert for many folders (a delivery batch touches one folder per recipient)."""
    conversations, messages = Conversation._meta.db_table, Message._meta.db_table
    terms = [(folder_id, chunk) for folder_id, keys in threads.items() for chunk in _chunks(sorted(keys))]
    with connection.cursor() as cursor:
        if removed:
            for folder_id, chunk in terms:
                cursor.execute(
                    f"DELETE FROM {conversations} WHERE folder_id = %s AND thread_key IN ({_placeholders(chunk)}) "
                    f"AND NOT EXISTS (SELECT 1 FROM {messages} WHERE {messages}.folder_id = {conversations}.folder_id "
                    f"AND {messages}.thread_key = {conversations}.thread_key)",
                    [folder_id, *chunk],
                )
        for group in _term_groups(terms):
            # An OR of (folder, keys) terms: each one an index search on both databases.
            where = " OR ".join(f"(folder_id = %s AND thread_key IN ({_placeholders(chunk)}))" for _, chunk in group)
            cursor.execute(
                f"INSERT INTO {conversations} (folder_id, thread_key, latest_date, latest_id, messages, unread, flagged, attachments) "
                f"{_CONVERSATION_SUMS} FROM {messages} WHERE {where} "
                "GROUP BY folder_id, thread_key "
                "ON CONFLICT (folder_id, thread_key) DO UPDATE SET latest_date = excluded.latest_date, "
                "latest_id = excluded.latest_id, messages = excluded.messages, unread = excluded.unread, "
                "flagged = excluded.flagged, attachments = excluded.attachments",
                [value for folder_id, chunk in group for value in (folder_id, *chunk)],
            )


def _term_groups(terms):
    """(folder id, keys) terms in groups binding at most about _BATCH values each."""
    group, size = [], 0
    for term in terms:
        if group and size + 1 + len(term[1]) > _BATCH:
            yield group
            group, size = [], 0
        group.append(term)
        size += 1 + len(term[1])
    if group:
        yield group


# A thread's Conversation columns from its messages (the GROUP BY is the caller's).
_CONVERSATION_SUMS = (
    "SELECT folder_id, thread_key, MAX(sent_date), MAX(id), COUNT(*), SUM(CASE WHEN seen THEN 0 ELSE 1 END), "
    "SUM(CASE WHEN flagged THEN 1 ELSE 0 END), SUM(CASE WHEN has_attachments THEN 1 ELSE 0 END)"
)


def _threads(pairs):
    """{folder id: set of thread keys} from (folder id, thread key) pairs."""
    threads = {}
    for folder_id, key in pairs:
        threads.setdefault(folder_id, set()).add(key)
    return threads


def rebuild_conversations(folder):
    """Recompute every Conversation row of a folder from its messages (for a repair, or
    after thread keys were rewritten outside this module). Takes the folder's lock."""
    with transaction.atomic():
        state = _lock_folder_state(folder.account_id, folder.pk)
        Conversation.objects.filter(folder_id=state.id).delete()
        keys = set(Message.objects.filter(folder_id=state.id).values_list("thread_key", flat=True).distinct())
        _refresh_conversations({state.id: keys})


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
    touched, messages, with_new_blob = {}, [], []
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
            job.outcomes.append(Outcome(placement, message=message, uidvalidity=folder.uidvalidity))
        if blob.pk is None and any(o.message for o in job.outcomes):
            with_new_blob.append(job.incoming)
    for incoming in with_new_blob:
        incoming.blob.created = now
    _insert(Blob, _BLOB_FIELDS, [incoming.blob for incoming in with_new_blob])
    _insert_summaries(with_new_blob)
    if with_new_blob:
        transaction.on_commit(search_index.soon)  # indexed for search after the commit
    for message in messages:
        message.blob_id = message.blob.pk
    _insert(Message, _MESSAGE_FIELDS, messages)
    _refresh_conversations(_threads((m.folder_id, m.thread_key) for m in messages))
    _save_counters(touched.values(), {pk: used for pk, used in usage.items() if used != quotas[pk][1]})
    for folder in touched.values():
        change = events.Change("append", folder.account_id, folder.id, tuple(folder.uids), folder.highestmodseq)
        events.publish_on_commit(change)
    return jobs


def _insert_summaries(incomings):
    """The BlobSummary rows of blobs just inserted."""
    for incoming in incomings:
        incoming.summary.blob_id = incoming.blob.pk
    _insert(BlobSummary, _SUMMARY_FIELDS, [incoming.summary for incoming in incomings])


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
        self.blob, self.summary = _blob_rows(self.stored, self.parsed)

    @classmethod
    def from_blob(cls, blob):
        """A message already stored (e.g. on the outbound queue), to place without copying its bytes."""
        incoming = cls.__new__(cls)
        raw = read_blob(blob)
        incoming.parsed = parse_message(raw)
        incoming.stored = StoredBytes(name=blob.name, size=blob.size, sha256=blob.sha256)
        incoming.blob = blob
        incoming.summary = None  # the blob's row, with its summary, is there already
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
    [message] = append_many(account, folder_name, [(raw, flags, internaldate)])
    return message


# Threads that parse and write uploaded messages' bytes side by side: the writes wait on
# fsync, which releases the GIL, so a batch of small messages costs one fsync's latency
# per thread rather than per message.
_PREPARE_THREADS = 16
_prepare_pool = None


def prepare_incoming(raws):
    """IncomingMessage for each of `raws` (parsed, bytes written), side by side in threads;
    if any fails, those made are released."""
    global _prepare_pool
    if len(raws) < 2:
        return [IncomingMessage(raw) for raw in raws]
    if _prepare_pool is None:
        _prepare_pool = ThreadPoolExecutor(_PREPARE_THREADS, thread_name_prefix="append")
    futures = [_prepare_pool.submit(IncomingMessage, raw) for raw in raws]
    wait(futures)
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        for future in futures:
            if future.exception() is None:
                future.result().release()
        raise failed[0]
    return [future.result() for future in futures]


def append_many(account, folder_name, uploads, *, record=None):
    """Add uploaded messages, (raw, flags, internaldate) each, all or none (IMAP
    MULTIAPPEND, RFC 3502). Parsing and the durable write of the bytes happen before the
    transaction, so the database's write lock is held for the rows alone.

    `record(messages)`, if given, runs inside that transaction once the messages are
    placed: a caller's own rows (an import ledger) commit or roll back with the mail."""
    incomings = prepare_uploads(uploads)
    try:
        with forget_new_blobs_on_rollback(incomings), transaction.atomic():
            messages = [outcome.message for outcome in place_uploads(account, folder_name, incomings, uploads)]
            if record is not None:
                record(messages)
    finally:
        for incoming in incomings:
            incoming.release()
    return messages


def prepare_uploads(uploads):
    """append_many's work before its transaction: IncomingMessages for the bytes of
    `uploads`, (raw, flags, internaldate) each, parsed and written, their names durable.
    Release them when done, as append_many does."""
    incomings = prepare_incoming([raw for raw, _, _ in uploads])
    try:
        sync_names([incoming.stored.name for incoming in incomings])
    except BaseException:
        for incoming in incomings:
            incoming.release()
        raise
    return incomings


def place_uploads(account, folder_name, incomings, uploads):
    """append_many's rows, in the caller's transaction: each of `incomings` (prepared
    from the bytes of `uploads`, (raw, flags, internaldate) each) placed with its
    upload's flags and date, all or none (the first error is raised). Returns their
    Outcomes. The incomings' names must be durable already (prepare_uploads)."""
    jobs = [
        Job(incoming, [Placement(account, folder_name, flags=tuple(flags), internaldate=internaldate)])
        for incoming, (_, flags, internaldate) in zip(incomings, uploads)
    ]
    place_messages(jobs)
    for job in jobs:
        if job.outcomes[0].error:
            raise job.outcomes[0].error  # undoes the ones placed before it
    return [job.outcomes[0] for job in jobs]


# Operations on stored messages ---------------------------------------------------------

# Most values one statement binds: far below SQLite's and PostgreSQL's limits.
_BATCH = 500
# A run of at least this many consecutive UIDs is matched as a range, not listed.
_MIN_RANGE = 8


def _chunks(values, size=_BATCH):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _uid_groups(uids):
    """`uids` as groups of ranges [(low, high), …] or of single UIDs [uid, …], each group
    binding at most _BATCH values: ("ranges", […]) or ("in", […]).

    IMAP sets are mostly ranges (1:*, 400:700), so runs of consecutive UIDs become
    BETWEEN and a STORE on 100k messages reads them in one statement, not 200.
    """
    ordered = sorted(set(uids))
    ranges, singles, start = [], [], 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            run = ordered[start:i]
            if len(run) >= _MIN_RANGE:
                ranges.append((run[0], run[-1]))
            else:
                singles.extend(run)
            start = i
    for chunk in _chunks(ranges, _BATCH // 2):
        yield "ranges", chunk
    for chunk in _chunks(singles):
        yield "in", chunk


def _uid_filters(uids):
    """Q objects that together match exactly `uids` (see _uid_groups)."""
    for kind, group in _uid_groups(uids):
        if kind == "in":
            yield Q(uid__in=group)
            continue
        q = Q()
        for low, high in group:
            q |= Q(uid__range=(low, high))
        yield q


def _uid_clauses(uids):
    """SQL conditions (text, params) that together match exactly `uids` (see _uid_groups)."""
    for kind, group in _uid_groups(uids):
        if kind == "in":
            yield f"uid IN ({_placeholders(group)})", list(group)
        else:
            yield " OR ".join(["uid BETWEEN %s AND %s"] * len(group)), [bound for pair in group for bound in pair]


def _messages(folder_id, uids, *fields):
    """Rows of the folder's messages with these UIDs, ascending UID: values_list tuples
    of `fields`, or Message instances when no fields are named."""
    rows = []
    for q in _uid_filters(uids):
        query = Message.objects.filter(q, folder_id=folder_id).order_by()
        rows.extend(query.values_list(*fields) if fields else query)
    rows.sort(key=(lambda m: m.uid) if not fields else (lambda row: row[fields.index("uid")]))
    return rows


def _message_rows(folder_id, uids, columns):
    """Rows (tuples of `columns`, first column uid) of the folder's messages with these
    UIDs, ascending UID. Plain SQL, like the rest of the STORE/EXPUNGE path: those run for
    every command, and the ORM's query building cost several times the statements."""
    rows = []
    with connection.cursor() as cursor:
        for where, params in _uid_clauses(uids):
            cursor.execute(
                f"SELECT uid, {columns} FROM {Message._meta.db_table} WHERE folder_id = %s AND ({where})",
                [folder_id, *params],
            )
            rows.extend(cursor.fetchall())
    rows.sort()
    return rows


def _lock_folder_state(account_id, folder_id):
    """_lock_folders for one folder, in plain SQL: the folder's counters as a _FolderState."""
    with connection.cursor() as cursor:
        cursor.execute(_for_update(f"SELECT id FROM {Account._meta.db_table} WHERE id = %s"), [account_id])
        cursor.fetchall()
        cursor.execute(
            _for_update(
                "SELECT id, account_id, name, uidnext, highestmodseq, message_count, unseen_count, total_size, uidvalidity "
                f"FROM {Folder._meta.db_table} WHERE id = %s AND account_id = %s"
            ),
            [folder_id, account_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise NoSuchFolder("the folder no longer exists")
    return _FolderState(*row)


def _lock_folders(account_id, folder_ids):
    """Lock the account row, then the folders' rows in primary-key order (the order every
    writer takes, so PostgreSQL writers cannot deadlock); returns (account, {pk: folder}).

    Raises NoSuchFolder if one of them is gone (deleted by another session).
    """
    account = _lock_account(account_id)
    folders = {f.pk: f for f in Folder.objects.select_for_update().filter(pk__in=folder_ids, account_id=account_id).order_by("pk")}
    if len(folders) != len(set(folder_ids)):
        raise NoSuchFolder("the folder no longer exists")
    return account, folders


def _folder_id(account_id, name):
    """The id of the account's folder called `name`, or NoSuchFolder.

    Looked up before the folder rows are locked: safe because every change to folder
    names locks the account row first, which the caller holds.
    """
    name = normalise_folder_name(name)
    pk = Folder.objects.filter(account_id=account_id, name=name).values_list("pk", flat=True).first()
    if pk is None:
        raise NoSuchFolder(f"folder {name} does not exist")
    return pk


def _save_folder(folder, **extra):
    Folder.objects.filter(pk=folder.pk).update(
        uidnext=folder.uidnext,
        highestmodseq=folder.highestmodseq,
        message_count=folder.message_count,
        unseen_count=folder.unseen_count,
        total_size=folder.total_size,
        **extra,
    )


def _remove(folder, rows, modseq):
    """Delete messages (rows of pk, uid, size, seen, thread_key) from a locked folder and
    write their tombstones at `modseq` (QRESYNC's VANISHED reads them); adjusts the
    folder in memory and returns the bytes freed."""
    pks = [row[0] for row in rows]
    for chunk in _chunks(pks):
        Message.objects.filter(pk__in=chunk).delete()
    _refresh_conversations({folder.pk: {row[4] for row in rows}}, removed=True)
    ExpungedMessage.objects.bulk_create(
        [ExpungedMessage(folder_id=folder.pk, uid=row[1], modseq=modseq) for row in rows], batch_size=_BATCH
    )
    size = sum(row[2] for row in rows)
    folder.highestmodseq = modseq
    folder.message_count -= len(rows)
    folder.unseen_count -= sum(1 for row in rows if not row[3])
    folder.total_size -= size
    return size


@lazy_commit
def expunge(folder, uids):
    """Remove messages by UID from a folder; returns the UIDs removed, ascending.

    All removed messages share one new MODSEQ, which their tombstones record.
    """
    state = _lock_folder_state(folder.account_id, folder.pk)
    doomed = _message_rows(state.id, uids, "id, size, seen, thread_key")
    if not doomed:
        return []
    modseq = state.highestmodseq + 1
    ids = [row[1] for row in doomed]
    removed = tuple(row[0] for row in doomed)
    size = sum(row[2] for row in doomed)
    now = timezone.now()
    with connection.cursor() as cursor:
        for chunk in _chunks(ids):
            cursor.execute(f"DELETE FROM {Message._meta.db_table} WHERE id IN ({_placeholders(chunk)})", chunk)
        cursor.execute(f"UPDATE {Account._meta.db_table} SET quota_used = quota_used - %s WHERE id = %s", [size, state.account_id])
    _refresh_conversations({state.id: {row[4] for row in doomed}}, removed=True)
    _insert(ExpungedMessage, ("folder", "uid", "modseq", "expunged_at"),
            [ExpungedMessage(folder_id=state.id, uid=uid, modseq=modseq, expunged_at=now) for uid in removed])
    state.highestmodseq = modseq
    state.message_count -= len(doomed)
    state.unseen_count -= sum(1 for row in doomed if not row[3])
    state.total_size -= size
    _save_counters([state], {})
    events.publish_on_commit(events.Change("expunge", state.account_id, state.id, removed, modseq))
    return list(removed)


def vanished_since(folder, modseq, uids=None):
    """UIDs expunged from the folder with a MODSEQ above `modseq`, ascending (RFC 7162
    §3.2.10 VANISHED); only those in `uids` when given.

    If tombstones that old were pruned (prune_expunged), the exact answer is gone: the
    answer is then every UID below uidnext (or in `uids`) that the folder does not hold,
    a superset a client discards harmlessly. Pass `uids` (the client's known UIDs or
    the requested set) to keep that answer small.
    """
    floor = Folder.objects.filter(pk=folder.pk).values_list("expunged_pruned_modseq", "uidnext").first()
    if floor is None:
        return []
    pruned_modseq, uidnext = floor
    if modseq < pruned_modseq:
        candidates = set(range(1, uidnext)) if uids is None else {uid for uid in uids if 0 < uid < uidnext}
        present = {row[0] for row in _messages(folder.pk, candidates, "uid")}
        return sorted(candidates - present)
    found = ExpungedMessage.objects.filter(folder_id=folder.pk, modseq__gt=modseq).values_list("uid", flat=True)
    if uids is not None:
        wanted = set(uids)
        found = (uid for uid in found if uid in wanted)
    return sorted(set(found))


@transaction.atomic
def prune_expunged(before):
    """Delete tombstones written before `before` (a datetime); returns how many.

    Each folder remembers the highest MODSEQ pruned, so vanished_since() knows when
    it can no longer answer exactly. Only tombstones at or below that MODSEQ are
    deleted, so one committed concurrently by a slow expunge is never lost unrecorded.
    Meant for a periodic task (weeks of history keep QRESYNC cheap for clients that
    reconnect after a holiday).
    """
    newest_pruned = (
        ExpungedMessage.objects.filter(folder=OuterRef("pk"), expunged_at__lt=before)
        .order_by()
        .values("folder")
        .annotate(top=Max("modseq"))
        .values("top")
    )
    Folder.objects.filter(pk__in=ExpungedMessage.objects.filter(expunged_at__lt=before).values("folder")).update(
        expunged_pruned_modseq=Greatest(F("expunged_pruned_modseq"), Subquery(newest_pruned))
    )
    deleted, _ = ExpungedMessage.objects.filter(
        expunged_at__lt=before, modseq__lte=F("folder__expunged_pruned_modseq")
    ).delete()
    return deleted


BLOB_GRACE = timedelta(hours=1)  # a blob younger than this may still be getting its first reference
_SWEEP_BATCH = 500


def remove_unused_blobs(*, older_than=BLOB_GRACE):
    """Delete the message bytes nothing needs any more; returns how many blobs went.

    Expunging a message removes its row, not its blob: a blob may be shared by the copies
    in several mailboxes and by the outbound queue. A blob is unused once no message, no
    queued message and no training example the spam filter has yet to learn from names
    it. Its row goes (with its search index entries, spam verdicts, learned examples and
    POP3 sizes) in a short transaction that checks again, then its bytes; a reference
    committed meanwhile makes the database refuse the delete, and that blob waits for the
    next sweep. Bytes whose removal failed (or a crash just after the commit) are logged
    and stay on disk, named by no row. Meant for a periodic task.
    """
    cutoff = timezone.now() - older_than
    unused = (
        Blob.objects.filter(created__lt=cutoff, messages=None, queued=None)
        .exclude(training_examples__learned=False)
        .order_by()
    )
    removed = 0
    after = 0
    while True:
        # Candidates are read outside the transaction: on SQLite a write transaction holds
        # the one write lock, and the read walks every old blob.
        candidates = list(unused.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:_SWEEP_BATCH])
        if not candidates:
            return removed
        after = candidates[-1]
        try:
            with transaction.atomic():
                names = dict(unused.filter(pk__in=candidates).values_list("pk", "name"))  # checked again
                Blob.objects.filter(pk__in=names).delete()
        except IntegrityError:
            log.info("blob sweep: a message took one of %d blobs while they were removed; next time", len(candidates))
            continue
        storage = blob_storage()
        for name in names.values():
            try:
                storage.delete(name)
            except OSError:
                log.warning("blob sweep: could not remove %s (no row names it any more)", name, exc_info=True)
        removed += len(names)


@dataclass
class StoreResult:
    # (uid, flags as Message.flags orders them, new modseq) for each message whose flags changed.
    changed: list = field(default_factory=list)
    # UIDs left alone because their MODSEQ is above UNCHANGEDSINCE (RFC 7162 §3.1.3 MODIFIED).
    modified: list = field(default_factory=list)
    # The MODSEQ the changed messages got, and the folder's HIGHESTMODSEQ; None if nothing changed.
    modseq: int | None = None


STORE_MODES = ("set", "add", "remove")


def _flags_tuple(state):
    """Flags of a state (five booleans in FLAG_FIELDS order, keywords string), ordered as Message.flags."""
    system = tuple(f"\\{name.capitalize()}" for name, on in zip(FLAG_FIELDS, state[:5]) if on)
    return system + tuple(state[5].split())


def _stored_state(state, mode, system, keywords):
    """The flag state a message in `state` has after STORE `mode` of (system, keywords)."""
    if mode == "set":
        return (*(name in system for name in FLAG_FIELDS), " ".join(keywords))
    current = state[5].split()
    if mode == "add":
        bits = tuple(on or name in system for name, on in zip(FLAG_FIELDS, state[:5]))
        have = {k.lower() for k in current}
        current += [k for k in keywords if k.lower() not in have]
    else:
        bits = tuple(on and name not in system for name, on in zip(FLAG_FIELDS, state[:5]))
        drop = {k.lower() for k in keywords}
        current = [k for k in current if k.lower() not in drop]
    return (*bits, " ".join(current))


@lazy_commit
def store_flags(folder, uids, *, mode, flags, unchangedsince=None):
    """IMAP STORE (RFC 9051 §6.4.6) with CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3).

    mode is "set" (FLAGS), "add" (+FLAGS) or "remove" (-FLAGS). Messages whose flags
    end up as they were keep their MODSEQ; the others all get one new MODSEQ, as
    RFC 7162 allows for one command. UIDs not in the folder are ignored.
    """
    if mode not in STORE_MODES:
        raise ValueError(f"store mode must be one of {STORE_MODES}, not {mode!r}")
    system, keywords = parse_flags(flags)
    locked = _lock_folder_state(folder.account_id, folder.pk)
    rows = _message_rows(locked.id, uids, "modseq, seen, answered, flagged, deleted, draft, keywords, thread_key")
    result = StoreResult()
    # Messages grouped by the flag state they end in: one UPDATE per state (and per
    # _BATCH UIDs), however many messages there are.
    groups, unseen_delta, threads = {}, 0, set()
    for uid, modseq, *state, key in rows:
        if unchangedsince is not None and modseq > unchangedsince:
            result.modified.append(uid)
            continue
        new = _stored_state(state, mode, system, keywords)
        if new == tuple(state):
            continue
        groups.setdefault(new, []).append(uid)
        unseen_delta += int(state[0]) - int(new[0])
        if bool(new[0]) != bool(state[0]) or bool(new[2]) != bool(state[2]):  # \Seen, \Flagged: counted per conversation
            threads.add(key)
    if not groups:
        return result
    modseq = locked.highestmodseq + 1
    with connection.cursor() as cursor:
        for new, group in groups.items():
            for where, params in _uid_clauses(group):
                cursor.execute(
                    f"UPDATE {Message._meta.db_table} SET seen = %s, answered = %s, flagged = %s, deleted = %s, "
                    f"draft = %s, keywords = %s, modseq = %s WHERE folder_id = %s AND ({where})",
                    [*(bool(on) for on in new[:5]), new[5], modseq, locked.id, *params],
                )
            flags_now = _flags_tuple(new)
            result.changed.extend((uid, flags_now, modseq) for uid in group)
        cursor.execute(
            f"UPDATE {Folder._meta.db_table} SET highestmodseq = %s, unseen_count = unseen_count + %s WHERE id = %s",
            [modseq, unseen_delta, locked.id],
        )
    if threads:
        _refresh_conversations({locked.id: threads})
    result.changed.sort()
    result.modseq = modseq
    changed_uids = tuple(uid for uid, _, _ in result.changed)
    events.publish_on_commit(events.Change("flags", locked.account_id, locked.id, changed_uids, modseq))
    return result


@dataclass
class CopyResult:
    uidvalidity: int  # the target's, for RFC 4315 COPYUID
    pairs: list = field(default_factory=list)  # (source uid, new uid), ascending source uid


# What a copy takes over from its original: everything but identity and place.
_COPIED_FIELDS = tuple(
    f.attname for f in Message._meta.concrete_fields if f.name not in ("id", "folder", "uid", "modseq")
)


def _transfer(folder, uids, target_name, *, move):
    """COPY or MOVE (caller's transaction): new rows in the target sharing the originals'
    blobs, UIDs from the target's uidnext in ascending source-UID order."""
    target_id = _folder_id(folder.account_id, target_name)
    account, folders = _lock_folders(folder.account_id, [folder.pk, target_id])
    source, target = folders[folder.pk], folders[target_id]
    originals = _messages(source.pk, uids)
    result = CopyResult(target.uidvalidity)
    if not originals:
        return result
    size = sum(m.size for m in originals)
    # A move within one account frees what it uses: only a copy needs room.
    if not move and account.over_quota_with(size):
        raise OverQuota(f"{account.address} is over its quota")
    modseq = target.highestmodseq + 1
    copies = [
        Message(folder_id=target.pk, uid=target.uidnext + i, modseq=modseq, **{name: getattr(m, name) for name in _COPIED_FIELDS})
        for i, m in enumerate(originals)
    ]
    _insert(Message, _MESSAGE_FIELDS, copies)
    _refresh_conversations({target.pk: {c.thread_key for c in copies}})
    target.uidnext += len(copies)
    target.highestmodseq = modseq
    target.message_count += len(copies)
    target.unseen_count += sum(1 for m in copies if not m.seen)
    target.total_size += size
    result.pairs = [(m.uid, c.uid) for m, c in zip(originals, copies)]
    new_uids = tuple(c.uid for c in copies)
    events.publish_on_commit(events.Change("append", account.pk, target.pk, new_uids, modseq))
    if move:
        # Into the same folder, the originals go at the copies' MODSEQ: one per command.
        source_modseq = modseq if source is target else source.highestmodseq + 1
        _remove(source, [(m.pk, m.uid, m.size, m.seen, m.thread_key) for m in originals], source_modseq)
        moved = tuple(m.uid for m in originals)
        events.publish_on_commit(events.Change("expunge", account.pk, source.pk, moved, source_modseq))
    else:
        Account.objects.filter(pk=account.pk).update(quota_used=F("quota_used") + size)
    _save_folder(target)
    if source is not target and move:
        _save_folder(source)
    _record_training(account, source, target, originals)
    return result


JUNK, TRASH = "\\Junk", "\\Trash"


def _record_training(account, source, target, messages):
    """Moving into Junk says "spam"; out of Junk (anywhere but Trash) says "not spam"."""
    if target.special_use == JUNK and source.special_use != JUNK:
        verdict = TrainingExample.SPAM
    elif source.special_use == JUNK and target.special_use not in (JUNK, TRASH):
        verdict = TrainingExample.HAM
    else:
        return
    TrainingExample.objects.bulk_create(
        TrainingExample(account_id=account.pk, blob_id=m.blob_id, verdict=verdict) for m in messages
    )
    from antispam.actions import learn_moved  # the filter learns it once this commits (bounded)

    transaction.on_commit(lambda: learn_moved(account.pk))


@lazy_commit
def copy_messages(folder, uids, target_name):
    """IMAP COPY (RFC 9051 §6.4.7; COPYUID, RFC 4315 §3): the copies share the
    originals' bytes. UIDs not in the folder are ignored; none found copies nothing.

    Raises NoSuchFolder (the protocol's [TRYCREATE]) or OverQuota.
    """
    return _transfer(folder, uids, target_name, move=False)


@lazy_commit
def move_messages(folder, uids, target_name):
    """IMAP MOVE (RFC 6851): copy and expunge in one transaction, so no other session
    sees the message in both folders or in neither. Needs no free quota.

    Raises NoSuchFolder.
    """
    return _transfer(folder, uids, target_name, move=True)


# Folder structure ----------------------------------------------------------------------


def _is_under(name, parent):
    return name.startswith(parent + HIERARCHY_DELIMITER)


@transaction.atomic
def rename_folder(account, old_name, new_name):
    """IMAP RENAME (RFC 9051 §6.3.6): the folder and its children get new names and
    keep their UIDVALIDITY, UIDs and messages; missing parents of the new name are
    created.

    Renaming INBOX instead moves all its messages into a new folder of the new name
    and leaves INBOX empty; INBOX's children stay where they are.

    Raises NoSuchFolder, FolderExists (the new name or a child's new name is taken),
    InvalidFolderName (also for renaming a folder under itself).
    """
    validate_folder_name(old_name)
    validate_folder_name(new_name)
    old_name, new_name = normalise_folder_name(old_name), normalise_folder_name(new_name)
    account = _lock_account(account.pk)
    if old_name == "INBOX":
        return _rename_inbox(account, new_name)
    if new_name == old_name or _is_under(new_name, old_name):
        raise InvalidFolderName(f"cannot rename {old_name} to {new_name}, under itself")
    renamed = list(
        Folder.objects.select_for_update()
        .filter(Q(name=old_name) | Q(name__startswith=old_name + HIERARCHY_DELIMITER), account=account)
        .order_by("pk")
    )
    # name__startswith uses LIKE, case-insensitive on SQLite: keep exact matches only.
    renamed = [f for f in renamed if f.name == old_name or _is_under(f.name, old_name)]
    if not any(f.name == old_name for f in renamed):
        raise NoSuchFolder(f"folder {old_name} does not exist")
    targets = [new_name + f.name[len(old_name) :] for f in renamed]
    if any(len(t) > MAX_FOLDER_NAME for t in targets):
        raise InvalidFolderName(f"a folder name is at most {MAX_FOLDER_NAME} characters")
    taken = sorted(Folder.objects.filter(account=account, name__in=targets).values_list("name", flat=True))
    if taken:
        raise FolderExists(f"folder {taken[0]} already exists")
    _create_missing_parents(account, new_name)
    # One statement for the whole subtree; a rename is a change to each folder, so each
    # gets a new HIGHESTMODSEQ (the messages are unchanged).
    Folder.objects.filter(pk__in=[f.pk for f in renamed]).update(
        name=Concat(Value(new_name), Substr("name", len(old_name) + 1)),
        highestmodseq=F("highestmodseq") + 1,
    )
    _adopt_subscriptions(account, targets)
    events.publish_on_commit(events.Change("folder", account.pk))


def _rename_inbox(account, new_name):
    """RENAME INBOX (RFC 9051 §6.3.6): the messages move to a new folder (new
    UIDVALIDITY, so they keep their UIDs there); INBOX keeps its UIDVALIDITY and
    uidnext, so its UIDs are never reused, and records tombstones for QRESYNC."""
    if Folder.objects.filter(account=account, name=new_name).exists():
        raise FolderExists(f"folder {new_name} already exists")
    _create_missing_parents(account, new_name)
    inbox = Folder.objects.select_for_update().get(account=account, name="INBOX")
    modseq = inbox.highestmodseq + 1
    folder = Folder.objects.create(
        account=account,
        name=new_name,
        uidvalidity=_next_uidvalidity(account),
        uidnext=inbox.uidnext,
        highestmodseq=modseq,
        message_count=inbox.message_count,
        unseen_count=inbox.unseen_count,
        total_size=inbox.total_size,
    )
    _adopt_subscriptions(account, [new_name])
    uids = tuple(Message.objects.filter(folder=inbox).order_by("uid").values_list("uid", flat=True))
    # Tombstones and the move in two set-based statements, however big INBOX is.
    expunged, message = ExpungedMessage._meta.db_table, Message._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {expunged} (folder_id, uid, modseq, expunged_at) "
            f"SELECT %s, uid, %s, %s FROM {message} WHERE folder_id = %s",
            [inbox.pk, modseq, ExpungedMessage._meta.get_field("expunged_at").get_db_prep_save(timezone.now(), connection), inbox.pk],
        )
    Message.objects.filter(folder=inbox).update(folder=folder)
    Conversation.objects.filter(folder=inbox).update(folder=folder)
    Folder.objects.filter(pk=inbox.pk).update(highestmodseq=modseq, message_count=0, unseen_count=0, total_size=0)
    if uids:
        events.publish_on_commit(events.Change("expunge", account.pk, inbox.pk, uids, modseq))
    events.publish_on_commit(events.Change("folder", account.pk))


@transaction.atomic
def delete_folder(account, name):
    """IMAP DELETE (RFC 9051 §6.3.5): the folder and its messages go, and their bytes
    stop counting against the quota. A subscription to the name stays (§6.3.7).

    Raises NoSuchFolder, or CannotDelete for INBOX and for a folder with children
    (deleting it would leave them under a name that is not a folder).
    """
    name = normalise_folder_name(name)
    if name == "INBOX":
        raise CannotDelete("INBOX cannot be deleted")
    account = _lock_account(account.pk)
    folder = Folder.objects.select_for_update().filter(account=account, name=name).first()
    if folder is None:
        raise NoSuchFolder(f"folder {name} does not exist")
    children = Folder.objects.filter(account=account, name__startswith=name + HIERARCHY_DELIMITER).values_list("name", flat=True)
    if any(_is_under(child, name) for child in children):
        raise CannotDelete(f"folder {name} has child folders; delete them first")
    if folder.subscribed:
        Subscription.objects.get_or_create(account=account, name=name)
    # One statement for all messages: nothing refers to Message rows, so Django deletes
    # them without loading them. Their blobs, if now unused, go with the blob sweep.
    Message.objects.filter(folder=folder).delete()
    Folder.objects.filter(pk=folder.pk).delete()
    Account.objects.filter(pk=account.pk).update(quota_used=F("quota_used") - folder.total_size)
    events.publish_on_commit(events.Change("folder", account.pk, folder.pk))


@transaction.atomic
def set_subscribed(account, name, subscribed):
    """IMAP SUBSCRIBE / UNSUBSCRIBE (RFC 9051 §6.3.7, §6.3.8).

    An existing folder's flag is Folder.subscribed. A name with no folder may be
    subscribed too (§6.3.7 allows it): it is remembered as a Subscription row and
    listed by subscribed_names(). Unsubscribing a name that is not subscribed succeeds
    and changes nothing, so a retried UNSUBSCRIBE is not an error.

    Raises InvalidFolderName.
    """
    validate_folder_name(name)
    name = normalise_folder_name(name)
    account = _lock_account(account.pk)
    if not Folder.objects.filter(account=account, name=name).update(subscribed=subscribed):
        if subscribed:
            Subscription.objects.get_or_create(account=account, name=name)
        else:
            Subscription.objects.filter(account=account, name=name).delete()
    events.publish_on_commit(events.Change("folder", account.pk))


def subscribed_names(account):
    """Every subscribed name, sorted: subscribed folders and names without a folder
    (LIST (SUBSCRIBED) shows the latter \\NonExistent)."""
    folders = Folder.objects.filter(account=account, subscribed=True).values_list("name", flat=True)
    remembered = Subscription.objects.filter(account=account).values_list("name", flat=True)
    return sorted({*folders, *remembered})
