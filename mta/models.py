"""The outbound queue's truth: a message (its bytes in a Blob) and one row per recipient.

Rows are written in the same transaction that accepts responsibility for the
message, before the SMTP 250 reply; delivery workers work from these rows, so a
broker that loses a task loses no mail.
"""
from django.db import models
from django.utils import timezone


class QueuedMessage(models.Model):
    class Return(models.TextChoices):  # RFC 3461 RET: what a DSN carries of the message
        HEADERS = "HDRS"
        FULL = "FULL"

    blob = models.ForeignKey("mailstore.Blob", on_delete=models.PROTECT, related_name="queued")
    mail_from = models.CharField(max_length=320, blank=True, help_text="Envelope sender; empty for bounces")
    smtputf8 = models.BooleanField(default=False, help_text="The message needs SMTPUTF8 downstream")
    received_from = models.GenericIPAddressField(null=True, blank=True)
    queue_id = models.CharField(max_length=32, db_index=True)
    created = models.DateTimeField(auto_now_add=True)
    # Delivery gives up (and bounces) after this moment (RFC 5321 §4.5.4.1: 4-5 days).
    expires_at = models.DateTimeField(null=True, blank=True)
    envid = models.CharField(max_length=100, blank=True, help_text="RFC 3461 ENVID")
    ret = models.CharField(max_length=4, choices=Return.choices, blank=True, help_text="RFC 3461 RET")
    # Sender rewritten with SRS for forwarded mail, so SPF passes at the destination.
    srs_sender = models.CharField(max_length=320, blank=True)

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
    # The routing key: the recipient's domain in ASCII ("" for local retries).
    domain = models.CharField(max_length=253, blank=True)
    # Set when the recipient is a local mailbox whose delivery failed temporarily (e.g. quota).
    local_account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    # RFC 3461: NOTIFY (comma-separated, empty = default: FAILURE and DELAY) and ORCPT.
    notify = models.CharField(max_length=40, blank=True)
    orcpt = models.CharField(max_length=500, blank=True)
    # The final or latest outcome, for DSNs and the admin.
    status = models.CharField(max_length=10, blank=True, help_text="Enhanced status code, e.g. 5.1.1")
    remote_mta = models.CharField(max_length=255, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delay_notified = models.BooleanField(default=False)
    bounce_notified = models.BooleanField(default=False)
    # A worker owns the recipient until lease_until; an expired lease may be taken over.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sweep asks: which recipients are due?
            models.Index(fields=["state", "next_attempt_at"], name="queue_due"),
            # Workers claim due recipients of one destination domain.
            models.Index(fields=["domain", "state", "next_attempt_at"], name="queue_due_by_domain"),
            # Greylisting asks: have our users ever had mail delivered to this sender?
            models.Index(fields=["address", "state"], name="queue_recipient_address"),
        ]

    def __str__(self):
        return f"{self.address} ({self.state})"


class DeliveryAttempt(models.Model):
    """One try at delivering to a recipient: the queue's attempt log."""

    recipient = models.ForeignKey(QueuedRecipient, on_delete=models.CASCADE, related_name="tries")
    started = models.DateTimeField()
    host = models.CharField(max_length=255, blank=True, help_text="The server tried, e.g. mx1.example.org[192.0.2.1]")
    outcome = models.CharField(max_length=10, help_text="delivered, deferred or bounced")
    reply = models.TextField(blank=True, help_text="The remote reply or the local error")

    class Meta:
        ordering = ["recipient_id", "started"]

    def __str__(self):
        return f"{self.recipient_id} {self.outcome} at {self.started:%Y-%m-%d %H:%M:%S}"


class DestinationSlot(models.Model):
    """A lease on one of the few connections a destination domain gets at a time
    (MAILSUITE_QUEUE_DESTINATION_CONCURRENCY), shared by every worker on every machine."""

    domain = models.CharField(max_length=253)
    slot = models.PositiveSmallIntegerField()
    owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One row per slot: workers race for it with a conditional UPDATE.
            models.UniqueConstraint(fields=["domain", "slot"], name="destination_slot_unique"),
        ]

    def __str__(self):
        return f"{self.domain}#{self.slot}"


