"""What the webmail remembers for a user beyond the mail store. Writes: webmail.actions."""
from django.db import models


class TrustedSender(models.Model):
    """A sender whose remote images this account always loads ("always allow")."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="trusted_senders")
    address = models.CharField(max_length=320, help_text="Lower-case address, as Message.from_address")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["account_id", "address"]
        constraints = [
            # One row per sender per account; also the index the reading view's lookup uses.
            models.UniqueConstraint(fields=["account", "address"], name="trustedsender_unique"),
        ]

    def __str__(self):
        return f"{self.account_id}: {self.address}"
