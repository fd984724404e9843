"""Domains, accounts, aliases and redirects: who receives mail here.

Names are stored normalised (mailsuite.lib.addresses): domains in ASCII lower case,
local parts lower-cased. Writes go through accounts.actions.
"""
from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from mailsuite.lib.addresses import display_domain


# Delegated administration: who may see what -----------------------------------------
#
# A superuser sees every domain; any other user sees the domains a DomainAdmin row
# grants them (and nothing when there is none). `user` None is the system itself (the
# shell without --as, internal callers): it sees everything. The admin, the API and the
# CLI all narrow their querysets with these methods, so the rule lives here once.


def _is_system_or_superuser(user):
    return user is None or (user.is_active and user.is_superuser)


def administered_domain_ids(user):
    """A subquery of the pks of the domains `user` administers (not for superusers)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return DomainAdmin.objects.none().values("domain_id")
    return DomainAdmin.objects.filter(user_id=user.pk).values("domain_id")


class DomainQuerySet(models.QuerySet):
    def visible_to(self, user):
        if _is_system_or_superuser(user):
            return self
        return self.filter(pk__in=administered_domain_ids(user))


class InDomainQuerySet(models.QuerySet):
    """For rows that belong to one domain through `domain_field`."""

    domain_field = "domain"

    def visible_to(self, user):
        if _is_system_or_superuser(user):
            return self
        return self.filter(**{f"{self.domain_field}_id__in": administered_domain_ids(user)})


class DomainAliasQuerySet(InDomainQuerySet):
    domain_field = "target"


class Domain(models.Model):
    name = models.CharField(max_length=253, unique=True, help_text="ASCII (IDNA) form, lower case")
    active = models.BooleanField(default=True)
    default_quota = models.PositiveBigIntegerField(
        default=0, help_text="Quota in bytes for new accounts; 0 uses the server default"
    )
    # Sending limits for the domain's accounts (accounts.limits): null inherits the server's, 0 is no limit.
    messages_per_hour = models.PositiveIntegerField(null=True, blank=True)
    recipients_per_day = models.PositiveIntegerField(null=True, blank=True)
    # Limits a superadmin sets for the domain's admins (accounts.actions enforces them for
    # everyone): null is no limit.
    max_accounts = models.PositiveIntegerField(null=True, blank=True)
    max_aliases = models.PositiveIntegerField(null=True, blank=True)
    max_quota_total = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes: the sum of the quotas of all its accounts"
    )
    created = models.DateTimeField(auto_now_add=True)

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return display_domain(self.name)


class DomainAlias(models.Model):
    """Every address at `name` is the same address at `target`."""

    name = models.CharField(max_length=253, unique=True)
    target = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="aliases")
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = DomainAliasQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "domain aliases"

    def __str__(self):
        return f"{display_domain(self.name)} → {self.target}"


class AddressModel(models.Model):
    """Common shape of everything that owns one address in a local domain."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE)
    localpart = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    objects = InDomainQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def address(self):
        return f"{self.localpart}@{self.domain.name}"

    def __str__(self):
        return f"{self.localpart or '*'}@{self.domain}"


class Account(AddressModel):
    """A mailbox owner: can log in, has folders and a quota."""

    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="accounts")
    password = models.CharField(max_length=255, blank=True, help_text="Django password hash")
    # RFC 5803 SCRAM-SHA-256 credentials (mailsuite.lib.sasl), set with the password: a SCRAM
    # login cannot be checked against the hash. Secret like the hash; never shown.
    scram_sha256 = models.TextField(blank=True)
    display_name = models.CharField(max_length=255, blank=True)
    quota = models.PositiveBigIntegerField(default=0, help_text="Bytes; 0 means unlimited")
    # Maintained by mailstore.actions in the same transaction as each change, never recomputed per request.
    quota_used = models.PositiveBigIntegerField(default=0)
    # Last UIDVALIDITY handed to a folder of this account: a recreated folder gets a larger one.
    uidvalidity_counter = models.PositiveBigIntegerField(default=0)
    last_login = models.DateTimeField(null=True, blank=True)
    # Sending limits (accounts.limits): null inherits the domain's, 0 is no limit.
    messages_per_hour = models.PositiveIntegerField(null=True, blank=True)
    recipients_per_day = models.PositiveIntegerField(null=True, blank=True)
    # POP3 APOP (RFC 1939 §7) needs a secret the server can read back, so it is a separate
    # secret, never the password, encrypted with mailsuite.lib.secrets. Empty: APOP is off.
    apop_secret = models.TextField(blank=True)

    class Meta:
        ordering = ["domain__name", "localpart"]
        constraints = [
            # One mailbox per address.
            models.UniqueConstraint(fields=["domain", "localpart"], name="account_unique_address"),
            # Usage may not be negative: a bug in accounting must fail loudly.
            models.CheckConstraint(condition=Q(quota_used__gte=0), name="account_quota_used_nonneg"),
        ]
        indexes = [
            # Admin and API search accounts by local part across domains.
            models.Index(fields=["localpart"], name="account_localpart"),
            # The admin searches accounts by the start of the name, in any case.
            models.Index(Lower("display_name"), name="account_display_name_lower"),
        ]

    def check_password(self, raw_password):
        return bool(self.password) and check_password(raw_password, self.password)

    def over_quota_with(self, extra_bytes):
        return self.quota > 0 and self.quota_used + extra_bytes > self.quota

    @property
    def quota_percent(self):
        if not self.quota:
            return 0
        return min(100, round(100 * self.quota_used / self.quota))


