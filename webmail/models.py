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


class Preferences(models.Model):
    """The webmail settings of one account (a row only once the user changed one)."""

    class RemoteContent(models.TextChoices):
        ASK = "ask", "ask"  # blocked until allowed once or for the sender
        ALWAYS = "always", "always"  # every message's remote images load

    account = models.OneToOneField("accounts.Account", on_delete=models.CASCADE, related_name="webmail_preferences")
    signature = models.TextField(blank=True, max_length=4000)
    remote_content = models.CharField(max_length=8, choices=RemoteContent.choices, default=RemoteContent.ASK)
    # The message list groups messages by conversation (webmail.mailbox.conversation_page).
    conversations = models.BooleanField(default=False)

    def __str__(self):
        return f"{self.account_id}: preferences"


class Contact(models.Model):
    """An entry of the account's address book: typed in, imported, or collected from the
    mail the user sent and read (webmail.actions.record_correspondents, harvest_contacts)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="contacts")
    address = models.CharField(max_length=320, help_text="As typed; unique per account case-insensitively by `key`")
    key = models.CharField(max_length=320, help_text="Lower-case address")
    name = models.CharField(max_length=200, blank=True)
    collected = models.BooleanField(default=False, help_text="Added from mail, not by hand")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_id", "name", "key"]
        constraints = [
            # One entry per address per account; also the index autocomplete's prefix search uses.
            models.UniqueConstraint(fields=["account", "key"], name="contact_unique"),
        ]

    def __str__(self):
        return f"{self.name} <{self.address}>" if self.name else self.address


class ContactHarvest(models.Model):
    """How far automatic collection of correspondents has read each folder of the account
    (webmail.actions.harvest_contacts): the folder's HIGHESTMODSEQ when it last looked.
    Reading a message or filing one in Sent bumps its MODSEQ past the mark."""

    account = models.OneToOneField("accounts.Account", on_delete=models.CASCADE, related_name="contact_harvest")
    marks = models.JSONField(default=dict, help_text='{"folder id": modseq}')

    def __str__(self):
        return f"{self.account_id}: harvest marks"
