"""The REST API (/api/v1/). Views read through visible_to() and write through the actions.

Implementation notes:
- Every write is one or more accounts.actions / mta.actions calls with acting_user set to
  the request's user, inside one transaction (a PATCH of several fields is all or
  nothing), audited "via api". No view saves a model itself.
- Objects are found by id in querysets already narrowed by visible_to(), so another
  tenant's id is a 404 exactly like an unknown one.
- PUT is offered only where a whole resource is replaced (Sieve scripts, routes);
  everything else changes with PATCH.
"""
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import actions, limits
from accounts.admin import count_subquery
from accounts.errors import AccountsError, InvalidInput, NotFound
from accounts.models import Account, Alias, AuditEntry, Domain, DomainAlias, LoginEvent, Redirect
from antispam.models import ListEntry, SpamSettings
from api import csvio
from api import serializers as s
from api.rest import CSVParser
from migration import fetching
from migration.models import ExternalAccount
from mta import actions as mta_actions
from mta.models import QueuedMessage, QueuedRecipient, SmartHost
from ops import dashboard, dnsdoctor
from sieve.models import SieveScript

# Plumbing ----------------------------------------------------------------------------


class ApiMixin:
    """Audited "via api"; the acting user passed on; writes in one transaction."""

    scope_family = None

    def dispatch(self, request, *args, **kwargs):
        with actions.channel("api"):
            return super().dispatch(request, *args, **kwargs)

    @property
    def user(self):
        return self.request.user

    def changed(self, instance, status_code=status.HTTP_200_OK):
        return Response(self.get_serializer(instance).data, status=status_code)

    def valid(self, serializer_class=None, partial=False):
        serializer = (serializer_class or self.get_serializer_class())(
            data=self.request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class ReadViewSet(ApiMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    pass


class CSVMixin:
    """GET …/export/ (CSV of what you may see) and POST …/import/ (dry run unless ?apply=true)."""

    csv_kind = None

    @extend_schema(
        summary="Export as CSV", responses={(200, "text/csv"): OpenApiTypes.STR},
        parameters=[OpenApiParameter("domain", str, description="Only this domain (ASCII name)")],
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def export(self, request):
        rows = csvio.export_rows(self.csv_kind, acting_user=self.user, domain=request.query_params.get("domain"))
        response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.csv_kind}.csv"'
        return response

    @extend_schema(
        summary="Import CSV: a dry run with a per-row report, or ?apply=true (all rows or none)",
        request={"text/csv": OpenApiTypes.STR, "multipart/form-data": {
            "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
        parameters=[OpenApiParameter("apply", bool, description="Write the changes (default: a dry run)")],
        responses=s.ImportReportSerializer,
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[CSVParser, MultiPartParser],
            pagination_class=None, filter_backends=[])
    def import_csv(self, request):
        text = request.data
        if not isinstance(text, str):
            upload = request.data.get("file")
            if upload is None:
                raise InvalidInput("send the CSV as the body (text/csv) or as the form field 'file'")
            if upload.size > csvio.MAX_BYTES:
                raise InvalidInput("the file is too large")
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("the file is not UTF-8 text") from None
        apply = request.query_params.get("apply", "").lower() in ("1", "true", "yes")
        report = csvio.import_csv(self.csv_kind, text, apply=apply, acting_user=self.user)
        return Response(s.ImportReportSerializer(report.as_dict()).data)


def _given(data, *names):
    return [name for name in names if name in data]


# Domains -------------------------------------------------------------------------------

SEND_LIMITS = ("messages_per_hour", "recipients_per_day")
CAPS = ("max_accounts", "max_aliases", "max_quota_total")


@extend_schema_view(
    list=extend_schema(summary="List the domains you administer"),
    create=extend_schema(summary="Add a domain (superadmin)"),
    partial_update=extend_schema(summary="Change a domain's default quota, state, sending limits or limits"),
    destroy=extend_schema(
        summary="Remove a domain (superadmin)",
        parameters=[OpenApiParameter("force", bool, description="Also remove its accounts and their mail")],
    ),
)
class DomainViewSet(ReadViewSet, mixins.CreateModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin):
    scope_family = "domains"
    serializer_class = s.DomainSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    ordering_fields = ("id", "name", "created")
    filter_fields = {"name": ("name", str, "Exact ASCII name"), "active": ("active", bool, "Enabled or not")}

    def get_queryset(self):
        accounts = Account.objects.filter(domain=OuterRef("pk"))
        return Domain.objects.visible_to(self.user).annotate(account_count=count_subquery(accounts))

    def _reloaded(self, name):
        return self.get_queryset().get(name=name)

    @transaction.atomic
    def create(self, request, *args, **kwargs):
        data = self.valid()
        domain = actions.create_domain(
            data["name"], default_quota=data.get("default_quota", 0), active=data.get("active", True),
            acting_user=self.user,
        )
        self._set_limits(domain, data)
        return self.changed(self._reloaded(domain.name), status.HTTP_201_CREATED)

    def _set_limits(self, domain, data):
        if _given(data, *SEND_LIMITS):
            merged = {name: data.get(name, getattr(domain, name)) for name in SEND_LIMITS}
            actions.set_domain_send_limits(domain.name, **merged, acting_user=self.user)
        if _given(data, *CAPS):
            merged = {name: data.get(name, getattr(domain, name)) for name in CAPS}
            actions.set_domain_limits(domain.name, **merged, acting_user=self.user)

    @transaction.atomic
    def partial_update(self, request, *args, **kwargs):
        domain = self.get_object()
        data = self.valid(partial=True)
        if "name" in data and data["name"] != domain.name:
            return Response({"detail": "name: a domain cannot be renamed", "code": "invalid",
                             "fields": {"name": ["A domain cannot be renamed."]}}, status=400)
        if "default_quota" in data:
            actions.set_domain_default_quota(domain.name, data["default_quota"], acting_user=self.user)
        if "active" in data:
            actions.set_domain_active(domain.name, data["active"], acting_user=self.user)
        self._set_limits(domain, data)
        return self.changed(self._reloaded(domain.name))

    def destroy(self, request, *args, **kwargs):
        domain = self.get_object()
        force = request.query_params.get("force", "").lower() in ("1", "true")
        actions.remove_domain(domain.name, force=force, acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="The DNS records to publish for the domain (no lookups)", responses=s.DnsRecordsSerializer)
    @action(detail=True, methods=["get"], url_path="dns-records", serializer_class=s.DnsRecordsSerializer,
            pagination_class=None, filter_backends=[])
    def dns_records(self, request, pk=None):
        domain = self.get_object()
        records = dnsdoctor.records(domain)
        zone = "".join(record.zone_line() + "\n" for record in records)
        return Response(s.DnsRecordsSerializer({"domain": domain.name, "records": records, "zone": zone}).data)

    @extend_schema(summary="Check the domain's records and this server's names in live DNS: ok, missing or "
                           "wrong, with the fix", responses=s.DnsReportSerializer)
    @action(detail=True, methods=["get"], url_path="dns-check", serializer_class=s.DnsReportSerializer,
            pagination_class=None, filter_backends=[])
    def dns_check(self, request, pk=None):
        report = dnsdoctor.check(self.get_object())
        dashboard.remember_dns_report(report)
        return Response(s.DnsReportSerializer(report).data)


@extend_schema_view(create=extend_schema(summary="Make a name an alias of a domain (superadmin)"))
class DomainAliasViewSet(ReadViewSet, mixins.CreateModelMixin, mixins.DestroyModelMixin):
    scope_family = "domains"
    serializer_class = s.DomainAliasSerializer
    ordering_fields = ("id", "name", "created")
    filter_fields = {"target": ("target__name", str, "The target domain's ASCII name")}

    def get_queryset(self):
        return DomainAlias.objects.visible_to(self.user).select_related("target")

    def create(self, request, *args, **kwargs):
        data = self.valid()
        alias = actions.create_domain_alias(data["name"], data["target"]["name"], acting_user=self.user)
        return self.changed(alias, status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        actions.remove_domain_alias(self.get_object().name, acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Accounts ----------------------------------------------------------------------------


class AddressFilters:
    filter_fields = {
        "domain": ("domain__name", str, "Only this domain (ASCII name)"),
        "active": ("active", bool, "Enabled or not"),
    }
    ordering_fields = ("id", "localpart", "created")


@extend_schema_view(
    list=extend_schema(summary="List accounts"),
    create=extend_schema(summary="Create an account"),
    partial_update=extend_schema(summary="Change an account's name, quota, state, sending limits or send-as list"),
    destroy=extend_schema(summary="Remove an account and all its mail"),
)
class AccountViewSet(CSVMixin, AddressFilters, ReadViewSet, mixins.CreateModelMixin, mixins.UpdateModelMixin,
                     mixins.DestroyModelMixin):
    scope_family = "accounts"
    csv_kind = "accounts"
    serializer_class = s.AccountSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    ordering_fields = ("id", "localpart", "created", "quota_used")
    search = True

    def get_queryset(self):
        return Account.objects.visible_to(self.user).select_related("domain").prefetch_related("send_as_grants")

    def _reloaded(self, account):
        return self.get_queryset().get(pk=account.pk)

    @transaction.atomic
    def create(self, request, *args, **kwargs):
        data = self.valid()
        account = actions.create_account(
            data["address"], password=data.get("password"), quota=data.get("quota"),
            display_name=data.get("display_name", ""), active=data.get("active", True), acting_user=self.user,
        )
        self._update(account, data, ("messages_per_hour", "recipients_per_day", "send_as"))
        return self.changed(self._reloaded(account), status.HTTP_201_CREATED)

    def _update(self, account, data, allowed):
        address, user = account.address, self.user
        given = set(_given(data, *allowed))
        if "display_name" in given:
            actions.set_display_name(address, data["display_name"], acting_user=user)
        if "quota" in given:
            if data["quota"] is None:
                raise InvalidInput("quota: give a number of bytes (0 is unlimited)")
            actions.set_quota(address, data["quota"], acting_user=user)
        if "active" in given:
            actions.set_account_active(address, data["active"], acting_user=user)
        if given & set(SEND_LIMITS):
            merged = {name: data.get(name, getattr(account, name)) for name in SEND_LIMITS}
            actions.set_send_limits(address, **merged, acting_user=user)
        if "send_as" in given:
            actions.set_send_as(address, data["send_as"], acting_user=user)

    @transaction.atomic
    def partial_update(self, request, *args, **kwargs):
        account = self.get_object()
        data = self.valid(partial=True)
        if "address" in data and data["address"].lower() != account.address:
            raise InvalidInput("address: an account cannot be renamed")
        if "password" in data:
            raise InvalidInput("password: change it with POST …/password/")
        self._update(account, data, ("display_name", "quota", "active", *SEND_LIMITS, "send_as"))
        return self.changed(self._reloaded(account))

    def destroy(self, request, *args, **kwargs):
        actions.remove_account(self.get_object().address, acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Set the account's password", request=s.PasswordSerializer, responses={204: None})
    @action(detail=True, methods=["post"], serializer_class=s.PasswordSerializer)
    def password(self, request, pk=None):
        account = self.get_object()
        data = self.valid(s.PasswordSerializer)
        actions.set_password(account.address, data["password"], acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Quota and sending usage", responses=s.UsageSerializer)
    @action(detail=True, methods=["get"], serializer_class=s.UsageSerializer)
    def usage(self, request, pk=None):
        account = self.get_object()
        used, allowed = limits.usage_for(account), limits.limits_for(account)
        return Response(s.UsageSerializer({
            "quota": account.quota, "quota_used": account.quota_used, "quota_percent": account.quota_percent,
            "messages_last_hour": used.messages_last_hour, "messages_per_hour": allowed.messages_per_hour,
            "recipients_last_day": used.recipients_last_day, "recipients_per_day": allowed.recipients_per_day,
        }).data)


# Aliases and redirects ---------------------------------------------------------------


@extend_schema_view(partial_update=extend_schema(summary="Replace an alias's targets", request=s.AliasTargetsSerializer))
class AliasViewSet(CSVMixin, AddressFilters, ReadViewSet, mixins.CreateModelMixin, mixins.UpdateModelMixin,
                   mixins.DestroyModelMixin):
    scope_family = "aliases"
    csv_kind = "aliases"
    serializer_class = s.AliasSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    search = True

    def get_queryset(self):
        return Alias.objects.visible_to(self.user).select_related("domain").prefetch_related("targets")

    def create(self, request, *args, **kwargs):
        data = self.valid()
        alias = actions.create_alias(data["address"], data["targets"], acting_user=self.user)
        return self.changed(self.get_queryset().get(pk=alias.pk), status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        alias = self.get_object()
        data = self.valid(s.AliasTargetsSerializer)
        actions.set_alias_targets(alias.address if alias.localpart else f"@{alias.domain.name}", data["targets"],
                                  acting_user=self.user)
        return self.changed(self.get_queryset().get(pk=alias.pk))

    def destroy(self, request, *args, **kwargs):
        alias = self.get_object()
        actions.remove_alias(alias.address if alias.localpart else f"@{alias.domain.name}", acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RedirectViewSet(AddressFilters, ReadViewSet, mixins.CreateModelMixin, mixins.DestroyModelMixin):
    scope_family = "aliases"
    serializer_class = s.RedirectSerializer
    search = True

    def get_queryset(self):
        return Redirect.objects.visible_to(self.user).select_related("domain")

    def create(self, request, *args, **kwargs):
        data = self.valid()
        redirect = actions.create_redirect(data["address"], data["target"], acting_user=self.user)
        return self.changed(redirect, status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        actions.remove_redirect(self.get_object().address, acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Spam thresholds and allow/block lists (a domain's or an account's) ----------------------


class SpamScopedMixin:
    """Rows that belong to a domain or to an account: visible when that domain is."""

    scope_family = "spam"
    model = None
    ordering_fields = ("id",)
    filter_fields = {
        "domain": ("domain__name", str, "Only the domain's own rows (ASCII name), not its accounts'"),
        "account": ("account_id", int, "Only this account's rows (its id)"),
    }

    def get_queryset(self):
        rows = self.model.objects.select_related("domain", "account__domain")
        if actions.is_superadmin(self.user):
            return rows
        domains = Domain.objects.visible_to(self.user).values("pk")
        return rows.filter(Q(domain__in=domains) | Q(account__domain__in=domains))

    @staticmethod
    def scope_of(row):
        return {"domain": row.domain.name} if row.domain_id else {"account": row.account.address}

    @staticmethod
    def scope_given(data):
        return {"domain": data.get("domain") or None, "account": data.get("account") or None}


@extend_schema_view(
    list=extend_schema(summary="List the spam allow/block list entries of the domains you administer and "
                               "their accounts"),
    create=extend_schema(summary="Put a sender on a domain's or an account's allow or block list (an entry "
                                 "already there moves to the list named)"),
    destroy=extend_schema(summary="Take a sender off the list"),
)
class SpamListEntryViewSet(SpamScopedMixin, ReadViewSet, mixins.CreateModelMixin, mixins.DestroyModelMixin):
    model = ListEntry
    serializer_class = s.SpamListEntrySerializer
    ordering_fields = ("id", "pattern", "created")
    filter_fields = {
        **SpamScopedMixin.filter_fields,
        "kind": ("kind", str, "allow or block"),
        "pattern": ("pattern", str, "An address or domain, exactly"),
    }

    def create(self, request, *args, **kwargs):
        data = self.valid()
        entry = actions.add_spam_list_entry(data["kind"], data["pattern"], **self.scope_given(data),
                                            acting_user=self.user)
        return self.changed(self.get_queryset().get(pk=entry.pk), status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        entry = self.get_object()
        actions.remove_spam_list_entry(entry.pk, **self.scope_of(entry), acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="List the spam thresholds set for the domains you administer and their accounts"),
    create=extend_schema(summary="Set a domain's or an account's spam thresholds (replacing any set before)"),
    update=extend_schema(summary="Replace these thresholds", request=s.SpamThresholdsSerializer),
)
class SpamSettingsViewSet(SpamScopedMixin, ReadViewSet, mixins.CreateModelMixin, mixins.UpdateModelMixin):
    model = SpamSettings
    serializer_class = s.SpamSettingsSerializer
    http_method_names = ["get", "post", "put", "head", "options"]

    def _set(self, scope, data):
        return actions.set_spam_thresholds(
            **scope, tag=data.get("tag_threshold"), junk=data.get("junk_threshold"),
            reject=data.get("reject_threshold"), never_reject=data.get("never_reject", False), acting_user=self.user,
        )

    def create(self, request, *args, **kwargs):
        data = self.valid()
        row = self._set(self.scope_given(data), data)
        return self.changed(self.get_queryset().get(pk=row.pk), status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        row = self.get_object()
        self._set(self.scope_of(row), self.valid(s.SpamThresholdsSerializer))
        return self.changed(self.get_queryset().get(pk=row.pk))


# External accounts fetched from (MRA) -------------------------------------------------

def _invalid(field, message):
    return exceptions.ValidationError({field: [message]})


def _refused(error):
    """A 400 for migration.fetching's refusal, naming the field when it is about one."""
    return _invalid(error.field, str(error)) if error.field else exceptions.ValidationError([str(error)])


@extend_schema_view(
    list=extend_schema(summary="List the external POP3/IMAP accounts fetched into the accounts you administer"),
    create=extend_schema(summary="Add an external POP3/IMAP account to fetch mail from (the password is stored "
                                 "encrypted and never shown)"),
    partial_update=extend_schema(summary="Change an external account; an empty or omitted password keeps the "
                                         "stored one"),
    destroy=extend_schema(summary="Remove an external account (mail already fetched stays)"),
)
class ExternalAccountViewSet(ReadViewSet, mixins.CreateModelMixin, mixins.UpdateModelMixin,
                             mixins.DestroyModelMixin):
    """Writes go through migration.fetching; rows are visible when their account is."""

    scope_family = "external"
    serializer_class = s.ExternalAccountSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    ordering_fields = ("id", "host")
    filter_fields = {
        "account": ("account_id", int, "Only this account's external accounts (its id)"),
        "protocol": ("protocol", str, "pop3 or imap"),
        "enabled": ("enabled", bool, "Fetched or not"),
    }

    def get_queryset(self):
        accounts = Account.objects.visible_to(self.user).values("pk")
        return ExternalAccount.objects.filter(account__in=accounts).select_related("account__domain")

    def _account(self, given):
        """The local account named by id or address, if the user administers it (else a 400
        that says no more than an unknown one would)."""
        given = given.strip()
        visible = Account.objects.visible_to(self.user).select_related("domain")
        account = None
        if given.isdigit():
            account = visible.filter(pk=int(given)).first()
        elif "@" in given:
            try:
                found = actions.get_account(given)
            except AccountsError:
                found = None
            account = found and visible.filter(pk=found.pk).first()
        if account is None:
            raise _invalid("account", f"unknown account {given!r}: give the id or the address of an account "
                                      "you administer")
        return account

    @transaction.atomic
    def create(self, request, *args, **kwargs):
        data = self.valid()
        account = self._account(data["account"])
        try:
            external = fetching.add_external_account(
                account, acting_user=self.user, protocol=data["protocol"], host=data["host"], username=data["username"],
                password=data.get("password"), port=data.get("port"), tls=data["tls"],
                verify_certificate=data.get("verify_certificate", True), remote_folders=data["remote_folders"],
                local_folder=data["local_folder"], keep=data.get("keep", True), enabled=data.get("enabled", True),
            )
        except fetching.ExternalAccountError as error:
            raise _refused(error) from None
        return self.changed(self.get_queryset().get(pk=external.pk), status.HTTP_201_CREATED)

    @transaction.atomic
    def partial_update(self, request, *args, **kwargs):
        external = self.get_object()
        data = self.valid(partial=True)
        if "account" in data and self._account(data["account"]).pk != external.account_id:
            raise _invalid("account", "an external account cannot move to another account: remove it and add one")
        changes = {name: data[name] for name in _given(data, *fetching.EDITABLE, "password")}
        try:
            fetching.update_external_account(external, acting_user=self.user, **changes)
        except fetching.ExternalAccountError as error:
            raise _refused(error) from None
        return self.changed(self.get_queryset().get(pk=external.pk))

    @transaction.atomic
    def destroy(self, request, *args, **kwargs):
        fetching.remove_external_account(self.get_object(), acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Sieve scripts -----------------------------------------------------------------------

SCRIPT_NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, description="The script's name")


class SieveScriptViewSet(ApiMixin, viewsets.GenericViewSet):
    """An account's Sieve scripts: list, get, put (create or replace), activate, delete."""

    scope_family = "sieve"
    serializer_class = s.SieveScriptSerializer
    pagination_class = None
    filter_backends = []
    lookup_field = "name"

    def get_queryset(self):
        return SieveScript.objects.filter(account=self._account())

    def _account(self):
        account = Account.objects.visible_to(self.user).select_related("domain").filter(
            pk=self.kwargs["account_pk"]
        ).first()
        if account is None:
            raise NotFound("account not found")
        return account

    @extend_schema(summary="List an account's scripts", responses=s.SieveScriptListSerializer(many=True))
    def list(self, request, account_pk=None):
        scripts = SieveScript.objects.filter(account=self._account()).order_by("name")
        return Response(s.SieveScriptListSerializer(scripts, many=True).data)

    @extend_schema(summary="Get a script", parameters=[SCRIPT_NAME])
    def retrieve(self, request, account_pk=None, name=None):
        from sieve import actions as sieve_actions

        return Response(self.get_serializer(sieve_actions.get_script(self._account(), name)).data)

    @extend_schema(summary="Store a script (checked first)", parameters=[SCRIPT_NAME], request=s.SievePutSerializer)
    def update(self, request, account_pk=None, name=None):
        data = self.valid(s.SievePutSerializer)
        script = actions.put_sieve_script(
            self._account().address, name, data["text"], activate=data.get("active", False), acting_user=self.user
        )
        return Response(self.get_serializer(script).data)

    @extend_schema(summary="Delete a script (not the active one)", parameters=[SCRIPT_NAME], responses={204: None})
    def destroy(self, request, account_pk=None, name=None):
        actions.delete_sieve_script(self._account().address, name, acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Make a script the active one", parameters=[SCRIPT_NAME], request=None)
    def activate(self, request, account_pk=None, name=None):
        script = actions.activate_sieve_script(self._account().address, name, acting_user=self.user)
        return Response(self.get_serializer(script).data)

    @extend_schema(summary="Deactivate every script of the account", request=None, responses={204: None})
    def deactivate(self, request, account_pk=None):
        actions.activate_sieve_script(self._account().address, "", acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Routes: smart host, transports, relay domains (superadmin) ----------------------------


@extend_schema_view(
    create=extend_schema(summary="Set the smart host, a transport or a relay domain (refused if one is set)"),
    update=extend_schema(summary="Replace a route (same kind and domain); a null password keeps the stored one"),
)
class RouteViewSet(ReadViewSet, mixins.CreateModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin):
    scope_family = "relay"
    superadmin_only = True
    serializer_class = s.RouteSerializer
    http_method_names = ["get", "post", "put", "delete", "head", "options"]
    ordering_fields = ("id", "domain")
    filter_fields = {"domain": ("domain", str, "The destination domain; empty for the smart host")}
    queryset = SmartHost.objects.all()

    def _save(self, data, *, replace):
        common = {
            "tls": data.get("tls"), "verify_certificate": data.get("verify_certificate", True),
            "username": data.get("username", ""), "password": data.get("password"),
            "replace": replace, "acting_user": self.user,
        }
        kind, domain = data["kind"], data.get("domain", "")
        if kind == "smarthost":
            if domain:
                raise InvalidInput("domain: the smart host is for all other domains; leave it empty")
            return mta_actions.set_smarthost(data["host"], data["port"], **common)
        if not domain:
            raise InvalidInput(f"domain: a {kind} needs a domain")
        if kind == "transport":
            return mta_actions.set_transport(domain, data["host"], data["port"], **common)
        return mta_actions.add_relay_domain(
            domain, data["host"], data["port"], verify_recipients=data.get("verify_recipients", "none"),
            recipients=data.get("recipients", []), **common,
        )

    def create(self, request, *args, **kwargs):
        return self.changed(self._save(self.valid(), replace=False), status.HTTP_201_CREATED)

    @transaction.atomic
    def update(self, request, *args, **kwargs):
        route = self.get_object()
        data = self.valid()
        if (data["kind"], data.get("domain", "")) != (mta_actions.route_kind(route), route.domain):
            raise InvalidInput("kind and domain of a route cannot change: remove it and add another")
        return self.changed(self._save(data, replace=True))

    def destroy(self, request, *args, **kwargs):
        route = self.get_object()
        if route.domain:
            mta_actions.remove_route(route.domain, acting_user=self.user)
        else:
            mta_actions.clear_smarthost(acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# The outbound queue (superadmin) ------------------------------------------------------


@extend_schema_view(destroy=extend_schema(summary="Remove a message from the queue; nobody is told"))
class QueueViewSet(ReadViewSet, mixins.DestroyModelMixin):
    scope_family = "queue"
    superadmin_only = True
    serializer_class = s.QueuedMessageSerializer
    ordering_fields = ("id", "created")
    filter_fields = {
        "queue_id": ("queue_id", str, "The id logs show"),
        "sender": ("mail_from__iexact", str, "Envelope sender"),
    }
    STATES = ("queued", "deferred", "held", "delivered", "bounced")

    def get_queryset(self):
        messages = QueuedMessage.objects.select_related("blob").prefetch_related("recipients")
        state = self.request.query_params.get("state")
        if state:
            if state not in self.STATES:
                raise InvalidInput(f"state: one of {', '.join(self.STATES)}")
            messages = messages.filter(Exists(QueuedRecipient.objects.filter(message=OuterRef("pk"), state=state)))
        domain = self.request.query_params.get("domain")
        if domain:
            messages = messages.filter(
                Exists(QueuedRecipient.objects.filter(message=OuterRef("pk"), domain=domain.strip().lower()))
            )
        return messages

    def destroy(self, request, *args, **kwargs):
        mta_actions.delete_messages([self.get_object().pk], acting_user=self.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _apply(self, change):
        message = self.get_object()
        changed = change(message_ids=[message.pk], acting_user=self.user)
        return Response({"changed": changed})

    @extend_schema(summary="Try its queued and deferred recipients now", request=None, responses=s.QueueChangeSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        return self._apply(mta_actions.retry_now)

    @extend_schema(summary="Hold its queued and deferred recipients", request=None, responses=s.QueueChangeSerializer)
    @action(detail=True, methods=["post"])
    def hold(self, request, pk=None):
        return self._apply(mta_actions.hold)

    @extend_schema(summary="Release its held recipients", request=None, responses=s.QueueChangeSerializer)
    @action(detail=True, methods=["post"])
    def release(self, request, pk=None):
        return self._apply(mta_actions.release)


# Audit: logins and administrative changes (read-only) -----------------------------------


class AuditLogViewSet(ReadViewSet):
    """A read-only log, newest first, narrowed by the model's visible_to()."""

    scope_family = "audit"
    ordering = ("-id",)
    ordering_fields = ("id", "time")
    model = None

    def get_queryset(self):
        return self.model.objects.visible_to(self.user)


class LoginEventViewSet(AuditLogViewSet):
    model = LoginEvent
    serializer_class = s.LoginEventSerializer
    filter_fields = {
        "account": ("account_id", int, "An account's id"),
        "success": ("success", bool, "Succeeded or failed"),
        "service": ("service", str, "smtp, imap, pop3, managesieve, web, api"),
        "remote_ip": ("remote_ip", str, "The client's IP address"),
    }


class AuditEntryViewSet(AuditLogViewSet):
    model = AuditEntry
    serializer_class = s.AuditEntrySerializer
    filter_fields = {
        "action": ("action", str, "e.g. account.create"),
        "object_type": ("object_type", str, "e.g. account, alias, queue"),
        "domain": ("domain_name", str, "The domain's ASCII name"),
        "actor": ("actor_name", str, "A user name, or system"),
    }


# Statistics --------------------------------------------------------------------------


STATS_DOMAINS = 1000  # domains listed by name; the totals count every domain
STATS_CACHE_SECONDS = 30  # the whole server's numbers, for superadmins (a seam for tests)
STAT_KEYS = ("accounts", "aliases", "redirects", "quota_allocated", "quota_used")


def domain_stats(user):
    """{"domains": [rows of the first STATS_DOMAINS by name], "totals": the sums over all}.

    One GROUP BY per table (an index scan of its domain column) rather than a correlated
    COUNT per domain: a superadmin's page at 100 domains and 1M aliases reads each index once.
    """
    domains = Domain.objects.visible_to(user)
    everything = actions.is_superadmin(user)

    def grouped(model, **sums):
        rows = model.objects.order_by()
        if not everything:
            rows = rows.filter(domain__in=domains.values("pk"))
        return {row.pop("domain"): row for row in rows.values("domain").annotate(n=Count("pk"), **sums)}

    accounts = grouped(Account, allocated=Sum("quota"), used=Sum("quota_used"))
    aliases, redirects = grouped(Alias), grouped(Redirect)
    rows = []
    for pk, name in domains.order_by("name").values_list("pk", "name"):
        account = accounts.get(pk, {})
        rows.append({
            "name": name, "accounts": account.get("n", 0), "aliases": aliases.get(pk, {}).get("n", 0),
            "redirects": redirects.get(pk, {}).get("n", 0), "quota_allocated": account.get("allocated") or 0,
            "quota_used": account.get("used") or 0,
        })
    totals = {"name": "", **{key: sum(row[key] for row in rows) for key in STAT_KEYS}}
    return {"domains": rows[:STATS_DOMAINS], "totals": totals}


def server_stats():
    """A superadmin's numbers: every domain and the queue; computed at most every STATS_CACHE_SECONDS
    per process, since counting a million aliases on every call is what makes the page slow."""
    def compute():
        data = domain_stats(None)
        counts = dict(QueuedRecipient.objects.order_by().values_list("state").annotate(n=Count("pk")))
        return {**data, "queue": {state: counts.get(state, 0) for state in QueueViewSet.STATES},
                "computed": timezone.now()}

    if not STATS_CACHE_SECONDS:
        return compute()
    return cache.get_or_set("api:stats:server", compute, STATS_CACHE_SECONDS)


class StatsView(ApiMixin, APIView):
    scope_family = "stats"

    @extend_schema(summary="Counts and quota per domain you administer; the queue for superadmins",
                   description=f"A superadmin's numbers may be up to {STATS_CACHE_SECONDS} seconds old "
                               "(`computed` says when they were counted).",
                   responses=s.StatsSerializer)
    def get(self, request):
        if actions.is_superadmin(request.user):
            data = server_stats()
        else:
            data = {**domain_stats(request.user), "computed": timezone.now()}
        return Response(s.StatsSerializer(data).data)


DASHBOARD_DOMAINS = 500  # domains whose last DNS check (remembered for a day) the dashboard looks up


class DashboardView(ApiMixin, APIView):
    scope_family = "stats"
    superadmin_only = True

    @extend_schema(summary="The operator's dashboard: queue numbers, counters, this server's DNS and the warnings "
                           "worth acting on (superadmin)", responses=s.DashboardSerializer)
    def get(self, request):
        names = list(Domain.objects.order_by("name").values_list("name", flat=True)[:DASHBOARD_DOMAINS])
        return Response(s.DashboardSerializer(dashboard.summary(domain_names=names)).data)

