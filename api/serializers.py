"""What the API shows and accepts. Serializers only shape data: every write is an actions call
in api.views, so validation here is types and sizes; the rules are in the actions."""
from rest_framework import serializers

from accounts.models import Account, Alias, AuditEntry, Domain, DomainAlias, LoginEvent, Redirect
from antispam.models import ListEntry, SpamSettings
from mailsuite.lib.addresses import display_domain
from migration.models import ExternalAccount
from mta.models import QueuedMessage, QueuedRecipient, SmartHost
from sieve.models import SieveScript

MAX_INT = 2**31 - 1
MAX_BIG = 2**63 - 1


class Computed:
    """A field whose value is `compute(instance)` when shown and a plain input when written."""

    def __init__(self, *args, compute, **kwargs):
        self.compute = compute
        super().__init__(*args, **kwargs)

    def get_attribute(self, instance):
        return self.compute(instance)


class ComputedList(Computed, serializers.ListField):
    pass


class ComputedChoice(Computed, serializers.ChoiceField):
    pass


class ComputedChar(Computed, serializers.CharField):
    pass


def limit_field(**kwargs):
    return serializers.IntegerField(min_value=0, max_value=MAX_INT, allow_null=True, required=False, **kwargs)


class DomainSerializer(serializers.ModelSerializer):
    display_name = serializers.SerializerMethodField()
    account_count = serializers.IntegerField(read_only=True)
    messages_per_hour = limit_field(help_text="Null: the server's limit; 0: no limit")
    recipients_per_day = limit_field(help_text="Null: the server's limit; 0: no limit")
    max_accounts = limit_field(help_text="Null: no limit (superadmin only)")
    max_aliases = limit_field(help_text="Aliases and redirects together; null: no limit (superadmin only)")
    max_quota_total = serializers.IntegerField(
        min_value=0, max_value=MAX_BIG, allow_null=True, required=False,
        help_text="Bytes, the sum of all account quotas; null: no limit (superadmin only)",
    )
    default_quota = serializers.IntegerField(min_value=0, max_value=MAX_BIG, required=False)

    class Meta:
        model = Domain
        fields = ("id", "name", "display_name", "active", "default_quota", "messages_per_hour", "recipients_per_day",
                  "max_accounts", "max_aliases", "max_quota_total", "account_count", "created")
        read_only_fields = ("id", "created")
        extra_kwargs = {"name": {"validators": [], "max_length": 253}}

    def get_display_name(self, obj) -> str:
        return display_domain(obj.name)


class DomainAliasSerializer(serializers.ModelSerializer):
    target = serializers.CharField(source="target.name", max_length=253)

    class Meta:
        model = DomainAlias
        fields = ("id", "name", "target", "active", "created")
        read_only_fields = ("id", "active", "created")
        extra_kwargs = {"name": {"validators": [], "max_length": 253}}


class AccountSerializer(serializers.ModelSerializer):
    address = serializers.CharField(max_length=320, help_text="local@domain; fixed once created")
    password = serializers.CharField(
        write_only=True, required=False, max_length=1024, trim_whitespace=False,
        help_text="Only when creating; change it with POST …/password/",
    )
    quota = serializers.IntegerField(
        min_value=0, max_value=MAX_BIG, required=False, allow_null=True,
        help_text="Bytes; 0 is unlimited; null when creating uses the domain's default",
    )
    quota_used = serializers.IntegerField(read_only=True)
    messages_per_hour = limit_field(help_text="Null: the domain's limit; 0: no limit")
    recipients_per_day = limit_field(help_text="Null: the domain's limit; 0: no limit")
    send_as = ComputedList(
        child=serializers.CharField(max_length=320), required=False, max_length=1000,
        help_text="Addresses the account may also send as",
        compute=lambda account: [grant.address for grant in account.send_as_grants.all()],
    )
    domain = serializers.CharField(source="domain.name", read_only=True)

    class Meta:
        model = Account
        fields = ("id", "address", "domain", "display_name", "password", "quota", "quota_used", "active",
                  "messages_per_hour", "recipients_per_day", "send_as", "last_login", "created")
        read_only_fields = ("id", "domain", "quota_used", "last_login", "created")
        extra_kwargs = {"display_name": {"max_length": 255}}


