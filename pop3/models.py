"""What POP3 keeps in the database: the maildrop lock, and the POP3 size of stored bytes.

Both live in the database, not in a process, so every runpop3 process on every machine
sees the same ones (pop3.maildrop reads and writes them).
"""
from django.db import models


class MaildropLock(models.Model):
    """The exclusive-access lock of one account's maildrop (RFC 1939 §4, §8).

    A lease: held by one session until `expires`, renewed while the session lives, given
    up at its end. A session whose process died holds nothing once its lease expires, so
    a crash never locks a mailbox for longer than one lease. One row per account that
    ever used POP3, kept between sessions for `last_login` (RFC 2449 §6.5 LOGIN-DELAY).
    """

    account = models.OneToOneField(
        "accounts.Account", on_delete=models.CASCADE, primary_key=True, related_name="pop3_lock"
    )
    holder = models.CharField(max_length=100, blank=True, help_text="The session holding it: host, process, id")
    expires = models.DateTimeField(help_text="Free from this time on")
    last_login = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "POP3 maildrop lock"

    def __str__(self):
        return f"maildrop {self.account_id} held by {self.holder or 'nobody'} until {self.expires}"


class BlobOctets(models.Model):
    """How many octets a stored message body (a Blob) is on the POP3 wire, line ends as CRLF.

    LIST and STAT must give exact octets (RFC 1939 §5, §11), and stored bytes may end lines
    with bare LF. Counting means reading the bytes, so it is done once per Blob (its bytes
    never change) and kept here; see pop3.responses.octets for the rule.
    """

    blob = models.OneToOneField(
        "mailstore.Blob", on_delete=models.CASCADE, primary_key=True, related_name="pop3_octets"
    )
    octets = models.PositiveBigIntegerField()

    class Meta:
        verbose_name = "POP3 message size"

    def __str__(self):
        return f"blob {self.blob_id}: {self.octets} octets"
