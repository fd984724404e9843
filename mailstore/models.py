"""Folders, messages and message bytes.

Invariants (kept by mailstore.actions, guarded here where a database can):
- UIDs are strictly ascending per folder and never reused: Folder.uidnext only grows.
- UIDVALIDITY changes only when a folder is (re)created.
- Every change to a message or folder bumps the folder's HIGHESTMODSEQ and the
  message's MODSEQ to the new value (RFC 7162).
- A Message's bytes are its `prefix` (per-recipient trace fields such as Return-Path and
  Delivered-To) followed by the shared Blob: a message to many recipients is stored once.
"""
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

# RFC 6154 special-use attributes of the folders every account starts with.
DEFAULT_FOLDERS = (
    ("INBOX", ""),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Archive", "\\Archive"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
)
HIERARCHY_DELIMITER = "/"


class Folder(models.Model):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=1000, help_text="Full name, '/' between levels; INBOX upper-case")
    special_use = models.CharField(max_length=16, blank=True)
    subscribed = models.BooleanField(default=True)
    uidvalidity = models.PositiveBigIntegerField()
    uidnext = models.PositiveBigIntegerField(default=1)
    highestmodseq = models.PositiveBigIntegerField(default=1)
    # Counters maintained with every change, so STATUS and folder lists never count rows.
    message_count = models.PositiveIntegerField(default=0)
    unseen_count = models.PositiveIntegerField(default=0)
    total_size = models.PositiveBigIntegerField(default=0)
    # Tombstones (ExpungedMessage) with a MODSEQ up to this were pruned: "what vanished
    # since MODSEQ n" for a smaller n can no longer be answered from the rows alone.
    expunged_pruned_modseq = models.PositiveBigIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["account_id", "name"]
        constraints = [
            # One folder per name per account.
            models.UniqueConstraint(fields=["account", "name"], name="folder_unique_name"),
            models.CheckConstraint(condition=Q(uidnext__gte=1), name="folder_uidnext_positive"),
        ]

    def __str__(self):
        return f"{self.account_id}:{self.name}"


class Blob(models.Model):
    """Message bytes in the `blobs` storage, and what parsing them once found."""

    name = models.CharField(max_length=100, unique=True, help_text="Name in the blobs storage")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)
    header_size = models.PositiveIntegerField(default=0)
    envelope = models.JSONField(null=True, blank=True)
    structure = models.JSONField(null=True, blank=True)
    preview = models.CharField(max_length=256, blank=True)
    search_text = models.TextField(blank=True)
    # The header decoded, one field a line (mime.searchable_header): IMAP SEARCH reads it
    # instead of the bytes. Indexed with search_text for substring search (migration 0004).
    header_text = models.TextField(blank=True, default="", db_default="")

    def __str__(self):
        return self.name


class BlobSummary(models.Model):
    """ENVELOPE and BODYSTRUCTURE of a blob as IMAP sends them to a client without UTF-8
    (RFC 9051 §7.5.2), rendered once when stored (imap.fetch.render_summary): a FETCH of
    them copies these instead of rendering Blob's JSON.

    A table of its own, keyed by the blob's id: its rows are a few hundred bytes, so a
    FETCH of 500 messages' summaries reads a few dozen pages, where the Blob rows, with
    their search text, spread over thousands. A blob stored before these existed has no
    row here; FETCH renders its JSON instead."""

    blob = models.OneToOneField(Blob, on_delete=models.CASCADE, primary_key=True, related_name="summary")
    envelope = models.BinaryField(editable=False)
    bodystructure = models.BinaryField(editable=False)


class Message(models.Model):
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="messages")
    uid = models.PositiveBigIntegerField()
    modseq = models.PositiveBigIntegerField()
    internaldate = models.DateTimeField()
    size = models.PositiveBigIntegerField(help_text="Octets of prefix + blob, as IMAP RFC822.SIZE reports")
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="messages")
    prefix = models.BinaryField(default=b"", blank=True)
    seen = models.BooleanField(default=False)
    answered = models.BooleanField(default=False)
    flagged = models.BooleanField(default=False)
    deleted = models.BooleanField(default=False)
    draft = models.BooleanField(default=False)
    keywords = models.TextField(default="", blank=True, help_text="Space-separated IMAP keywords")
    # Header fields copied from the parse, for sorting and searching without joins.
    sent_date = models.DateTimeField(null=True, blank=True)
    subject = models.TextField(blank=True)
    from_display = models.TextField(blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    to_display = models.TextField(blank=True)
    cc_display = models.TextField(blank=True)
    message_id = models.CharField(max_length=998, blank=True)
    # Threading (RFC 5256 THREAD=REFERENCES, the webmail's conversations).
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True, help_text="Message-IDs of References, space-separated")
    # The conversation the message belongs to (mailstore.actions.thread_key): equal for a
    # message and the replies to it, in any folder; copies and moves keep it.
    thread_key = models.BigIntegerField(default=0, db_default=0)
    has_attachments = models.BooleanField(default=False)

    class Meta:
        ordering = ["folder_id", "uid"]
        constraints = [
            # UIDs are unique per folder (RFC 9051 §2.3.1.1); never reused because uidnext only grows.
            models.UniqueConstraint(fields=["folder", "uid"], name="message_unique_uid"),
        ]
        indexes = [
            # CONDSTORE/QRESYNC: "what changed since MODSEQ n" in one folder.
            models.Index(fields=["folder", "modseq"], name="message_folder_modseq"),
            # Webmail lists sorted by date.
            models.Index(fields=["folder", "sent_date"], name="message_folder_date"),
            # Threading and duplicate detection.
            models.Index(fields=["message_id"], name="message_msgid"),
            # Webmail conversations: a folder's messages grouped by thread (covering
            # the latest date), and a thread's messages across the account's folders.
            models.Index(fields=["folder", "thread_key", "sent_date"], name="message_folder_thread"),
            # Webmail lists sorted by sender (ignoring case; ties by UID, as the list orders them).
            models.Index(F("folder"), Lower("from_display"), F("uid"), name="message_folder_sender"),
        ]

    def __str__(self):
        return f"{self.folder_id}/{self.uid}"

    @property
    def flags(self):
        """IMAP flags, system flags first."""
        system = [
            name
            for name, on in (
                ("\\Seen", self.seen),
                ("\\Answered", self.answered),
                ("\\Flagged", self.flagged),
                ("\\Deleted", self.deleted),
                ("\\Draft", self.draft),
            )
            if on
        ]
        return system + self.keywords.split()