class Alias(AddressModel):
    """An address whose mail goes to one or more other addresses (local or external).

    An empty local part is the domain's catch-all: it receives mail for every
    address of the domain that nothing else claims.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="alias_set")

    class Meta:
        ordering = ["domain__name", "localpart"]
        verbose_name_plural = "aliases"
        constraints = [
            models.UniqueConstraint(fields=["domain", "localpart"], name="alias_unique_address"),
        ]
        indexes = [
            # Admin and API search aliases by local part across domains.
            models.Index(fields=["localpart"], name="alias_localpart"),
        ]

    @property
    def is_catchall(self):
        return self.localpart == ""


class AliasTarget(models.Model):
    alias = models.ForeignKey(Alias, on_delete=models.CASCADE, related_name="targets")
    address = models.CharField(max_length=320, help_text="Normalised address")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["alias", "address"], name="aliastarget_unique"),
        ]
        indexes = [
            # The admin finds the aliases that send to an address (by its start).
            models.Index(fields=["address"], name="aliastarget_address"),
        ]

    def __str__(self):
        return self.address


class Redirect(AddressModel):
    """An address with no mailbox whose mail goes to an address in another domain."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="redirects")
    target = models.CharField(max_length=320)

    class Meta:
        ordering = ["domain__name", "localpart"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "localpart"], name="redirect_unique_address"),
        ]
        indexes = [
            # Admin and API search redirects by local part across domains, and by target.
            models.Index(fields=["localpart"], name="redirect_localpart"),
            models.Index(fields=["target"], name="redirect_target"),
        ]


class DomainAdmin(models.Model):
    """`user` administers `domain`: sees and manages its accounts, aliases and redirects
    within the limits set on the domain (Domain.max_*). Granted by a superadmin."""

    # Both indexed by the constraint and index below.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="administered_domains", db_index=False
    )
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="admins", db_index=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain__name", "user__username"]
        verbose_name = "domain administrator"
        constraints = [
            # One membership per user and domain; its index answers visible_to() for a user.
            models.UniqueConstraint(fields=["user", "domain"], name="domainadmin_unique"),
        ]
        indexes = [
            # A domain's page lists its admins.
            models.Index(fields=["domain"], name="domainadmin_domain"),
        ]

    def __str__(self):
        return f"{self.user} administers {self.domain}"


class AuditEntryQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Superadmins see every entry; a domain admin the entries about their domains."""
        if _is_system_or_superuser(user):
            return self
        return self.filter(domain_id__in=administered_domain_ids(user))


class AuditEntry(models.Model):
    """One administrative change, written by the actions in the same transaction.

    `before`/`after` are the object's fields as JSON (secrets left out), null when the
    object did not exist before or does not after. The actor's name is kept as text so an
    entry survives the user's deletion; "system" is the shell or the server itself.
    """

    time = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    actor_name = models.CharField(max_length=150)
    via = models.CharField(max_length=16, blank=True, help_text="admin, api, cli, webmail, or empty")
    action = models.CharField(max_length=64, help_text="e.g. account.create")
    object_type = models.CharField(max_length=32)
    object_repr = models.CharField(max_length=320)
    # The domain the change is about (null for server-wide ones), for filtering and scoping.
    domain = models.ForeignKey(Domain, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False)
    domain_name = models.CharField(max_length=253, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        indexes = [
            # The newest-first list.
            models.Index(fields=["-time"], name="auditentry_time"),
            # A domain admin's list: their domains' entries, newest first.
            models.Index(fields=["domain", "-time"], name="auditentry_domain_time"),
            # Filtering by who did it.
            models.Index(fields=["actor", "-time"], name="auditentry_actor_time"),
            # Filtering by kind of change.
            models.Index(fields=["action", "-time"], name="auditentry_action_time"),
        ]

    def __str__(self):
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_repr}"


class SendAsGrant(models.Model):
    """An address an admin lets one account send as (accounts.identities), besides its own
    address and its aliases: say the user's external address, or a shared role address.

    Only this exact address: no subaddress detail, no other domain of a domain alias.
    """

    # Indexed by sendasgrant_unique, which leads with it.
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="send_as_grants", db_index=False)
    address = models.CharField(max_length=320, help_text="Normalised address, in any domain")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["address"]
        verbose_name = "send-as grant"
        constraints = [
            # One grant per account and address, so granting twice is a refusal, not a second
            # row; its index is the one probe may_send_as makes per MAIL FROM and From: address.
            models.UniqueConstraint(fields=["account", "address"], name="sendasgrant_unique"),
        ]

    def __str__(self):
        return f"{self.account_id} may send as {self.address}"


# Abuse limits: login throttling, the login audit, sending limits ---------------------


class LoginThrottle(models.Model):
    """Recent failed logins of one client IP or one address, and its block if any.

    One row per (kind, key), updated in place (accounts.throttle), so the table holds
    one row per recently failing IP or address, not one per failure. A row whose
    window has ended carries no information and may be deleted at any time.
    """

    IP = "ip"
    ACCOUNT = "account"
    KINDS = [(IP, "IP address"), (ACCOUNT, "account")]

    kind = models.CharField(max_length=8, choices=KINDS)
    # An IP address (IPv6 as its /64 network), or the address as typed, normalised.
    key = models.CharField(max_length=320)
    window_start = models.DateTimeField(help_text="Failures are counted from here")
    failures = models.PositiveIntegerField(default=0, help_text="Failures in the current window")
    blocks = models.PositiveIntegerField(default=0, help_text="Blocks in a row; each lasts twice as long")
    blocked_until = models.DateTimeField(null=True, blank=True)
    last_failure = models.DateTimeField()

    class Meta:
        verbose_name = "login throttle"
        constraints = [
            # One counter per IP or address: every process updates the same row.
            models.UniqueConstraint(fields=["kind", "key"], name="loginthrottle_unique_key"),
        ]
        indexes = [
            # The admin lists the keys blocked now.
            models.Index(fields=["blocked_until"], name="loginthrottle_blocked"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.key}"


class LoginEventQuerySet(InDomainQuerySet):
    # Attempts on unknown addresses have no account: only superadmins see them.
    domain_field = "account__domain"


class LoginEvent(models.Model):
    """One login attempt by any protocol: the login audit (written by accounts.auth)."""

    OK = "ok"
    REASONS = [
        (OK, "ok"),
        ("password", "wrong password"),
        ("unknown", "unknown address"),
        ("disabled", "account or domain disabled, or no password"),
        ("throttled", "refused: too many failures"),
    ]
    MAX_ADDRESS = 320

    # Indexed by loginevent_account_time, which leads with it.
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="login_events", db_index=False
    )
    address = models.CharField(max_length=MAX_ADDRESS, help_text="As typed (truncated)")
    service = models.CharField(max_length=16)
    remote_ip = models.GenericIPAddressField(null=True, blank=True)
    success = models.BooleanField()
    reason = models.CharField(max_length=16, choices=REASONS)
    time = models.DateTimeField()

    objects = LoginEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time"]
        indexes = [
            # An account's recent logins (its admin page).
            models.Index(fields=["account", "-time"], name="loginevent_account_time"),
            # The admin's newest-first list, and pruning by age.
            models.Index(fields=["-time"], name="loginevent_time"),
            # Admin search by IP and by address (also addresses with no account).
            models.Index(fields=["remote_ip"], name="loginevent_ip"),
            models.Index(fields=["address"], name="loginevent_address"),
        ]

    def __str__(self):
        return f"{self.address} {self.service} {self.remote_ip or '-'} {self.reason}"


class SendUsage(models.Model):
    """What one account sent recently, in time slices (accounts.limits).

    check_and_record_send locks this row, so the sends of one account are counted one
    at a time on every database; each write drops the slices no window needs any more,
    so the row stays small.
    """

    account = models.OneToOneField(Account, on_delete=models.CASCADE, primary_key=True, related_name="send_usage")
    # {slice start in Unix seconds, as text: count}: messages per 5 minutes, recipients per hour.
    messages = models.JSONField(default=dict)
    recipients = models.JSONField(default=dict)
    last_sent = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "send usage"

    def __str__(self):
        return f"sending by {self.account_id}"


class SendLimitAlertQuerySet(InDomainQuerySet):
    domain_field = "account__domain"


class SendLimitAlert(models.Model):
    """An account hit a sending limit: one alert per account, limit and window, for the operator."""

    MESSAGES_PER_HOUR = "messages_per_hour"
    RECIPIENTS_PER_DAY = "recipients_per_day"
    LIMITS = [(MESSAGES_PER_HOUR, "messages per hour"), (RECIPIENTS_PER_DAY, "recipients per day")]

    # Indexed by sendlimitalert_open, which leads with it.
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="send_limit_alerts", db_index=False)
    limit_name = models.CharField(max_length=24, choices=LIMITS)
    limit = models.PositiveIntegerField()
    created = models.DateTimeField(help_text="First refusal")
    last_refused = models.DateTimeField()
    refused = models.PositiveIntegerField(default=1, help_text="Messages refused while this alert was open")
    acknowledged = models.BooleanField(default=False)

    objects = SendLimitAlertQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        indexes = [
            # Finding the open alert for an account and limit when another message is refused.
            models.Index(fields=["account", "limit_name", "-created"], name="sendlimitalert_open"),
            # The admin's newest-first list.
            models.Index(fields=["-created"], name="sendlimitalert_created"),
        ]

    def __str__(self):
        return f"{self.account_id}: {self.limit} {self.get_limit_name_display()}"