class PasswordSerializer(serializers.Serializer):
    password = serializers.CharField(max_length=1024, trim_whitespace=False)


class UsageSerializer(serializers.Serializer):
    quota = serializers.IntegerField()
    quota_used = serializers.IntegerField()
    quota_percent = serializers.IntegerField()
    messages_last_hour = serializers.IntegerField()
    messages_per_hour = serializers.IntegerField(help_text="The limit in force; 0: none")
    recipients_last_day = serializers.IntegerField()
    recipients_per_day = serializers.IntegerField(help_text="The limit in force; 0: none")


class AliasSerializer(serializers.ModelSerializer):
    address = serializers.CharField(max_length=320, help_text="local@domain, or @domain for the catch-all")
    targets = ComputedList(
        child=serializers.CharField(max_length=320), min_length=1, max_length=1000,
        compute=lambda alias: [target.address for target in alias.targets.all()],
    )
    domain = serializers.CharField(source="domain.name", read_only=True)

    class Meta:
        model = Alias
        fields = ("id", "address", "domain", "targets", "active", "created")
        read_only_fields = ("id", "domain", "active", "created")


class AliasTargetsSerializer(serializers.Serializer):
    targets = serializers.ListField(child=serializers.CharField(max_length=320), min_length=1, max_length=1000)


class RedirectSerializer(serializers.ModelSerializer):
    address = serializers.CharField(max_length=320)
    domain = serializers.CharField(source="domain.name", read_only=True)

    class Meta:
        model = Redirect
        fields = ("id", "address", "domain", "target", "active", "created")
        read_only_fields = ("id", "domain", "active", "created")
        extra_kwargs = {"target": {"max_length": 320}}


class RouteSerializer(serializers.ModelSerializer):
    KINDS = ("smarthost", "transport", "relay")

    kind = ComputedChoice(
        choices=KINDS, help_text="smarthost: all other domains; transport; relay domain",
        compute=lambda route: _route_kind(route),
    )
    domain = serializers.CharField(max_length=253, required=False, allow_blank=True)
    password = serializers.CharField(
        write_only=True, required=False, allow_null=True, max_length=256,
        help_text="AUTH password; never shown; null keeps the stored one",
    )
    port = serializers.IntegerField(min_value=1, max_value=65535, default=25)
    tls = serializers.ChoiceField(choices=SmartHost.TLS.values, required=False, allow_null=True)
    recipients = ComputedList(
        child=serializers.CharField(max_length=320), required=False, max_length=10000,
        help_text="With verify_recipients 'list': the addresses accepted",
        compute=lambda route: route.recipients.splitlines() if route.recipients else [],
    )
    has_password = serializers.SerializerMethodField()

    class Meta:
        model = SmartHost
        fields = ("id", "kind", "domain", "host", "port", "tls", "verify_certificate", "username", "password",
                  "has_password", "verify_recipients", "recipients")
        read_only_fields = ("id",)
        extra_kwargs = {"host": {"max_length": 255}, "username": {"max_length": 320, "required": False}}

    def get_has_password(self, obj) -> bool:
        return bool(obj.password)


def _route_kind(route):
    from mta import actions as mta_actions

    return mta_actions.route_kind(route)


class SieveScriptSerializer(serializers.ModelSerializer):
    class Meta:
        model = SieveScript
        fields = ("name", "text", "active", "created", "updated")
        read_only_fields = fields


class SieveScriptListSerializer(serializers.ModelSerializer):
    class Meta:
        model = SieveScript
        fields = ("name", "active", "updated")
        read_only_fields = fields


class SievePutSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=256 * 1024, trim_whitespace=False, allow_blank=True)
    active = serializers.BooleanField(required=False, default=False, help_text="Also make it the active script")


class QueuedRecipientSerializer(serializers.ModelSerializer):
    class Meta:
        model = QueuedRecipient
        fields = ("id", "address", "state", "attempts", "next_attempt_at", "last_error", "status", "remote_mta",
                  "delivered_at")
        read_only_fields = fields


class QueuedMessageSerializer(serializers.ModelSerializer):
    recipients = QueuedRecipientSerializer(many=True, read_only=True)
    size = serializers.IntegerField(source="blob.size", read_only=True)

    class Meta:
        model = QueuedMessage
        fields = ("id", "queue_id", "mail_from", "received_from", "created", "expires_at", "size", "recipients")
        read_only_fields = fields


