"""The outbound queue's truth: a message (its bytes in a Blob) and one row per recipient.

Rows are written in the same transaction that accepts responsibility for the
message, before the SMTP 250 reply; delivery workers work from these rows, so a
broker that loses a task loses no mail.
"""
from django.db import models


class QueuedMessage(models.Model):
    blob = models.ForeignKey("mailstore.Blob", on_delete=models.PROTECT, related_name="queued")
    mail_from = models.CharField(max_length=320, blank=True, help_text="Envelope sender; empty for bounces")
    smtputf8 = models.BooleanField(default=False, help_text="The message needs SMTPUTF8 downstream")
    received_from = models.GenericIPAddressField(null=True, blank=True)
    queue_id = models.CharField(max_length=32, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.queue_id} from <{self.mail_from}>"


class QueuedRecipient(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        DEFERRED = "deferred"
        HELD = "held"
        DELIVERED = "delivered"
        BOUNCED = "bounced"

    message = models.ForeignKey(QueuedMessage, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=320)
    # Set when the recipient is a local mailbox whose delivery failed temporarily (e.g. quota).
    local_account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(auto_now_add=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The sweep asks: which recipients are due?
            models.Index(fields=["state", "next_attempt_at"], name="queue_due"),
        ]

    def __str__(self):
        return f"{self.address} ({self.state})"
