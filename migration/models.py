"""What moving mail in remembers, so that a rerun does only what is left.

- ImportedMessage: the import ledger. A message from a file is known by the folder it
  went to, the SHA-256 of the bytes stored and which occurrence of those bytes in that
  folder it was (an mbox may hold the same message twice, and both are imported).
- MigratedFolder: per remote folder of an IMAP migration, its UIDVALIDITY and the remote
  UIDs already copied; a changed UIDVALIDITY means the remote folder is new and is
  copied again from the start.
"""
from django.db import models


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
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One record per remote folder per migration source.
            models.UniqueConstraint(fields=["account", "source", "remote_name"], name="migrated_folder_key"),
        ]

    def __str__(self):
        return f"{self.account_id}:{self.source}:{self.remote_name}"
