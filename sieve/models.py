"""Sieve scripts: each account's own (one active), the operator's global ones, and the
record of vacation replies sent. Writes go through sieve.actions."""
from django.db import models
from django.db.models import Q


class SieveScript(models.Model):
    """One of an account's scripts (RFC 5804 §1.6: named, at most one active)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="sieve_scripts")
    name = models.CharField(max_length=255)
    text = models.TextField()
    active = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "name"]
        constraints = [
            # A name is one script of the account (PUTSCRIPT replaces, RENAMESCRIPT refuses).
            models.UniqueConstraint(fields=["account", "name"], name="sieve_script_name_unique"),
            # RFC 5804 §2.8: at most one active script per account, whatever races.
            models.UniqueConstraint(fields=["account"], condition=Q(active=True), name="sieve_one_active_script"),
        ]

    def __str__(self):
        return f"{self.name}{' (active)' if self.active else ''}"


class GlobalScript(models.Model):
    """A script the operator sets: run before or after every user's script, or only
    reached by `include :global "name"` (RFC 6609 §3.2)."""

    class Position(models.TextChoices):
        INCLUDE_ONLY = "", "only by include :global"
        BEFORE = "before", "before every user script"
        AFTER = "after", "after every user script"

    name = models.CharField(max_length=255, unique=True)
    text = models.TextField()
    position = models.CharField(max_length=8, choices=Position.choices, blank=True, default="")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "name"]
        constraints = [
            # One script runs before and one after: an operator combines several with include.
            models.UniqueConstraint(fields=["position"], condition=~Q(position=""), name="sieve_one_global_per_position"),
        ]

    def __str__(self):
        return self.name


class VacationReply(models.Model):
    """When an account last answered a sender with a vacation of a given handle
    (RFC 5230 §4.2: one reply per sender per :days)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    sender = models.CharField(max_length=320)  # lower case
    handle = models.CharField(max_length=64)
    sent_at = models.DateTimeField()

    class Meta:
        constraints = [
            # The row is the lock that makes "once per period" hold under concurrent deliveries.
            models.UniqueConstraint(fields=["account", "sender", "handle"], name="sieve_vacation_reply_unique"),
        ]
        indexes = [models.Index(fields=["sent_at"], name="sieve_vacation_sent_at")]  # pruning old rows

    def __str__(self):
        return f"{self.sender} at {self.sent_at:%Y-%m-%d %H:%M}"