class SmartHost(models.Model):
    """Where mail goes instead of MX lookups: for every domain (domain empty) or one domain.

    A relay domain (we accept its mail and pass it on to the next hop, e.g. the
    second-level server behind us, or its primary when we are backup MX) is a row
    with accept_relay set. Credentials are for AUTH on the next hop.
    """

    class TLS(models.TextChoices):
        OPPORTUNISTIC = "opportunistic", "STARTTLS when offered"
        REQUIRED = "starttls", "STARTTLS required"
        IMPLICIT = "implicit", "TLS from the first byte (port 465)"
        NONE = "none", "never"

    class Verify(models.TextChoices):
        NONE = "none", "accept every recipient"
        CALLOUT = "callout", "ask the next hop at RCPT time"
        LIST = "list", "only the listed recipients"

    domain = models.CharField(max_length=253, blank=True, unique=True, help_text="Empty: all other domains")
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=25)
    tls = models.CharField(max_length=16, choices=TLS.choices, default=TLS.OPPORTUNISTIC)
    verify_certificate = models.BooleanField(default=True)
    username = models.CharField(max_length=320, blank=True)
    password = models.CharField(max_length=500, blank=True)
    accept_relay = models.BooleanField(default=False, help_text="Accept mail for this domain from anyone and relay it")
    verify_recipients = models.CharField(max_length=8, choices=Verify.choices, default=Verify.NONE)
    recipients = models.TextField(blank=True, help_text="With 'only the listed recipients': one address per line")

    def __str__(self):
        return f"{self.domain or '*'} → {self.host}:{self.port}"


class DKIMKey(models.Model):
    """One DKIM signing key of a local domain (mta.dkim signs with it; mta.dns_records publishes it).

    Keys come in pairs made together, one per algorithm: RSA 2048 (rsa-sha256, which every
    verifier knows) and Ed25519 (ed25519-sha256, RFC 8463), so every signed message carries
    both signatures. Selectors name the pair and the year it was made: `ms2026a` (RSA) and
    `ms2026a-ed` (Ed25519), then `ms2026b`/`ms2026b-ed` at the next rotation that year, and
    so on (`z` is followed by `aa`). A selector is its key's DNS name
    (`SELECTOR._domainkey.DOMAIN`), so one selector names one key of a domain.

    The life of a key: published (generated, its record shown for DNS, not yet signing,
    so it can be in DNS before the first signature needs it) → active (signs) → retired
    (no longer signs, still in DNS while mail signed with it may be in flight). Changes go
    through mta.dkim. The private key is secret like a password hash: it is in no admin
    page, list or log.
    """

    class Algorithm(models.TextChoices):
        RSA_SHA256 = "rsa-sha256", "RSA 2048 (rsa-sha256)"
        ED25519_SHA256 = "ed25519-sha256", "Ed25519 (ed25519-sha256)"

    class State(models.TextChoices):
        PUBLISHED = "published", "published (not signing yet)"
        ACTIVE = "active", "active (signs)"
        RETIRED = "retired", "retired (no longer signs)"

    domain = models.ForeignKey("accounts.Domain", on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63, help_text="A DNS label: the key is at SELECTOR._domainkey.DOMAIN")
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices)
    private_key = models.TextField(help_text="PKCS #8 PEM; secret")
    public_key = models.TextField(help_text="The p= value of the DNS record (base64)")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PUBLISHED)
    created = models.DateTimeField(auto_now_add=True)
    activated = models.DateTimeField(null=True, blank=True, help_text="When it last started signing")
    retired = models.DateTimeField(null=True, blank=True, help_text="When it stopped signing")

    class Meta:
        ordering = ["-created", "selector"]
        verbose_name = "DKIM key"
        constraints = [
            # A selector is a DNS name: two keys under one name would make both unverifiable.
            # (This also makes (domain, selector, algorithm) unique.)
            models.UniqueConstraint(fields=["domain", "selector"], name="dkimkey_unique_selector"),
            # One signing key per domain and algorithm; it is also the index sign() looks keys up by.
            models.UniqueConstraint(
                fields=["domain", "algorithm"],
                condition=models.Q(state="active"),
                name="dkimkey_one_active_per_algorithm",
            ),
            # Only the algorithms and states mta.dkim knows how to sign with and publish.
            models.CheckConstraint(
                condition=models.Q(algorithm__in=["rsa-sha256", "ed25519-sha256"]), name="dkimkey_algorithm_known"
            ),
            models.CheckConstraint(
                condition=models.Q(state__in=["published", "active", "retired"]), name="dkimkey_state_known"
            ),
        ]

    def __str__(self):
        return f"{self.selector}._domainkey.{self.domain.name} ({self.algorithm}, {self.state})"