class QueueChangeSerializer(serializers.Serializer):
    changed = serializers.IntegerField(help_text="Recipients (or messages, for delete) changed")


class LoginEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = LoginEvent
        fields = ("id", "time", "address", "account", "service", "remote_ip", "success", "reason")
        read_only_fields = fields


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ("id", "time", "actor_name", "via", "action", "object_type", "object_repr", "domain_name",
                  "before", "after")
        read_only_fields = fields


class DomainStatsSerializer(serializers.Serializer):
    name = serializers.CharField()
    accounts = serializers.IntegerField()
    aliases = serializers.IntegerField()
    redirects = serializers.IntegerField()
    quota_allocated = serializers.IntegerField(help_text="Bytes: the sum of the accounts' quotas (0 = unlimited)")
    quota_used = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    domains = DomainStatsSerializer(many=True)
    totals = DomainStatsSerializer()
    queue = serializers.DictField(child=serializers.IntegerField(), required=False,
                                  help_text="Recipients by state (superadmins only)")
    computed = serializers.DateTimeField(help_text="When these numbers were counted")


class ImportRowSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    address = serializers.CharField()
    result = serializers.ChoiceField(choices=["created", "updated", "unchanged", "error"])
    message = serializers.CharField(allow_blank=True)


class ImportReportSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["accounts", "aliases"])
    applied = serializers.BooleanField(help_text="False for a dry run, or when a row failed (nothing written)")
    counts = serializers.DictField(child=serializers.IntegerField())
    rows = ImportRowSerializer(many=True)


# Spam thresholds and allow/block lists ------------------------------------------------


def _scope_fields():
    """The domain (ASCII name) or the account (address) a spam setting belongs to: one of the two."""
    return {
        "domain": ComputedChar(
            max_length=253, required=False, allow_null=True, help_text="The domain's ASCII name (or give account)",
            compute=lambda row: row.domain.name if row.domain_id else None,
        ),
        "account": ComputedChar(
            max_length=320, required=False, allow_null=True, help_text="The account's address (or give domain)",
            compute=lambda row: row.account.address if row.account_id else None,
        ),
    }


class SpamListEntrySerializer(serializers.ModelSerializer):
    domain, account = _scope_fields().values()
    kind = serializers.ChoiceField(choices=[ListEntry.ALLOW, ListEntry.BLOCK])
    pattern = serializers.CharField(max_length=320, help_text="A sender's address, or a domain (covers its subdomains)")

    class Meta:
        model = ListEntry
        fields = ("id", "kind", "pattern", "domain", "account", "created")
        read_only_fields = ("id", "created")
        validators = []  # the action checks (and words) the rules


def threshold_field(help_text):
    return serializers.FloatField(min_value=-100, max_value=1000, allow_null=True, required=False,
                                  help_text=help_text + "; null inherits (account, then domain, then server)")


class SpamThresholdsSerializer(serializers.ModelSerializer):
    tag_threshold = threshold_field("Score from which mail is marked as spam")
    junk_threshold = threshold_field("Score from which mail is filed into Junk")
    reject_threshold = threshold_field("Score from which mail is refused at SMTP time")
    never_reject = serializers.BooleanField(required=False, default=False, help_text="File into Junk instead of refusing")

    class Meta:
        model = SpamSettings
        fields = ("tag_threshold", "junk_threshold", "reject_threshold", "never_reject")
        validators = []


class SpamSettingsSerializer(SpamThresholdsSerializer):
    domain, account = _scope_fields().values()

    class Meta:
        model = SpamSettings
        fields = ("id", "domain", "account", "tag_threshold", "junk_threshold", "reject_threshold", "never_reject")
        read_only_fields = ("id",)
        validators = []


# DNS doctor and dashboard ---------------------------------------------------------------


class DnsRecordSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Absolute, ASCII, e.g. example.org.")
    type = serializers.CharField(help_text="MX, TXT, SRV, CNAME")
    value = serializers.CharField(help_text="RDATA in zone-file syntax")
    text = serializers.CharField(help_text="A TXT record's text as one string (for web panels); else the value")
    comment = serializers.CharField(allow_blank=True, help_text="Why it is there")
    zone_line = serializers.SerializerMethodField()

    def get_zone_line(self, record) -> str:
        return record.zone_line()


