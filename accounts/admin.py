"""The operator admin for domains, accounts, aliases and redirects.

Implementation notes:
- Every write is an accounts.actions call. An ActionForm runs its action while the form
  validates, inside a savepoint, so an AccountsError becomes a form error (beside its field
  where apply() says so with refused_on) and nothing is written; ModelAdmin.save_model
  never saves a business row itself.
- Deletes (one object or "delete selected") go through the remove_* actions. The
  confirmation page shows counts from a few COUNT queries instead of Django's walk over
  every related row (every message of every account), which does not scale.
- Lists must stay fast with 100,000 accounts and a million aliases: related rows come
  with the page (list_select_related / prefetch), per-row counts are annotated subqueries
  in the page's one query, the total is counted once (show_full_result_count = False) and
  at most to LIST_COUNT_CAP (CappedCountPaginator), and searches match the start of an
  address, a domain, a name or a target as ranges on indexes (search_addresses), never
  a substring (which reads every row) or a join that repeats rows.
- A password hash is never shown: the password field is in no list, form or read-only field,
  and neither are the SCRAM credentials stored beside it.
- Delegated administration: a superuser sees everything. A domain admin (a DomainAdmin
  row, no Django permissions needed) sees the pages of the tenant-scoped admins here
  (tenant_scoped = True), each list narrowed by visible_to(request.user), foreign-key
  choices and autocompletes included; the actions check the same rules again, with the
  user passed as acting_user. Other apps' admins (queue, routes) stay superuser-only.
- Every change made here is audited (accounts.actions, via "admin"); the audit log is a
  read-only list, filterable by action, kind of object, domain and actor.
- Abuse limits: the login throttle (active blocks by default, cleared by an admin action),
  the login audit (read-only; an account's page shows its last 50 logins) and sending
  limit alerts (read-only, acknowledged by an admin action). The audit grows with every
  login, so its list counts at most LIST_COUNT_CAP rows and filters without DISTINCT scans.
"""
import re
from contextlib import contextmanager
from urllib.parse import urlencode

import idna
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.paginator import Paginator
from django.db import connection, router, transaction
from django.db.models import Count, F, Func, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Lower
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import capfirst

from accounts import actions, limits, throttle
from accounts.errors import AccountsError
from accounts.models import (
    Account,
    Alias,
    AliasTarget,
    AuditEntry,
    Domain,
    DomainAdmin,
    DomainAlias,
    LoginEvent,
    LoginThrottle,
    Redirect,
    SendLimitAlert,
)
from mailsuite.admin_utils import ReadOnlyMixin
from mailsuite.lib.addresses import display_domain
from mailsuite.lib.sizes import SizeError, format_size, parse_size
from mailstore.models import Folder, Message

# Forms ------------------------------------------------------------------------------


class SizeField(forms.CharField):
    """A byte count written the way operators write it: 500M, 2G, 1048576, 0."""

    def to_python(self, value):
        if isinstance(value, int):
            return value
        text = super().to_python(value)
        if not text:
            return None
        try:
            return parse_size(text)
        except SizeError as error:
            raise ValidationError(str(error), code="invalid") from None

    def prepare_value(self, value):
        if isinstance(value, int):
            return exact_size(value)
        return value


def exact_size(size):
    """500M where that is exact, else the plain byte count: a form must give back what it showed."""
    if not size:
        return "0"
    text = format_size(size)
    try:
        return text if parse_size(text) == size else str(size)
    except SizeError:  # 1.4M is not a whole number of bytes
        return str(size)


class AddressListField(forms.CharField):
    """Addresses separated by commas, spaces or new lines; cleans to a list."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60})

    def to_python(self, value):
        if isinstance(value, (list, tuple)):
            return list(value)
        text = super().to_python(value)
        return [part for part in re.split(r"[,\s]+", text) if part]

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(value)
        return value


class ActionForm(forms.ModelForm):
    """A model form whose saving is one or more accounts.actions calls (see apply()).

    The actions run while the form validates, inside a savepoint: a refusal becomes a
    form error and rolls back whatever an earlier action in the same form did. save()
    only hands back the object the actions left, for the admin to log and link to.
    """

    # The user the actions run for (ActionAdmin.get_form sets it per request).
    acting_user = None

    def apply(self, data):
        """Make the change through accounts.actions; return the resulting model object."""
        raise NotImplementedError

    def _post_clean(self):
        # The model's own unique checks would duplicate the action's (and word it worse).
        if self._errors:
            return
        try:
            with transaction.atomic(using=router.db_for_write(self._meta.model)), actions.channel("admin"):
                self.instance = self.apply(self.cleaned_data)
        except FieldRefusal as refusal:
            self.add_error(refusal.field, refusal.message)
        except AccountsError as error:
            self.add_error(None, str(error))

    def save(self, commit=True):
        return self.instance

    def save_m2m(self):
        pass


class FieldRefusal(Exception):
    """An action's refusal that belongs beside one field of the form (see refused_on)."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


@contextmanager
def refused_on(field):
    """Show an AccountsError raised inside beside `field` instead of above the form."""
    try:
        yield
    except AccountsError as error:
        raise FieldRefusal(field, str(error)) from None