class Conversation(models.Model):
    """A folder's messages of one thread (Message.thread_key) summed up, so a list grouped
    by conversation reads one row per conversation instead of grouping the folder's
    messages on every view. Kept by mailstore.actions in the transaction of every change
    to the folder's messages (added, removed, moved, flags), never written elsewhere."""

    # No index of its own: both indexes below start with it.
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="conversations", db_index=False)
    thread_key = models.BigIntegerField()
    # The newest Date: among the folder's messages of the thread (null if none has one),
    # and the newest row id (arrival: the tie-break, as the message list's).
    latest_date = models.DateTimeField(null=True, blank=True)
    latest_id = models.BigIntegerField()
    messages = models.PositiveIntegerField()
    unread = models.PositiveIntegerField(help_text="Messages without \\Seen")
    flagged = models.PositiveIntegerField()
    attachments = models.PositiveIntegerField(help_text="Messages with attachments")

    class Meta:
        constraints = [
            # One row per thread per folder; also the index the write path's upsert uses.
            models.UniqueConstraint(fields=["folder", "thread_key"], name="conversation_unique_thread"),
        ]
        indexes = [
            # The grouped list: a folder's conversations newest first, a page at a time.
            # (PostgreSQL also gets one in the list's NULLS LAST order: migration 0008.)
            models.Index(fields=["folder", "latest_date", "latest_id"], name="conversation_folder_latest"),
        ]

    def __str__(self):
        return f"{self.folder_id}/{self.thread_key}"


class ExpungedMessage(models.Model):
    """A UID removed from a folder and the MODSEQ of its removal: QRESYNC's VANISHED
    (RFC 7162 §3.2.10) answers "which UIDs went away since MODSEQ n" from these rows."""

    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="expunged")
    uid = models.PositiveBigIntegerField()
    modseq = models.PositiveBigIntegerField()
    expunged_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # VANISHED (EARLIER): removals in one folder after a MODSEQ.
            models.Index(fields=["folder", "modseq"], name="expunged_folder_modseq"),
            # The periodic prune finds old tombstones without reading every row.
            models.Index(fields=["expunged_at"], name="expunged_at"),
        ]

    def __str__(self):
        return f"{self.folder_id}/{self.uid}@{self.modseq}"


class Subscription(models.Model):
    """A subscribed name that has no folder: RFC 9051 §6.3.7 lets a client subscribe to a
    name that does not exist, and a deleted folder's subscription outlives it (LIST
    shows it \\NonExistent). An existing folder's subscription is Folder.subscribed;
    creating the folder turns the row into that flag."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=1000)

    class Meta:
        ordering = ["account_id", "name"]
        constraints = [
            # A name is subscribed once.
            models.UniqueConstraint(fields=["account", "name"], name="subscription_unique_name"),
        ]

    def __str__(self):
        return f"{self.account_id}:{self.name}"


class TrainingExample(models.Model):
    """A user's judgement of a message, for the spam filter to learn from: moving a
    message into Junk says "spam", moving it out of Junk says "ham" (not spam)."""

    SPAM, HAM = "spam", "ham"

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="training_examples")
    blob = models.ForeignKey(Blob, on_delete=models.CASCADE, related_name="training_examples")
    verdict = models.CharField(max_length=4, choices=[(SPAM, "spam"), (HAM, "ham")])
    created = models.DateTimeField(default=timezone.now)
    learned = models.BooleanField(default=False, help_text="Set once the filter has learned from it")

    class Meta:
        indexes = [
            # The learner takes what it has not learned yet, oldest first.
            models.Index(fields=["learned", "created"], name="training_unlearned"),
        ]

    def __str__(self):
        return f"{self.account_id}:{self.blob_id} {self.verdict}"
