"""`make demo`: example.test with two accounts and a few messages, to click around in."""
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts import actions
from accounts.models import Domain
from mailstore.actions import Recipient, deliver

ACCOUNTS = {
    "alice@example.test": ("Alice Example", "alice-demo-2026"),
    "bob@example.test": ("Bob Example", "bob-demo-2026"),
}
MESSAGES = [
    ("bob@example.test", "alice@example.test", "Welcome to mailsuite", "Hi Alice,\n\nthis is your new mailbox.\n\nBob"),
    ("alice@example.test", "bob@example.test", "Lunch on Friday?", "Bob, are you free on Friday at noon?\n"),
    ("newsletter@lists.example.test", "alice@example.test", "Réunion — ünïcödé subject ✓", "Grüße aus Köln.\n"),
]


class Command(BaseCommand):
    help = "Add the example.test domain with two accounts and a few messages (for trying things out)."

    def handle(self, *args, **options):
        if Domain.objects.filter(name="example.test").exists():
            self.stdout.write("example.test already exists; nothing to do.")
            return
        with transaction.atomic():
            actions.create_domain("example.test")
            accounts = {
                address: actions.create_account(address, password=password, display_name=name)
                for address, (name, password) in ACCOUNTS.items()
            }
        for sender, recipient, subject, text in MESSAGES:
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = sender, recipient, subject
            message["Date"] = format_datetime(timezone.now())
            message["Message-ID"] = make_msgid(domain="example.test")
            message.set_content(text)
            raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
            deliver(raw, [Recipient(accounts[recipient], recipient)], return_path=sender)
        self.stdout.write("Added example.test with:")
        for address, (_, password) in ACCOUNTS.items():
            self.stdout.write(f"  {address}  password: {password}")