class DnsRecordsSerializer(serializers.Serializer):
    domain = serializers.CharField()
    records = DnsRecordSerializer(many=True)
    zone = serializers.CharField(help_text="The records as zone-file lines")


class DnsFindingSerializer(serializers.Serializer):
    what = serializers.CharField()
    status = serializers.ChoiceField(choices=["ok", "missing", "wrong", "unknown"])
    record = DnsRecordSerializer(allow_null=True, help_text="What to publish, when it is a record of the domain's")
    found = serializers.ListField(child=serializers.CharField(), help_text="What DNS has now")
    fix = serializers.CharField(allow_blank=True, help_text="What to do; empty when nothing")
    note = serializers.CharField(allow_blank=True)


class DnsReportSerializer(serializers.Serializer):
    domain = serializers.CharField()
    hostname = serializers.CharField(help_text="This server's name as DNS must see it")
    ok = serializers.BooleanField()
    records = DnsFindingSerializer(many=True, help_text="The domain's records")
    server = DnsFindingSerializer(many=True, help_text="This server: its name, reverse DNS, block lists")


class QueueNumbersSerializer(serializers.Serializer):
    waiting = serializers.DictField(child=serializers.IntegerField(), help_text="Recipients by state")
    oldest_seconds = serializers.IntegerField()
    entered_last_hour = serializers.IntegerField()
    left_last_hour = serializers.IntegerField()
    attempts_last_day = serializers.DictField(child=serializers.IntegerField())


class DashboardWarningSerializer(serializers.Serializer):
    topic = serializers.CharField(help_text="certificate, dns, queue, blocklist")
    text = serializers.CharField()


class CheckedDomainSerializer(serializers.Serializer):
    domain = serializers.CharField()
    checked = serializers.DateTimeField()
    problems = serializers.ListField(child=serializers.CharField())


class DashboardSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    queue = QueueNumbersSerializer()
    counters = serializers.DictField(
        child=serializers.DictField(child=serializers.FloatField()),
        help_text="Counters since this node started, by name and label",
    )
    server_dns = DnsFindingSerializer(many=True)
    domains_checked = CheckedDomainSerializer(many=True, help_text="Domains whose DNS was checked lately")
    warnings = DashboardWarningSerializer(many=True)


# External accounts fetched from (MRA) ---------------------------------------------------


class ExternalAccountSerializer(serializers.ModelSerializer):
    """The remote password is write-only: stored encrypted, never shown (has_password says
    whether one is stored)."""

    account = ComputedChar(
        max_length=320, help_text="The local account mail is fetched into: its address or its id; fixed once created",
        compute=lambda row: row.account.address,
    )
    protocol = serializers.ChoiceField(choices=ExternalAccount.Protocol.values)
    tls = serializers.ChoiceField(choices=ExternalAccount.TLS.values, required=False, default="implicit")
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True,
                                    help_text="Null or left out: the protocol's port for the TLS mode")
    password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=500, trim_whitespace=False,
        help_text="The remote password: required when creating; never shown; empty or left out keeps the stored one",
    )
    has_password = serializers.SerializerMethodField()
    local_folder = serializers.CharField(max_length=1000, required=False, default="INBOX",
                                         help_text="An existing folder of the local account; INBOX goes through Sieve")
    remote_folders = serializers.CharField(max_length=10000, required=False, allow_blank=True, default="",
                                           help_text="IMAP: folders to fetch, one a line; empty = INBOX; * = all")

    class Meta:
        model = ExternalAccount
        fields = ("id", "account", "protocol", "host", "port", "tls", "verify_certificate", "username", "password",
                  "has_password", "remote_folders", "local_folder", "keep", "enabled", "last_attempt",
                  "last_success", "last_error", "failures", "next_attempt")
        read_only_fields = ("id", "last_attempt", "last_success", "last_error", "failures", "next_attempt")
        extra_kwargs = {"host": {"max_length": 255}, "username": {"max_length": 320}}

    def get_has_password(self, obj) -> bool:
        return bool(obj.password)