def _password_fields(*, required):
    """The password and its confirmation; see PasswordPairMixin."""
    first = forms.CharField(
        label="Password" if required else "New password",
        required=required,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    second = forms.CharField(
        label="Password confirmation",
        required=required,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    return first, second


class PasswordPairMixin:
    """Checks password1 and password2 agree before the action runs (it checks strength)."""

    def clean(self):
        data = super().clean()
        if data.get("password1") != data.get("password2") and "password2" not in self._errors:
            self.add_error("password2", "The two passwords do not match.")
        return data


QUOTA_HELP = "Bytes, or with a unit: 500M, 2G. 0 means unlimited."


class AccountAddForm(PasswordPairMixin, ActionForm):
    password1, password2 = _password_fields(required=True)
    quota = SizeField(
        required=False, help_text=QUOTA_HELP + " Empty uses the domain's (or the server's) default."
    )

    class Meta:
        model = Account
        fields = ("localpart", "domain", "display_name", "quota", "active")
        labels = {"localpart": "Local part"}

    def apply(self, data):
        return actions.create_account(
            f"{data['localpart']}@{data['domain'].name}",
            password=data["password1"],
            quota=data.get("quota"),
            display_name=data.get("display_name", ""),
            active=data.get("active", True),
            acting_user=self.acting_user,
        )


LIMIT_FIELDS = ("messages_per_hour", "recipients_per_day")


def _limit_help(inherited_from, inherited):
    return {
        name: f"Empty uses {inherited_from} ({inherited[name] or 'no limit'}); 0 is no limit."
        for name in LIMIT_FIELDS
    }


def _server_limits():
    return {
        "messages_per_hour": settings.MAILSUITE_SEND_MESSAGES_PER_HOUR,
        "recipients_per_day": settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY,
    }


SEND_AS_HELP = (
    "Addresses in any domain, separated by commas or new lines, that this account may use as "
    "envelope sender and From: besides its own address and the aliases that deliver to it."
)


class AccountChangeForm(PasswordPairMixin, ActionForm):
    quota = SizeField(help_text=QUOTA_HELP)
    password1, password2 = _password_fields(required=False)
    send_as = AddressListField(label="May also send as", required=False, help_text=SEND_AS_HELP)

    class Meta:
        model = Account
        fields = ("display_name", "quota", "active", *LIMIT_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            domain = self.instance.domain
            inherited = {
                name: getattr(domain, name) if getattr(domain, name) is not None else value
                for name, value in _server_limits().items()
            }
            for name, text in _limit_help("the domain's limit", inherited).items():
                self.fields[name].help_text = text
            self.initial["send_as"] = actions.send_as_identities(self.instance)

    def apply(self, data):
        address, user = self.instance.address, self.acting_user
        changed = set(self.changed_data)
        if "display_name" in changed:
            actions.set_display_name(address, data["display_name"], acting_user=user)
        if "quota" in changed:
            with refused_on("quota"):
                actions.set_quota(address, data["quota"], acting_user=user)
        if "active" in changed:
            actions.set_account_active(address, data["active"], acting_user=user)
        if changed & set(LIMIT_FIELDS):
            actions.set_send_limits(address, data["messages_per_hour"], data["recipients_per_day"], acting_user=user)
        if data.get("password1"):
            actions.set_password(address, data["password1"], acting_user=user)
        if "send_as" in changed:
            with refused_on("send_as"):
                actions.set_send_as(address, data["send_as"], acting_user=user)
        return actions.get_account(address, acting_user=user)


class DomainAddForm(ActionForm):
    default_quota = SizeField(
        required=False, label="Default quota", help_text=QUOTA_HELP + " Empty uses the server default."
    )

    class Meta:
        model = Domain
        fields = ("name", "default_quota", "active")
        help_texts = {"name": "e.g. example.com; international names may be typed as they are written"}

    def apply(self, data):
        return actions.create_domain(
            data["name"], default_quota=data.get("default_quota") or 0, active=data.get("active", True),
            acting_user=self.acting_user,
        )


CAP_FIELDS = ("max_accounts", "max_aliases", "max_quota_total")


class DomainChangeForm(ActionForm):
    default_quota = SizeField(label="Default quota", help_text=QUOTA_HELP + " Used for new accounts.")
    max_quota_total = SizeField(
        required=False, label="Max total quota",
        help_text="The sum of its accounts' quotas, e.g. 50G. Empty: no limit; accounts then need a quota.",
    )

    class Meta:
        model = Domain
        fields = ("default_quota", "active", *LIMIT_FIELDS, *CAP_FIELDS)
        help_texts = {
            "max_accounts": "Empty: no limit.",
            "max_aliases": "Aliases and redirects together. Empty: no limit.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, text in _limit_help("the server's limit", _server_limits()).items():
            if name in self.fields:  # read-only for domain admins
                self.fields[name].help_text = text + " Accounts may override it."

    def apply(self, data):
        name, user = self.instance.name, self.acting_user
        changed = set(self.changed_data)
        if "default_quota" in changed:
            actions.set_domain_default_quota(name, data["default_quota"], acting_user=user)
        if "active" in changed:
            actions.set_domain_active(name, data["active"], acting_user=user)
        if changed & set(LIMIT_FIELDS):
            actions.set_domain_send_limits(name, data["messages_per_hour"], data["recipients_per_day"], acting_user=user)
        if changed & set(CAP_FIELDS):
            actions.set_domain_limits(name, **{field: data.get(field) for field in CAP_FIELDS}, acting_user=user)
        return actions.get_domain(name, acting_user=user)


class DomainAliasAddForm(ActionForm):
    class Meta:
        model = DomainAlias
        fields = ("name", "target")
        labels = {"name": "Alias domain", "target": "Target domain"}

    def apply(self, data):
        return actions.create_domain_alias(data["name"], data["target"].name, acting_user=self.acting_user)


TARGETS_HELP = "Addresses, separated by commas or new lines; local ones must exist."


class AliasAddForm(ActionForm):
    localpart = forms.CharField(
        label="Local part", required=False, max_length=64, help_text="Empty for the domain's catch-all."
    )
    targets = AddressListField(help_text=TARGETS_HELP)

    class Meta:
        model = Alias
        fields = ("localpart", "domain", "targets")

    def apply(self, data):
        address = f"{data['localpart']}@{data['domain'].name}"
        return actions.create_alias(address, data["targets"], acting_user=self.acting_user)


class AliasChangeForm(ActionForm):
    targets = AddressListField(help_text=TARGETS_HELP)

    class Meta:
        model = Alias
        fields = ("targets",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["targets"] = [target.address for target in self.instance.targets.all()]

    def apply(self, data):
        address = self.instance.address
        if "targets" in self.changed_data:
            return actions.set_alias_targets(address, data["targets"], acting_user=self.acting_user)
        return actions.get_alias(address, acting_user=self.acting_user)


class RedirectAddForm(ActionForm):
    class Meta:
        model = Redirect
        fields = ("localpart", "domain", "target")
        labels = {"localpart": "Local part"}
        help_texts = {"target": "An address in a domain this server does not serve."}

    def apply(self, data):
        return actions.create_redirect(
            f"{data['localpart']}@{data['domain'].name}", data["target"], acting_user=self.acting_user
        )


class DomainAdminAddForm(ActionForm):
    class Meta:
        model = DomainAdmin
        fields = ("user", "domain")

    def apply(self, data):
        return actions.grant_domain_admin(
            data["user"].get_username(), data["domain"].name, acting_user=self.acting_user
        )


# Admin plumbing ---------------------------------------------------------------------


def _delete_selected_through_actions(modeladmin, request, queryset):
    """Django's "delete selected", atomic, with a refusal shown as an error message."""
    try:
        with transaction.atomic(using=router.db_for_write(modeladmin.model)), actions.channel("admin"):
            return delete_selected(modeladmin, request, queryset)
    except AccountsError as error:
        modeladmin.message_user(request, str(error), messages.ERROR)
        return None


class ActionAdmin(admin.ModelAdmin):
    """A ModelAdmin whose adds, changes and deletes are accounts.actions calls.

    Subclasses name an add_form and a change_form (ActionForm subclasses; None leaves
    that page read-only) and implement remove(request, obj), and may refine deletion_refusals()
    and related_counts() for the delete confirmation page.
    """

    add_form = None
    change_form = None
    show_full_result_count = False

    def has_change_permission(self, request, obj=None):
        return self.change_form is not None and super().has_change_permission(request, obj)

    def has_add_permission(self, request):
        return self.add_form is not None and super().has_add_permission(request)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = self.add_form if obj is None else self.change_form
        kwargs["form"] = form or self.form
        form = super().get_form(request, obj, change=change, **kwargs)
        form.acting_user = request.user  # a class made for this request by modelform_factory
        return form

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        with transaction.atomic(using=router.db_for_write(self.model)):
            response = super().changeform_view(request, object_id, form_url, extra_context)
            if request.method == "POST" and "adminform" in (getattr(response, "context_data", None) or {}):
                # The page is shown again (say an inline was invalid): what the form's
                # action did while validating must not stay behind.
                transaction.set_rollback(True)
        return response

    def save_model(self, request, obj, form, change):
        # The ActionForm has already made the change through accounts.actions.
        if not isinstance(form, ActionForm):
            raise ImproperlyConfigured(f"{type(self).__name__} may only save through an ActionForm")

    def save_related(self, request, form, formsets, change):
        # Inlines here are read-only; related rows change only through the form's action.
        pass

    def construct_change_message(self, request, form, formsets, add=False):
        # The (read-only, never saved) inlines changed nothing.
        return super().construct_change_message(request, form, (), add)

    # Deleting

    def remove(self, request, obj):
        raise NotImplementedError

    def delete_model(self, request, obj):
        self.remove(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.remove(request, obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            with actions.channel("admin"):
                return super().delete_view(request, object_id, extra_context)
        except AccountsError as error:
            # Raised inside delete_view's transaction, so its log entry is rolled back too.
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def get_actions(self, request):
        found = super().get_actions(request)
        if "delete_selected" in found:
            _, name, description = found["delete_selected"]
            found["delete_selected"] = (_delete_selected_through_actions, name, description)
        return found

    def get_deleted_objects(self, objs, request):
        # Django's default loads every related row to list it (each message of each
        # account) and asks for delete permission on each related model; a summary from
        # COUNT queries scales, and the remove action decides what goes with the object.
        ids = objs.values("pk") if isinstance(objs, QuerySet) else [obj.pk for obj in objs]
        objs = list(objs)
        listed = [f"{capfirst(self.opts.verbose_name)}: {obj}" for obj in objs]
        counts = {self.opts.verbose_name_plural: len(objs)}
        counts.update((name, n) for name, n in self.related_counts(ids).items() if n)
        return listed, counts, set(), self.deletion_refusals(request, objs)

    def related_counts(self, ids):
        """{verbose name plural: number of rows} that go with the objects whose pks are `ids`."""
        return {}

    def deletion_refusals(self, request, objs):
        """Reasons the objects may not be deleted (one per line shown), or []."""
        return []


def administers_domains(request):
    """Whether the signed-in user is a domain admin (asked once per request)."""
    if not hasattr(request, "_administers_domains"):
        user = request.user
        request._administers_domains = (
            user.is_active and user.is_authenticated and DomainAdmin.objects.filter(user_id=user.pk).exists()
        )
    return request._administers_domains


class TenantScopedMixin:
    """An admin a domain admin may use for their own domains (see the module's notes).

    `tenant_permissions` are what a domain admin may do here; a superuser (or a user with
    the Django permissions) keeps the usual rules.
    """

    tenant_permissions = ("view", "add", "change", "delete")

    def _tenant_may(self, request, what):
        return what in self.tenant_permissions and administers_domains(request)

    def get_queryset(self, request):
        return super().get_queryset(request).visible_to(request.user)

    def has_module_permission(self, request):
        return super().has_module_permission(request) or administers_domains(request)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or self._tenant_may(request, "view")

    def has_add_permission(self, request):
        if getattr(self, "add_form", True) is None:
            return False
        return super().has_add_permission(request) or self._tenant_may(request, "add")

    def has_change_permission(self, request, obj=None):
        if getattr(self, "change_form", True) is None:
            return False
        return super().has_change_permission(request, obj) or self._tenant_may(request, "change")

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) or self._tenant_may(request, "delete")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.related_model is Domain:
            kwargs["queryset"] = Domain.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def count_subquery(queryset):
    """COUNT(*) of `queryset` (filtered on an OuterRef) as a correlated subquery.

    Unlike annotate(Count(...)), it adds no join and GROUP BY to the page's query or to
    the paginator's COUNT, and the database evaluates it only for the rows shown.
    """
    counted = queryset.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")
    return Subquery(counted, output_field=IntegerField())


def _ascii_domain(text):
    """Domains are stored in ASCII: let an operator search for bücher.example as written."""
    if text.isascii():
        return text
    try:
        return idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return text


def starts_with(field, text):
    """Q: `field` starts with `text`, lower-cased as addresses and domains are stored.

    PostgreSQL answers the LIKE 'text%' from a B-tree index when the database's collation is
    C (or the index has a pattern opclass). SQLite's LIKE ignores case and so never uses an
    ordinary index: there the same condition is added as a range, `text <= field <
    text-with-its-last-character-bumped`, exact under SQLite's byte order, which the index
    answers by a short range scan. (Under a linguistic collation that range would be wrong,
    so PostgreSQL gets only the LIKE.)
    """
    text = text.lower()
    match = Q(**{f"{field}__startswith": text})
    bumped = ord(text[-1]) + 1
    if connection.vendor == "sqlite" and bumped <= 0x10FFFF and not 0xD800 <= bumped <= 0xDFFF:
        match &= Q(**{f"{field}__gte": text, f"{field}__lt": text[:-1] + chr(bumped)})
    return match


def domains_starting_with(text):
    """The ids of domains whose name starts with `text` (Unicode names as their ASCII form)."""
    return Domain.objects.filter(starts_with("name", _ascii_domain(text))).values("pk")


def search_by_address(queryset, search_term, prefix=""):
    """Narrow `queryset` by the terms of `search_term` that contain an @; return (queryset, rest).

    `bob@example.com`, `bob@` and `@example.com` match by prefix of the local part and of
    the domain. `prefix` leads to the address model (e.g. "account__" from a folder).
    """
    rest = []
    for term in search_term.replace("\x00", "").split():
        if "@" not in term:
            rest.append(term)
            continue
        local, _, domain = term.rpartition("@")
        if local:
            queryset = queryset.filter(starts_with(f"{prefix}localpart", local))
        if domain:
            queryset = queryset.filter(**{f"{prefix}domain__in": domains_starting_with(domain)})
    return queryset, " ".join(rest)


def search_addresses(queryset, search_term, *, also=None):
    """Narrow accounts, aliases or redirects to those matching every term of `search_term`:
    with an @ as search_by_address; without, the start of the local part or of the domain,
    or whatever `also(term)` (a Q) adds.

    Each alternative is a prefix of an indexed column of the listed table (the domain and
    `also` as lists of ids), and the matching is a subquery of ids with no ORDER BY: a
    planner that sees the page's ORDER BY domain, local part would otherwise walk the
    whole table in that order and test each row (a second per search at a million rows)
    instead of reading a few index ranges and sorting what they found.
    """
    if not search_term.replace("\x00", "").split():
        return queryset
    matches, rest = search_by_address(queryset.model._default_manager.all(), search_term)
    for term in rest.split():
        match = starts_with("localpart", term) | Q(domain__in=domains_starting_with(term))
        if also is not None:
            match |= also(term)
        matches = matches.filter(match)
    return queryset.filter(pk__in=matches.values("pk"))


LIST_COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most LIST_COUNT_CAP + 1 rows: an exact COUNT(*) over a million aliases (or a
    huge audit table) on every page costs more than the page. The list then says "more than
    10,000" (templates/admin/accounts/pagination.html) and pages through the first ones;
    a search or a filter narrows it."""

    cap = LIST_COUNT_CAP

    @cached_property
    def count(self):
        rows = self.object_list
        if isinstance(rows, QuerySet):
            rows = rows.order_by()  # counting needs no order: a sort of every row before the LIMIT
        return rows[: self.cap + 1].count()

    @property
    def capped(self):
        return self.count > self.cap

    @property
    def cap_text(self):
        return f"{self.cap:,}"


class AddressAdmin(TenantScopedMixin, ActionAdmin):
    """Shared by the three kinds of address: account, alias, redirect."""

    list_select_related = ("domain",)
    autocomplete_fields = ("domain",)
    ordering = ("domain__name", "localpart")
    paginator = CappedCountPaginator
    search_help_text = "The start of an address (bob, bob@, @example.org, bob@ex) or of a domain."
    # What else a search term without @ may match: a method (term) -> Q, a prefix on an indexed column.
    search_also = None

    def get_queryset(self, request):
        # str(obj) shows the domain: fetch it with the row (lists, autocomplete, deletes).
        return super().get_queryset(request).select_related("domain")

    def get_search_results(self, request, queryset, search_term):
        return search_addresses(queryset, search_term, also=self.search_also), False

    @admin.display(description="address", ordering="localpart")
    def email_address(self, obj):
        return str(obj)


class DomainActiveFilter(admin.SimpleListFilter):
    title = "domain active"
    parameter_name = "domain_active"

    def lookups(self, request, model_admin):
        return (("1", "Yes"), ("0", "No"))

    def queryset(self, request, queryset):
        if self.value() in ("0", "1"):
            return queryset.filter(domain__active=self.value() == "1")
        return queryset


def quota_bar(account):
    """Usage as a small bar and "12.3M of 1G" (no bar for an unlimited quota)."""
    used = format_size(account.quota_used)
    if not account.quota:
        return format_html('<span style="white-space:nowrap">{} of unlimited</span>', used)
    percent = account.quota_percent
    colour = "#ba2121" if percent >= 90 else "#e09b00" if percent >= 75 else "#417690"
    return format_html(
        '<span style="display:inline-flex;align-items:center;gap:6px;white-space:nowrap" title="{}%">'
        '<span style="display:inline-block;width:80px;height:8px;border:1px solid #999;border-radius:4px;'
        'overflow:hidden"><span style="display:block;width:{}%;height:100%;background:{}"></span></span>'
        "{} of {}</span>",
        percent,
        percent,
        colour,
        used,
        format_size(account.quota),
    )


RECENT_LOGINS = 50


# Domains ----------------------------------------------------------------------------


@admin.register(Domain)
class DomainModelAdmin(TenantScopedMixin, ActionAdmin):
    add_form = DomainAddForm
    change_form = DomainChangeForm
    tenant_permissions = ("view", "change")  # the default quota; the rest is the superadmin's
    list_display = ("domain_name", "active", "account_count", "default_quota_display", "created")
    list_filter = ("active",)
    search_fields = ("name",)
    ordering = ("name",)
    show_full_result_count = True  # domains are few; the total is cheap and useful
    add_fieldsets = ((None, {"fields": ("name", "default_quota", "active")}),)
    fieldsets = (
        (None, {"fields": ("domain_name", "default_quota", "active", "account_count", "created")}),
        ("Sending limits", {"fields": LIMIT_FIELDS}),
        ("Limits for the domain's administrators", {"fields": (*CAP_FIELDS, "administrators")}),
    )
    readonly_fields = ("domain_name", "account_count", "created", "administrators")

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and not actions.is_superadmin(request.user):
            fields = (*fields, "active", *LIMIT_FIELDS, *CAP_FIELDS)
        return fields

    @admin.display(description="administrators")
    def administrators(self, obj):
        names = obj.admins.select_related("user").values_list("user__username", flat=True)
        return ", ".join(names) or "none (only superadmins)"

    def get_queryset(self, request):
        # In the page's one query, not a COUNT per row.
        accounts = Account.objects.filter(domain=OuterRef("pk"))
        return super().get_queryset(request).annotate(account_count=count_subquery(accounts))

    def get_search_results(self, request, queryset, search_term):
        search_term = " ".join(_ascii_domain(term) for term in search_term.split())
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="domain", ordering="name")
    def domain_name(self, obj):
        shown = display_domain(obj.name)
        return shown if shown == obj.name else f"{shown} ({obj.name})"

    @admin.display(description="accounts", ordering="account_count")
    def account_count(self, obj):
        return obj.account_count

    @admin.display(description="default quota", ordering="default_quota")
    def default_quota_display(self, obj):
        return format_size(obj.default_quota) if obj.default_quota else "server default"

    # Deleting: refused while the domain has accounts, unless forced from its own delete page.

    def _forced(self, request):
        in_delete_view = request.resolver_match is not None and request.resolver_match.url_name == (
            f"{self.opts.app_label}_{self.opts.model_name}_delete"
        )
        return in_delete_view and request.GET.get("force") == "1"

    def remove(self, request, obj):
        actions.remove_domain(obj.name, force=self._forced(request), acting_user=request.user)

    def deletion_refusals(self, request, objs):
        if self._forced(request):
            return []
        busy = (
            Domain.objects.filter(pk__in=[obj.pk for obj in objs])
            .annotate(n=Count("accounts"))
            .filter(n__gt=0)
            .order_by("name")
        )
        return [
            format_html(
                '{} still has {} account(s); remove them first, or <a href="{}?force=1">delete the domain '
                "with all its accounts and their mail</a>.",
                domain,
                domain.n,
                reverse(f"{self.admin_site.name}:accounts_domain_delete", args=[domain.pk]),
            )
            for domain in busy
        ]

    def related_counts(self, ids):
        return {
            "accounts": Account.objects.filter(domain__in=ids).count(),
            "messages": Message.objects.filter(folder__account__domain__in=ids).count(),
            "aliases": Alias.objects.filter(domain__in=ids).count(),
            "redirects": Redirect.objects.filter(domain__in=ids).count(),
            "domain aliases": DomainAlias.objects.filter(target__in=ids).count(),
        }


@admin.register(DomainAlias)
class DomainAliasAdmin(TenantScopedMixin, ActionAdmin):
    add_form = DomainAliasAddForm
    tenant_permissions = ("view",)
    list_display = ("alias_name", "target", "active", "created")
    list_select_related = ("target",)
    list_filter = ("active",)
    search_fields = ("name", "target__name")
    autocomplete_fields = ("target",)
    ordering = ("name",)
    show_full_result_count = True
    readonly_fields = ("alias_name", "target", "active", "created")

    def get_fields(self, request, obj=None):
        return ("name", "target") if obj is None else self.readonly_fields

    def get_search_results(self, request, queryset, search_term):
        search_term = " ".join(_ascii_domain(term) for term in search_term.split())
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="alias domain", ordering="name")
    def alias_name(self, obj):
        return display_domain(obj.name)

    def remove(self, request, obj):
        actions.remove_domain_alias(obj.name, acting_user=request.user)


# Accounts ---------------------------------------------------------------------------


@admin.register(Account)
class AccountAdmin(AddressAdmin):
    add_form = AccountAddForm
    change_form = AccountChangeForm
    list_display = ("email_address", "display_name", "quota_usage", "active", "last_login")
    list_filter = ("active", DomainActiveFilter)
    search_fields = ("localpart", "domain__name", "display_name")  # see search_also
    search_help_text = "The start of an address (bob, bob@, @example.org), of a domain or of the name."
    add_fieldsets = (
        (None, {"fields": ("localpart", "domain", "display_name", "password1", "password2", "quota", "active")}),
    )
    fieldsets = (
        (None, {"fields": ("email_address", "display_name", "quota", "quota_usage", "active")}),
        ("Change password", {"fields": ("password1", "password2"), "description": "Leave empty to keep the password."}),
        ("Sending limits", {"fields": (*LIMIT_FIELDS, "sending_usage")}),
        ("Sender identities", {"fields": ("send_as",)}),
        ("History", {"fields": ("created", "last_login", "login_block", "recent_logins")}),
    )
    readonly_fields = (
        "email_address", "quota_usage", "sending_usage", "created", "last_login", "login_block", "recent_logins",
    )

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def search_also(self, term):
        # The name as the expression index account_display_name_lower has it.
        named = Account.objects.alias(display_name_lower=Lower("display_name"))
        return Q(pk__in=named.filter(starts_with("display_name_lower", term)).values("pk"))

    @admin.display(description="quota", ordering="quota_used")
    def quota_usage(self, obj):
        return quota_bar(obj)

    @admin.display(description="sent recently")
    def sending_usage(self, obj):
        used = limits.usage_for(obj)
        allowed = limits.limits_for(obj)
        alerts = SendLimitAlert.objects.filter(account=obj, acknowledged=False).count()
        text = format_html(
            "{} of {} messages in the last hour; {} of {} recipients in the last 24 hours",
            used.messages_last_hour,
            allowed.messages_per_hour or "unlimited",
            used.recipients_last_day,
            allowed.recipients_per_day or "unlimited",
        )
        if not alerts:
            return text
        link = reverse(f"{self.admin_site.name}:accounts_sendlimitalert_changelist")
        return format_html(
            '{}<br><a href="{}?account__id__exact={}&acknowledged__exact=0" style="color:#ba2121">'
            "{} unacknowledged sending limit alert(s)</a>",
            text, link, obj.pk, alerts,
        )

    @admin.display(description="login block")
    def login_block(self, obj):
        row = LoginThrottle.objects.filter(kind=LoginThrottle.ACCOUNT, key=throttle.account_key(obj.address)).first()
        link = reverse(f"{self.admin_site.name}:accounts_loginthrottle_changelist")
        if row is None or not row.blocked_until or row.blocked_until <= throttle.now():
            failures = row.failures if row is not None else 0
            return f"not blocked ({failures} recent failure(s))"
        query = urlencode({"state": "all", "q": row.key})
        return format_html(
            'blocked until {} — <a href="{}?{}">clear it in the login throttle list</a>',
            row.blocked_until.strftime("%Y-%m-%d %H:%M:%S %Z"), link, query,
        )

    @admin.display(description=f"last {RECENT_LOGINS} logins")
    def recent_logins(self, obj):
        events = LoginEvent.objects.filter(account=obj).order_by("-time")[:RECENT_LOGINS]
        link = reverse(f"{self.admin_site.name}:accounts_loginevent_changelist")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (event.time.strftime("%Y-%m-%d %H:%M:%S"), event.service, event.remote_ip or "-",
                 "ok" if event.success else f"failed: {event.get_reason_display()}")
                for event in events
            ),
        )
        return format_html(
            '<table><thead><tr><th>time (UTC)</th><th>service</th><th>IP</th><th>result</th></tr></thead>'
            '<tbody>{}</tbody></table><a href="{}?account__id__exact={}">all logins of this account</a>',
            rows or mark_safe('<tr><td colspan="4">none recorded</td></tr>'), link, obj.pk,
        )

    def remove(self, request, obj):
        actions.remove_account(obj.address, acting_user=request.user)

    def related_counts(self, ids):
        return {
            "folders": Folder.objects.filter(account__in=ids).count(),
            "messages": Message.objects.filter(folder__account__in=ids).count(),
        }


# Aliases and redirects --------------------------------------------------------------


class AliasTargetInline(ReadOnlyMixin, admin.TabularInline):
    """The alias's current targets, for reading; they are edited in the form's text field."""

    model = AliasTarget
    fields = ("address",)
    readonly_fields = ("address",)
    extra = 0
    can_delete = False
    verbose_name_plural = "current targets"



@admin.register(Alias)
class AliasAdmin(AddressAdmin):
    add_form = AliasAddForm
    change_form = AliasChangeForm
    inlines = (AliasTargetInline,)
    list_display = ("email_address", "target_list", "active", "created")
    list_filter = ("active", DomainActiveFilter)
    search_fields = ("localpart", "domain__name", "targets__address")  # see search_also
    search_help_text = "The start of an address (list, list@, @example.org), of a domain or of a target."
    readonly_fields = ("email_address", "active", "created")

    def search_also(self, term):
        return Q(pk__in=AliasTarget.objects.filter(starts_with("address", term)).values("alias_id"))

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("localpart", "domain", "targets")
        return ("email_address", "targets", "active", "created")

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def get_queryset(self, request):
        # Targets for the whole page in one query.
        return super().get_queryset(request).prefetch_related("targets")

    @admin.display(description="targets")
    def target_list(self, obj):
        targets = [target.address for target in obj.targets.all()]
        shown = ", ".join(targets[:5])
        return f"{shown} … ({len(targets)} in all)" if len(targets) > 5 else shown

    def remove(self, request, obj):
        actions.remove_alias(obj.address, acting_user=request.user)

    def related_counts(self, ids):
        return {"alias targets": AliasTarget.objects.filter(alias__in=ids).count()}


@admin.register(Redirect)
class RedirectAdmin(AddressAdmin):
    add_form = RedirectAddForm
    list_display = ("email_address", "target", "active", "created")
    list_filter = ("active", DomainActiveFilter)
    search_fields = ("localpart", "domain__name", "target")  # see search_also
    search_help_text = "The start of an address (old, old@, @example.org), of a domain or of the target."
    readonly_fields = ("email_address", "target", "active", "created")

    def search_also(self, term):
        return starts_with("target", term)

    def get_fields(self, request, obj=None):
        return ("localpart", "domain", "target") if obj is None else self.readonly_fields

    def remove(self, request, obj):
        actions.remove_redirect(obj.address, acting_user=request.user)


# Abuse limits -----------------------------------------------------------------------


class ThrottleStateFilter(admin.SimpleListFilter):
    """Blocked keys by default; "all" also shows keys still counting failures."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("blocked", "Blocked now"), ("all", "All (also counting)"))

    def queryset(self, request, queryset):
        if self.value() == "all":
            return queryset
        return queryset.filter(blocked_until__gt=throttle.now())

    def choices(self, changelist):
        current = self.value() or "blocked"
        for value, title in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": title,
            }


@admin.register(LoginThrottle)
class LoginThrottleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("key", "kind", "blocked_until", "retry_in", "failures", "blocks", "last_failure")
    list_filter = (ThrottleStateFilter, "kind")
    search_fields = ("key",)
    # Latest block first; rows never blocked (null) after them on every database.
    ordering = (F("blocked_until").desc(nulls_last=True), "-last_failure")
    actions = ("clear",)
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        # Keys are stored normalised (addresses lower case, IPv6 as a network): match them so.
        terms = [term.lower() for term in search_term.split()]
        for term in terms:
            queryset = queryset.filter(Q(key__startswith=term) | Q(key=throttle.ip_key(term) or term))
        return queryset, False

    @admin.display(description="retry in")
    def retry_in(self, obj):
        if not obj.blocked_until:
            return "-"
        seconds = int((obj.blocked_until - throttle.now()).total_seconds())
        return f"{seconds // 60}m {seconds % 60:02}s" if seconds > 0 else "-"

    def has_clear_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Clear the selected blocks and failure counts", permissions=["clear"])
    def clear(self, request, queryset):
        with actions.channel("admin"):
            cleared = actions.clear_login_blocks(list(queryset.values_list("pk", flat=True)), acting_user=request.user)
        self.message_user(request, f"Cleared {cleared} login throttle record(s).", messages.SUCCESS)


KNOWN_SERVICES = ("smtp", "imap", "pop3", "managesieve", "web", "api")


class ServiceFilter(admin.SimpleListFilter):
    """The services that log in, listed without a DISTINCT scan of the audit table."""

    title = "service"
    parameter_name = "service"

    def lookups(self, request, model_admin):
        return [(service, service) for service in KNOWN_SERVICES]

    def queryset(self, request, queryset):
        return queryset.filter(service=self.value()) if self.value() else queryset


@admin.register(LoginEvent)
class LoginEventAdmin(TenantScopedMixin, ReadOnlyMixin, admin.ModelAdmin):
    tenant_permissions = ("view",)
    list_display = ("time", "address", "account", "service", "remote_ip", "success", "reason")
    list_filter = (ServiceFilter, "success", "reason")
    list_select_related = ("account__domain",)
    search_fields = ("address", "remote_ip")
    search_help_text = "An IP address, an address as typed, or the start of an account's address."
    ordering = ("-time",)
    paginator = CappedCountPaginator
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        for term in search_term.split():
            ip = throttle.parse_ip(term)
            if ip is not None:
                queryset = queryset.filter(remote_ip=str(ip))
                continue
            accounts = Account.objects.visible_to(request.user)
            if "@" in term:
                accounts, _ = search_by_address(accounts, term)
            else:
                accounts = accounts.filter(localpart__istartswith=term)
            queryset = queryset.filter(
                Q(address=term) | Q(address=term.lower()) | Q(account__in=accounts.values("pk"))
            )
        return queryset, False


@admin.register(SendLimitAlert)
class SendLimitAlertAdmin(TenantScopedMixin, ReadOnlyMixin, admin.ModelAdmin):
    tenant_permissions = ("view", "acknowledge")
    list_display = ("account", "limit_name", "limit", "created", "last_refused", "refused", "acknowledged")
    list_filter = ("acknowledged", "limit_name")
    list_select_related = ("account__domain",)
    search_fields = ("account__localpart", "account__domain__name")
    ordering = ("-created",)
    actions = ("acknowledge",)
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        queryset, rest = search_by_address(queryset, search_term, prefix="account__")
        return super().get_search_results(request, queryset, rest)

    def has_acknowledge_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}") or self._tenant_may(
            request, "acknowledge"
        )

    @admin.action(description="Acknowledge the selected alerts", permissions=["acknowledge"])
    def acknowledge(self, request, queryset):
        with actions.channel("admin"):
            count = actions.acknowledge_send_limit_alerts(
                list(queryset.values_list("pk", flat=True)), acting_user=request.user
            )
        self.message_user(request, f"Acknowledged {count} alert(s).", messages.SUCCESS)


# Delegated administration: who administers which domain, and the audit log --------------


@admin.register(DomainAdmin)
class DomainAdminAdmin(ActionAdmin):
    """Superadmins appoint domain admins here (accounts.actions.grant_domain_admin)."""

    add_form = DomainAdminAddForm
    list_display = ("user", "domain", "created")
    list_select_related = ("user", "domain")
    search_fields = ("user__username", "domain__name")  # no domain filter: it would list every domain
    autocomplete_fields = ("user", "domain")
    readonly_fields = ("user", "domain", "created")

    def get_fields(self, request, obj=None):
        return ("user", "domain") if obj is None else self.readonly_fields

    def remove(self, request, obj):
        actions.revoke_domain_admin(obj.user.get_username(), obj.domain.name, acting_user=request.user)


class AuditChannelFilter(admin.SimpleListFilter):
    title = "through"
    parameter_name = "via"

    def lookups(self, request, model_admin):
        return (("admin", "admin"), ("api", "API"), ("cli", "command line"), ("webmail", "webmail"),
                ("-", "the system"))

    def queryset(self, request, queryset):
        if self.value() == "-":
            return queryset.filter(via="")
        return queryset.filter(via=self.value()) if self.value() else queryset


class AuditObjectFilter(admin.SimpleListFilter):
    """Kinds of object, listed without a DISTINCT scan of the log."""

    title = "object"
    parameter_name = "object_type"
    KINDS = ("domain", "domain_alias", "domain_admin", "account", "alias", "redirect", "sieve", "spam",
             "external", "api_token", "login_throttle", "send_limit_alert", "queue", "route")

    def lookups(self, request, model_admin):
        return [(kind, kind.replace("_", " ")) for kind in self.KINDS]

    def queryset(self, request, queryset):
        return queryset.filter(object_type=self.value()) if self.value() else queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(TenantScopedMixin, ReadOnlyMixin, admin.ModelAdmin):
    """Every administrative change, read-only; a domain admin sees their domains' entries."""

    tenant_permissions = ("view",)
    list_display = ("time", "actor_name", "via", "action", "object_repr", "domain_name")
    list_filter = (AuditObjectFilter, AuditChannelFilter, ("time", admin.DateFieldListFilter))
    search_fields = ("object_repr", "actor_name", "domain_name", "action")
    search_help_text = "The start of an address or domain, a user name, or an action such as account.create."
    fields = ("time", "actor_name", "actor", "via", "action", "object_type", "object_repr", "domain_name",
              "before_json", "after_json")
    readonly_fields = fields
    ordering = ("-time", "-id")
    paginator = CappedCountPaginator
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        # Prefix matches use the indexes; a free-text scan of a huge log would not.
        for term in search_term.split():
            term = term.lower()
            queryset = queryset.filter(
                Q(object_repr__startswith=term) | Q(actor_name=term) | Q(domain_name=_ascii_domain(term))
                | Q(action=term)
            )
        return queryset, False

    def _json(self, value):
        import json

        return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))

    @admin.display(description="before")
    def before_json(self, obj):
        return self._json(obj.before) if obj.before is not None else "-"

    @admin.display(description="after")
    def after_json(self, obj):
        return self._json(obj.after) if obj.after is not None else "-"
