"""What moving mail in remembers, so that a rerun does only what is left.

- ImportedMessage: the import ledger. A message from a file is known by the folder it
  went to, the SHA-256 of the bytes stored and which occurrence of those bytes in that
  folder it was (an mbox may hold the same message twice, and both are imported).
- MigratedFolder: per remote folder of an IMAP migration, its UIDVALIDITY and the remote
  UIDs already copied; a changed UIDVALIDITY means the remote folder is new and is
  copied again from the start. MigratedMessage maps each copied remote UID to the local
  one, so that a rerun can bring flag changes made on the remote since (HIGHESTMODSEQ,
  RFC 7162, remembers how far the last run saw).
"""
from datetime import timedelta

from django.db import models
from django.utils.translation import gettext_lazy as _


class ImportedMessage(models.Model):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    folder = models.CharField(max_length=1000)
    sha256 = models.CharField(max_length=64)
    occurrence = models.PositiveIntegerField(default=1)
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # The ledger's key: a rerun skips exactly the messages a previous run stored.
            models.UniqueConstraint(fields=["account", "folder", "sha256", "occurrence"], name="imported_message_key"),
        ]

    def __str__(self):
        return f"{self.account_id}:{self.folder}:{self.sha256[:12]}#{self.occurrence}"


class MigratedFolder(models.Model):
    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=400, help_text="user@host:port of the remote server")
    remote_name = models.CharField(max_length=1000)
    local_name = models.CharField(max_length=1000)
    uidvalidity = models.PositiveBigIntegerField()
    # Remote UIDs copied, as IMAP sequence-set text ("1:400,402"): compact for the common case.
    copied_uids = models.TextField(default="", blank=True)
    # The remote folder's HIGHESTMODSEQ when the last run looked (0: unknown or no CONDSTORE):
    # flag changes above it are brought over by the next run.
    highestmodseq = models.PositiveBigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One record per remote folder per migration source.
            models.UniqueConstraint(fields=["account", "source", "remote_name"], name="migrated_folder_key"),
        ]

    def __str__(self):
        return f"{self.account_id}:{self.source}:{self.remote_name}"


class MigratedMessage(models.Model):
    """A copied message: its UID on the remote folder and here (flag resync on a rerun)."""

    folder = models.ForeignKey(MigratedFolder, on_delete=models.CASCADE, related_name="messages")
    remote_uid = models.PositiveBigIntegerField()
    local_uid = models.PositiveBigIntegerField()

    class Meta:
        constraints = [
            # One local copy per remote message; also the index a resync looks remote UIDs up by.
            models.UniqueConstraint(fields=["folder", "remote_uid"], name="migrated_message_key"),
        ]


class ExternalAccount(models.Model):
    """A remote POP3 or IMAP mailbox whose new mail is fetched into a local account (MRA)."""

    class Protocol(models.TextChoices):
        POP3 = "pop3", "POP3"
        IMAP = "imap", "IMAP"

    class TLS(models.TextChoices):
        IMPLICIT = "implicit", _("TLS from the first byte (993/995)")
        STARTTLS = "starttls", "STARTTLS / STLS"
        NONE = "none", _("none (plaintext)")

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="external_accounts")
    protocol = models.CharField(max_length=4, choices=Protocol.choices)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    tls = models.CharField(max_length=8, choices=TLS.choices, default=TLS.IMPLICIT)
    verify_certificate = models.BooleanField(default=True)
    username = models.CharField(max_length=320)
    password = models.CharField(max_length=500, help_text="Encrypted (mailsuite.lib.secrets)")
    remote_folders = models.TextField(blank=True, help_text="IMAP: folders to fetch, one a line; empty = INBOX; * = all")
    local_folder = models.CharField(max_length=1000, default="INBOX", help_text="INBOX goes through Sieve")
    keep = models.BooleanField(default=True, help_text="Leave fetched mail on the server")
    enabled = models.BooleanField(default=True)
    last_attempt = models.DateTimeField(null=True, blank=True)
    last_success = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive failed fetches")
    next_attempt = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The periodic task picks what is due.
            models.Index(fields=["enabled", "next_attempt"], name="external_due"),
        ]

    def __str__(self):
        return f"{self.username}@{self.host} ({self.protocol}) for {self.account_id}"


class FetchedMessage(models.Model):
    """A remote message already fetched: POP3 UIDL, or IMAP `folder UIDVALIDITY UID`."""

    external = models.ForeignKey(ExternalAccount, on_delete=models.CASCADE, related_name="fetched")
    remote_id = models.CharField(max_length=1100)
    fetched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # A message is fetched once.
            models.UniqueConstraint(fields=["external", "remote_id"], name="fetched_message_key"),
        ]


STALL_AFTER = timedelta(minutes=15)


class TransferJob(models.Model):
    """A long import, export or IMAP migration, run by a Celery worker (or the CLI in
    the foreground) with its progress here. Cancelling sets `cancel_requested`; the
    runner looks at it between messages and stops with everything so far committed, so
    running the job again (resume) goes on where it stopped."""

    class Kind(models.TextChoices):
        IMPORT = "import", _("import")
        EXPORT = "export", _("export")
        MIGRATE = "migrate", _("IMAP migration")

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="transfer_jobs")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    source = models.CharField(max_length=1000, help_text="import: the file or directory; export: the destination; "
                              "migrate: user@host:port")
    label = models.CharField(max_length=300, blank=True, help_text="what the user calls it (an upload's file name)")
    folder = models.CharField(max_length=1000, blank=True, help_text="import: root folder; export: only this folder")
    options = models.JSONField(default=dict, blank=True)
    # The remote password of a migration run in the background, encrypted (mailsuite.lib.secrets);
    # kept while the job may be resumed, erased when it is done.
    secret = models.CharField(max_length=500, blank=True)
    # An uploaded file the job owns: deleted once it is imported.
    remove_source = models.BooleanField(default=False)
    cancel_requested = models.BooleanField(default=False)
    messages = models.PositiveIntegerField(default=0, help_text="imported, exported or copied in this run")
    already = models.PositiveIntegerField(default=0, help_text="skipped: an earlier run did them")
    bytes = models.PositiveBigIntegerField(default=0, help_text="of the messages done in this run")
    read_bytes = models.PositiveBigIntegerField(default=0, help_text="of the source read so far")
    total_bytes = models.PositiveBigIntegerField(null=True, blank=True, help_text="of the source, when known")
    skipped = models.PositiveIntegerField(default=0, help_text="messages left out, with the reasons in the report")
    error = models.TextField(blank=True)
    report = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # A user's jobs, newest first (webmail), and the admin's filter by state.
            models.Index(fields=["account", "-created"], name="transfer_job_account"),
            models.Index(fields=["state", "-created"], name="transfer_job_state"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.pk} ({self.state})"

    @property
    def active(self):
        return self.state in (self.State.QUEUED, self.State.RUNNING)

    @property
    def stalled(self):
        """Running, but silent for STALL_AFTER: its worker died (a running job writes its
        counts every second or so)."""
        from django.utils import timezone

        return self.state == self.State.RUNNING and self.updated < timezone.now() - STALL_AFTER

    @property
    def resumable(self):
        return self.state in (self.State.FAILED, self.State.CANCELLED) or self.stalled

    @property
    def percent(self):
        """How far through the source, 0-100, or None when its size is unknown."""
        if self.state == self.State.DONE:
            return 100
        if not self.total_bytes:
            return None
        return min(99, int(100 * self.read_bytes / self.total_bytes))