class InboundPolicy(models.Model):
    """Connection-level anti-spam choices of one local domain, for mail arriving on the MX port
    (antispam.greylist, antispam.attachments). A domain without a row has greylisting off
    and the server's attachment policy (MAILSUITE_ATTACHMENT_POLICY). Changed through
    mta.actions.set_inbound_policy()."""

    class Attachments(models.TextChoices):
        DEFAULT = "", "the server's default (MAILSUITE_ATTACHMENT_POLICY)"
        REJECT = "reject", "refuse the message (554 5.7.1)"
        QUARANTINE = "quarantine", "deliver it into Junk"
        ALLOW = "allow", "deliver it"

    domain = models.OneToOneField("accounts.Domain", on_delete=models.CASCADE, related_name="inbound_policy")
    greylisting = models.BooleanField(
        default=False, help_text="Ask unknown senders to retry later (451 4.7.1) before their first message is taken",
    )
    attachments = models.CharField(
        max_length=10, choices=Attachments.choices, blank=True, default="",
        help_text="What happens to a message carrying an executable, a script or an archive holding one",
    )

    class Meta:
        verbose_name_plural = "inbound policies"
        constraints = [
            # Only the outcomes antispam.attachments knows how to carry out.
            models.CheckConstraint(
                condition=models.Q(attachments__in=["", "reject", "quarantine", "allow"]),
                name="inboundpolicy_attachments_known",
            ),
        ]

    def __str__(self):
        return f"inbound policy of {self.domain}"


class GreylistTriplet(models.Model):
    """One (client network, envelope sender, recipient) seen by greylisting (antispam.greylist).

    A new triplet is deferred; a retry after the delay window and before expires_at
    passes it (passed_at set, expires_at pushed out). Rows past expires_at are dead and
    are deleted on the fly, so the table holds only recent traffic.
    """

    network = models.CharField(max_length=43, help_text="The client's /24 (IPv4) or /64 (IPv6)")
    sender = models.CharField(max_length=320, blank=True, help_text="Envelope sender, lower case; empty for bounces")
    recipient = models.CharField(max_length=320)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)
    passed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Every RCPT looks its triplet up by these three; two sessions racing insert one row.
            models.UniqueConstraint(fields=["network", "sender", "recipient"], name="greylist_triplet_unique"),
        ]
        indexes = [
            # The on-the-fly cleanup deletes the oldest dead rows.
            models.Index(fields=["expires_at"], name="greylist_triplet_expiry"),
        ]

    def __str__(self):
        return f"{self.network} <{self.sender}> → <{self.recipient}>"


class GreylistAllowedNetwork(models.Model):
    """A client network that skips greylisting: auto-allowed after one of its triplets
    passed (until expires_at), or listed by the operator (no expiry)."""

    network = models.CharField(max_length=43, unique=True, help_text="e.g. 192.0.2.0/24 or 2001:db8:1:2::/64")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: allowed until removed")
    created = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            # The on-the-fly cleanup deletes the oldest expired rows.
            models.Index(fields=["expires_at"], name="greylist_allowed_expiry"),
        ]

    def __str__(self):
        return self.network


class QueueSweep(models.Model):
    """When the periodic sweep last ran: one row, written by every sweep on every node.

    /readyz, the dashboard and /metrics read it to tell a queue whose deferred mail is
    retried from one whose beat has quietly died (the worker alone delivers new mail but
    never comes back to deferred mail)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_run = models.DateTimeField()

    def __str__(self):
        return f"queue sweep at {self.last_run:%Y-%m-%d %H:%M:%S}"
