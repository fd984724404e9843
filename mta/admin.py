"""The outbound queue, mail routes, DKIM keys and inbound policies (greylisting) in the admin.

Implementation notes:
- The queue's rows are its truth and delivery workers own them: these pages never save
  a queue row themselves. The admin actions (retry now, hold, release, bounce, delete)
  are mta.actions calls; bounce and delete ask for confirmation first.
- The message list stays fast with 100,000 queued messages: filters, search, count and
  paging run on the bare message rows (filters are EXISTS subqueries, search scans the
  recipients once per term: no join, no DISTINCT), and the unfiltered total is not
  counted twice. Per-row figures (recipient counts by state, first recipient, next
  attempt, last error) are correlated subqueries added to the page's rows only, in the
  same query. Only cheap columns sort.
- A message's page shows its recipients and their attempts in two queries, capped.
- Routes (SmartHost rows: the smart host, transports, relay domains) are added and
  changed through forms whose saving is an mta.actions call. The AUTH password is
  write-only: no page, list or form ever shows it, not even encrypted.
"""
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from accounts import actions as account_actions
from accounts.admin import ActionAdmin, ActionForm, FieldRefusal, count_subquery
from accounts.errors import AccountsError
from accounts.models import Domain
from antispam import greylist
from mailsuite.admin_utils import ReadOnlyMixin
from mailsuite.lib.addresses import AddressError, display_domain, normalize_domain
from mailsuite.lib.sizes import format_size
from mta import actions, queue
from mta.dns_records import dkim_record, records_for
from mta.models import (
    DeliveryAttempt,
    DKIMKey,
    GreylistAllowedNetwork,
    GreylistTriplet,
    InboundPolicy,
    QueuedMessage,
    QueuedRecipient,
    SmartHost,
)

State = QueuedRecipient.State
SHOWN_RECIPIENTS = 200  # on a message's page; a list's expansion can have thousands
SHOWN_ATTEMPTS = 2000
DEFAULT_BOUNCE_REASON = "delivery cancelled by the mail administrator"


# Queue: filters ---------------------------------------------------------------------


def _recipients_of_row():
    return QueuedRecipient.objects.filter(message=OuterRef("pk"))


def _stored_domain(text):
    """Domains are stored in ASCII: let an operator type bücher.example as written."""
    try:
        return normalize_domain(text)
    except AddressError:
        return text.strip().lower()


def _first(field, rows, *order):
    """`field` of the first of `rows` in `order`, as a correlated subquery."""
    return Subquery(rows.order_by(*order).values(field)[:1])


class RecipientStateFilter(admin.SimpleListFilter):
    """Messages with at least one recipient in the state (an EXISTS, no join)."""

    title = "recipient state"
    parameter_name = "state"
    STATES = {
        "pending": ("pending (queued or deferred)", actions.PENDING),
        "queued": ("queued", (State.QUEUED,)),
        "deferred": ("deferred", (State.DEFERRED,)),
        "held": ("held", (State.HELD,)),
        "bounced": ("bounced", (State.BOUNCED,)),
        "delivered": ("delivered", (State.DELIVERED,)),
    }

    def lookups(self, request, model_admin):
        return [(value, title) for value, (title, _) in self.STATES.items()]

    def queryset(self, request, queryset):
        if self.value() not in self.STATES:
            return queryset
        return queryset.filter(Exists(_recipients_of_row().filter(state__in=self.STATES[self.value()][1])))


class DestinationFilter(admin.SimpleListFilter):
    """Messages with a recipient in the domain. Offers the domains with most unfinished
    recipients (one grouped query); any other is reachable as ?domain=NAME."""

    title = "destination domain"
    parameter_name = "domain"
    OFFERED = 20
    LOCAL = "-"

    def lookups(self, request, model_admin):
        busiest = (
            QueuedRecipient.objects.filter(state__in=actions.UNFINISHED)
            .order_by()
            .values("domain")
            .annotate(n=Count("pk"))
            .order_by("-n", "domain")[: self.OFFERED]
        )
        return [
            (row["domain"] or self.LOCAL, f"{display_domain(row['domain']) if row['domain'] else 'local mailboxes'} "
                                          f"({row['n']})")
            for row in busiest
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        domain = "" if value == self.LOCAL else _stored_domain(value)
        return queryset.filter(Exists(_recipients_of_row().filter(domain=domain)))


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    AGES = {
        "lt1h": ("less than an hour", None, 3600),
        "gt1h": ("more than an hour", 3600, None),
        "gt1d": ("more than a day", 86400, None),
        "gt3d": ("more than 3 days", 3 * 86400, None),
    }

    def lookups(self, request, model_admin):
        return [(value, title) for value, (title, _, _) in self.AGES.items()]

    def queryset(self, request, queryset):
        if self.value() not in self.AGES:
            return queryset
        _, older, younger = self.AGES[self.value()]
        now = queue.now()
        if older is not None:
            queryset = queryset.filter(created__lte=now - timedelta(seconds=older))
        if younger is not None:
            queryset = queryset.filter(created__gt=now - timedelta(seconds=younger))
        return queryset


# Queue: confirmation pages ----------------------------------------------------------

CONFIRM_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block title %}{{ title }} | {{ site_title }}{% endblock %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{{ index_url }}">Home</a> &rsaquo;
<a href="{{ changelist_url }}">{{ opts.verbose_name_plural|capfirst }}</a> &rsaquo; {{ title }}</div>{% endblock %}
{% block content %}
<form method="post">{% csrf_token %}
<p>{{ question }}</p>
<ul>{% for message in shown %}<li>{{ message.queue_id }} from &lt;{{ message.mail_from }}&gt;
({{ message.recipient_count }} recipient{{ message.recipient_count|pluralize }})</li>{% endfor %}
{% if more %}<li>and {{ more }} more</li>{% endif %}</ul>
{% if form %}<fieldset class="module aligned">{{ form.as_div }}</fieldset>{% endif %}
{% for pk in selected %}<input type="hidden" name="_selected_action" value="{{ pk }}">{% endfor %}
<input type="hidden" name="action" value="{{ action }}">
<input type="hidden" name="select_across" value="{{ select_across }}">
<input type="hidden" name="confirm" value="yes">
<div class="submit-row"><input type="submit" value="{{ submit }}" class="default">
<a href="{{ changelist_url }}" class="button cancel-link">Cancel</a></div>
</form>
{% endblock %}
"""


class BounceForm(forms.Form):
    reason = forms.CharField(
        max_length=actions.MAX_REASON,
        initial=DEFAULT_BOUNCE_REASON,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="One line; the sender reads it in the failure notice (status 5.0.0).",
    )


# Queue: the message list and page ----------------------------------------------------


def with_row_figures(queryset):
    """What a row of the list shows, as correlated subqueries: each is an index lookup by
    message, so apply this to a page of rows, never to the whole queue."""
    recipients = _recipients_of_row()
    pending = recipients.filter(state__in=actions.PENDING)
    return queryset.annotate(
        recipient_count=count_subquery(recipients),
        pending_count=count_subquery(pending),
        held_count=count_subquery(recipients.filter(state=State.HELD)),
        bounced_count=count_subquery(recipients.filter(state=State.BOUNCED)),
        first_address=_first("address", recipients, "pk"),
        max_attempts=_first("attempts", recipients, "-attempts"),
        next_attempt_at=_first("next_attempt_at", pending, "next_attempt_at"),
        latest_error=_first("last_error", recipients.exclude(last_error=""), "-attempts", "-pk"),
        # The blob's size without loading the blob row (it holds the message's search text).
        blob_size=F("blob__size"),
    )


class QueueChangeList(ChangeList):
    """Filters, search, count and paging work on the bare messages; the row figures are
    added to the page's rows only, by id. (Annotating the paged query would make
    PostgreSQL compute them for every row an OFFSET skips too; and the page's ids as an
    IN subquery get a poor plan when a search leaves a handful of rows.)"""

    def get_results(self, request):
        super().get_results(request)
        page = self.result_list
        ids = list(page.values_list("pk", flat=True))
        self.result_list = with_row_figures(QueuedMessage.objects.filter(pk__in=ids)).order_by(*page.query.order_by)


@admin.register(QueuedMessage)
class QueuedMessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "queue_id", "sender", "first_recipient", "states", "attempts", "next_attempt", "last_error",
        "size", "age", "received_from",
    )
    list_filter = (RecipientStateFilter, DestinationFilter, AgeFilter, "smtputf8")
    search_help_text = "A queue id, or part of a sender or recipient address."
    # Newest first, by the primary key index.
    ordering = ("-pk",)
    show_full_result_count = False
    actions = ("retry_now", "hold", "release", "bounce", "delete_messages")
    fields = (
        "queue_id", "sender", "size", "smtputf8", "received_from", "created", "expires_at", "envid", "ret",
        "recipients_and_attempts",
    )
    readonly_fields = fields
    # A search box without search_fields: get_search_results below does the searching.
    search_fields = ("queue_id",)

    def get_changelist(self, request, **kwargs):
        return QueueChangeList

    def get_object(self, request, object_id, from_field=None):
        # A message's page shows the same figures as its row, from the same one query.
        if from_field is not None:
            return super().get_object(request, object_id, from_field)
        try:
            return with_row_figures(self.get_queryset(request)).get(pk=self.opts.pk.to_python(object_id))
        except (QueuedMessage.DoesNotExist, ValidationError, ValueError):
            return None

    def get_search_results(self, request, queryset, search_term):
        # Each term: a queue id exactly, or part of the sender or of a recipient. The
        # recipients are scanned once per term (IN), not once per message (EXISTS under OR).
        for term in search_term.split():
            recipients = QueuedRecipient.objects.filter(address__icontains=term).values("message_id")
            queryset = queryset.filter(
                Q(queue_id=term.upper()) | Q(mail_from__icontains=term) | Q(pk__in=recipients)
            )
        return queryset, False

    # Columns

    @admin.display(description="from", ordering="mail_from")
    def sender(self, obj):
        return f"<{obj.mail_from}>"

    @admin.display(description="to")
    def first_recipient(self, obj):
        if obj.first_address is None:
            return "-"
        more = obj.recipient_count - 1
        return f"<{obj.first_address}>" + (f" and {more} more" if more else "")

    @admin.display(description="recipients")
    def states(self, obj):
        delivered = obj.recipient_count - obj.pending_count - obj.held_count - obj.bounced_count
        parts = [
            (obj.pending_count, "pending"), (obj.held_count, "held"),
            (obj.bounced_count, "bounced"), (delivered, "delivered"),
        ]
        return ", ".join(f"{n} {word}" for n, word in parts if n) or "none"

    @admin.display(description="attempts")
    def attempts(self, obj):
        return obj.max_attempts or 0

    @admin.display(description="next attempt")
    def next_attempt(self, obj):
        if obj.next_attempt_at is None:
            return "-"
        now = queue.now()
        return "now" if obj.next_attempt_at <= now else f"in {timesince(now, obj.next_attempt_at, depth=1)}"

    @admin.display(description="last error")
    def last_error(self, obj):
        text = " ".join((obj.latest_error or "").split())
        return text[:99] + "…" if len(text) > 100 else text or "-"

    @admin.display(description="size")
    def size(self, obj):
        return format_size(obj.blob_size)

    @admin.display(description="age", ordering="created")
    def age(self, obj):
        return timesince(obj.created, queue.now(), depth=2)

    @admin.display(description="recipients and attempts")
    def recipients_and_attempts(self, obj):
        recipients = list(obj.recipients.select_related("local_account__domain").order_by("pk")[:SHOWN_RECIPIENTS])
        attempts = {}
        tries = DeliveryAttempt.objects.filter(recipient__in=[r.pk for r in recipients])
        for attempt in tries.order_by("recipient_id", "started", "pk")[:SHOWN_ATTEMPTS]:
            attempts.setdefault(attempt.recipient_id, []).append(attempt)
        rows = []
        for r in recipients:
            rows.append(format_html(
                "<tr><td><strong>{}</strong>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.address, f" (mailbox of {r.local_account})" if r.local_account_id else "",
                r.state, r.attempts,
                _time(r.next_attempt_at) if r.state in actions.PENDING else "-",
                r.status or "-", r.last_error or "-",
            ))
            rows += [
                format_html(
                    '<tr><td style="padding-left:2em">{}</td><td>{}</td><td colspan="3">{}</td><td>{}</td></tr>',
                    _time(attempt.started), attempt.outcome, attempt.host or "-", attempt.reply or "-",
                )
                for attempt in attempts.get(r.pk, [])
            ]
        shown = len(recipients)
        note = ""
        if shown < obj.recipient_count:
            note = format_html("<p>The first {} of {} recipients.</p>", shown, obj.recipient_count)
        return format_html(
            "<table><thead><tr><th>recipient / attempt time</th><th>state / outcome</th><th>attempts</th>"
            "<th>next attempt / host</th><th>status</th><th>last error / reply</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            mark_safe("".join(rows)) if rows else mark_safe('<tr><td colspan="6">none</td></tr>'), note,
        )

    # Actions: every change is an mta.actions call.

    def has_manage_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def has_remove_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.delete_{self.opts.model_name}")

    @staticmethod
    def _ids(queryset):
        return list(queryset.order_by().values_list("pk", flat=True))

    def _run(self, request, change, done):
        try:
            with account_actions.channel("admin"):
                count = change()
        except AccountsError as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        level = messages.SUCCESS if count else messages.WARNING
        self.message_user(request, done(count), level)

    @admin.action(description="Retry the selected messages now", permissions=["manage"])
    def retry_now(self, request, queryset):
        self._run(request, lambda: actions.retry_now(message_ids=self._ids(queryset), acting_user=request.user),
                  lambda n: f"{n} recipient(s) will be tried now (held ones need release).")

    @admin.action(description="Hold the selected messages", permissions=["manage"])
    def hold(self, request, queryset):
        self._run(request, lambda: actions.hold(message_ids=self._ids(queryset), acting_user=request.user),
                  lambda n: f"Held {n} recipient(s).")

    @admin.action(description="Release the selected messages", permissions=["manage"])
    def release(self, request, queryset):
        self._run(request, lambda: actions.release(message_ids=self._ids(queryset), acting_user=request.user),
                  lambda n: f"Released {n} recipient(s); they will be tried now.")

    @admin.action(description="Bounce the selected messages to their senders", permissions=["manage"])
    def bounce(self, request, queryset):
        form = BounceForm(request.POST if "confirm" in request.POST else None)
        if not form.is_valid():
            return self._confirm(
                request, queryset, "bounce", form=form, title="Bounce messages", submit="Bounce them",
                question="Give up on the unfinished recipients of these messages and send each sender a "
                "failure notice?",
            )
        reason = form.cleaned_data["reason"]
        self._run(request, lambda: actions.bounce(message_ids=self._ids(queryset), reason=reason, acting_user=request.user),
                  lambda n: f"Bounced {n} recipient(s); their senders are told.")

    @admin.action(description="Delete the selected messages from the queue", permissions=["remove"])
    def delete_messages(self, request, queryset):
        if "confirm" not in request.POST:
            return self._confirm(
                request, queryset, "delete_messages", title="Delete queued messages", submit="Delete them",
                question="Remove these messages from the queue? Nobody is told; undelivered recipients never get them.",
            )
        self._run(request, lambda: actions.delete_messages(self._ids(queryset), acting_user=request.user),
                  lambda n: f"Deleted {n} message(s) from the queue.")

    @cached_property
    def _confirm_template(self):
        return engines["django"].from_string(CONFIRM_TEMPLATE)

    def _confirm(self, request, queryset, action, *, title, question, submit, form=None):
        shown = list(with_row_figures(queryset)[:20])
        total = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "index_url": reverse(f"{self.admin_site.name}:index"),
            "changelist_url": request.get_full_path(),
            "question": question,
            "shown": shown,
            "more": max(total - len(shown), 0),
            "form": form,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action": action,
            "select_across": "1" if request.POST.get("select_across") == "1" else "0",
            "submit": submit,
        }
        return TemplateResponse(request, self._confirm_template, context)


def _time(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


# Routes: smart host, transports, relay domains ---------------------------------------

KINDS = (
    ("smarthost", "Smart host: all mail for other domains goes through this server"),
    ("transport", "Transport: mail for the domain goes to this server instead of its MX hosts"),
    ("relay", "Relay domain: accept mail for the domain from anyone and pass it to this server"),
)
KIND_NAMES = {"smarthost": "smart host", "transport": "transport", "relay": "relay domain"}
TLS_CHOICES = (
    ("", "automatic: TLS from the first byte on port 465, STARTTLS required with a username, else when offered"),
    *SmartHost.TLS.choices,
)


class RouteForm(ActionForm):
    """A route's next hop and login; saving is an mta.actions call (see apply())."""

    tls = forms.ChoiceField(label="TLS", choices=TLS_CHOICES, required=False)
    auth_password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="For SMTP AUTH with the username above. Never shown; leave empty to keep the stored one.",
    )
    recipients = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text="Relay domains with verification 'only the listed recipients': one address a line.",
    )

    class Meta:
        model = SmartHost
        fields = ("host", "port", "tls", "verify_certificate", "username", "verify_recipients", "recipients")
        labels = {"verify_recipients": "Recipient verification"}
        help_texts = {
            "host": "A host name or IP address.",
            "verify_recipients": "Relay domains only.",
            "username": "Empty: no SMTP AUTH.",
        }

    def route_arguments(self, data):
        return {
            "tls": data.get("tls") or None,
            "verify_certificate": data.get("verify_certificate", False),
            "username": data.get("username", ""),
            "password": data.get("auth_password") or None,
        }

    def relay_arguments(self, data):
        verify = data.get("verify_recipients") or SmartHost.Verify.NONE
        listed = data.get("recipients", "") if verify == SmartHost.Verify.LIST else ()
        return {"verify_recipients": verify, "recipients": listed}

    def save_route(self, kind, domain, data, *, replace):
        host, port = data["host"], data["port"]
        if kind == "smarthost":
            return actions.set_smarthost(
                host, port, replace=replace, **self.route_arguments(data), acting_user=self.acting_user
            )
        if kind == "transport":
            return actions.set_transport(
                domain, host, port, replace=replace, **self.route_arguments(data), acting_user=self.acting_user
            )
        return actions.add_relay_domain(
            domain, host, port, replace=replace, **self.relay_arguments(data), **self.route_arguments(data),
            acting_user=self.acting_user,
        )


class RouteAddForm(RouteForm):
    kind = forms.ChoiceField(choices=KINDS, initial="smarthost", widget=forms.RadioSelect)
    domain = forms.CharField(
        required=False, max_length=253, help_text="For a transport or relay domain; empty for the smart host."
    )

    class Meta(RouteForm.Meta):
        fields = ("domain", *RouteForm.Meta.fields)

    def apply(self, data):
        kind, domain = data["kind"], data.get("domain", "").strip()
        if kind == "smarthost" and domain:
            raise FieldRefusal("domain", "A smart host is for all domains: leave the domain empty.")
        if kind != "smarthost" and not domain:
            raise FieldRefusal("domain", f"Give the domain this {KIND_NAMES[kind]} is for.")
        return self.save_route(kind, domain, data, replace=False)


class RouteChangeForm(RouteForm):
    def apply(self, data):
        route = self.instance
        return self.save_route(actions.route_kind(route), route.domain, data, replace=True)


class RouteKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return list(KIND_NAMES.items())

    def queryset(self, request, queryset):
        if self.value() == "smarthost":
            return queryset.filter(domain="")
        if self.value() == "transport":
            return queryset.exclude(domain="").filter(accept_relay=False)
        if self.value() == "relay":
            return queryset.exclude(domain="").filter(accept_relay=True)
        return queryset


@admin.register(SmartHost)
class SmartHostAdmin(ActionAdmin):
    add_form = RouteAddForm
    change_form = RouteChangeForm
    list_display = ("route_domain", "kind", "next_hop", "tls", "verify_certificate", "auth", "verification")
    list_filter = (RouteKindFilter, "tls")
    search_fields = ("domain", "host")
    ordering = ("domain",)
    show_full_result_count = True  # routes are few
    readonly_fields = ("route_domain", "kind")
    connection_fields = ("host", "port", "tls", "verify_certificate", "username", "auth_password")
    relay_fields = ("verify_recipients", "recipients")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("kind", "domain", *self.connection_fields, *self.relay_fields)
        fields = ("route_domain", "kind", *self.connection_fields)
        return fields + self.relay_fields if actions.route_kind(obj) == "relay" else fields

    def get_queryset(self, request):
        # The encrypted password is not even loaded for these pages.
        return super().get_queryset(request).defer("password")

    def get_search_results(self, request, queryset, search_term):
        search_term = " ".join(_stored_domain(term) if "." in term else term for term in search_term.split())
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(self, request, extra_context=None):
        if settings.MAILSUITE_RELAYHOST and not SmartHost.objects.filter(domain="").exists():
            self.message_user(
                request, f"No smart host is set here, so MAILSUITE_RELAYHOST ({settings.MAILSUITE_RELAYHOST}) is used.",
                messages.INFO,
            )
        return super().changelist_view(request, extra_context)

    @admin.display(description="domain", ordering="domain")
    def route_domain(self, obj):
        if not obj.domain:
            return "* (all other domains)"
        shown = display_domain(obj.domain)
        return shown if shown == obj.domain else f"{shown} ({obj.domain})"

    @admin.display(description="kind")
    def kind(self, obj):
        return KIND_NAMES[actions.route_kind(obj)]

    @admin.display(description="next hop", ordering="host")
    def next_hop(self, obj):
        return actions.format_next_hop(obj.host, obj.port)

    @admin.display(description="AUTH")
    def auth(self, obj):
        return f"as {obj.username}" if obj.username else "-"

    @admin.display(description="recipient verification")
    def verification(self, obj):
        if actions.route_kind(obj) != "relay":
            return "-"
        if obj.verify_recipients == SmartHost.Verify.LIST:
            return f"listed ({len(obj.recipients.splitlines())})"
        return obj.get_verify_recipients_display()

    def remove(self, request, obj):
        if obj.domain:
            actions.remove_route(obj.domain, acting_user=request.user)
        else:
            actions.clear_smarthost(acting_user=request.user)


# DKIM keys --------------------------------------------------------------------------


@admin.register(DKIMKey)
class DKIMKeyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """DKIM keys, for looking only: they change through `manage.py domain dkim` (mta.dkim).

    A private key is never shown, nor even loaded for these pages. Each key's page shows
    its DNS record; every row links to all the records of its domain as a zone file in
    plain text (MX, SPF, DKIM, DMARC), ready to paste.
    """

    list_display = ("selector", "domain", "algorithm", "state", "created", "activated", "retired", "domain_dns")
    list_filter = (("domain", admin.RelatedOnlyFieldListFilter), "state", "algorithm")
    list_select_related = ("domain",)
    search_fields = ("selector", "domain__name")
    ordering = ("domain__name", "-created", "selector")
    fields = ("domain", "selector", "algorithm", "state", "created", "activated", "retired", "dns_record", "domain_dns")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("private_key")

    def get_urls(self):
        dns = path(
            "dns/<int:domain_id>/", self.admin_site.admin_view(self.dns_view), name="mta_dkimkey_dns"
        )
        return [dns, *super().get_urls()]

    def dns_view(self, request, domain_id):
        """The domain's DNS records as zone-file lines, text/plain."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        domain = get_object_or_404(Domain, pk=domain_id)
        try:
            records = records_for(
                domain, hostname=settings.MAILSUITE_HOSTNAME, relayhost=settings.MAILSUITE_RELAYHOST
            )
        except AccountsError as error:
            return HttpResponse(f"; {error}\n", content_type="text/plain; charset=utf-8", status=409)
        text = "".join(record.zone_line() + "\n" for record in records)
        return HttpResponse(text, content_type="text/plain; charset=utf-8")

    @admin.display(description="DNS record")
    def dns_record(self, obj):
        return dkim_record(obj, obj.domain.name).zone_line(comment=False)

    @admin.display(description="DNS records")
    def domain_dns(self, obj):
        url = reverse(f"{self.admin_site.name}:mta_dkimkey_dns", args=[obj.domain_id])
        return format_html('<a href="{}">all records of {}</a>', url, obj.domain)


# Inbound policies and greylisting ---------------------------------------------------


class InboundPolicyForm(ActionForm):
    class Meta:
        model = InboundPolicy
        fields = ("domain", "greylisting", "attachments")

    def apply(self, data):
        domain = data.get("domain") or self.instance.domain
        return actions.set_inbound_policy(domain, greylisting=data["greylisting"], attachments=data["attachments"])


class InboundPolicyChangeForm(InboundPolicyForm):
    class Meta(InboundPolicyForm.Meta):
        fields = ("greylisting", "attachments")


@admin.register(InboundPolicy)
class InboundPolicyAdmin(ActionAdmin):
    """Per-domain greylisting and attachment policy; a domain without a row uses the defaults."""

    add_form = InboundPolicyForm
    change_form = InboundPolicyChangeForm
    list_display = ("domain", "greylisting", "attachment_policy")
    list_filter = ("greylisting", "attachments")
    list_select_related = ("domain",)
    search_fields = ("domain__name",)
    ordering = ("domain__name",)
    autocomplete_fields = ("domain",)
    readonly_fields = ("domain",)

    @admin.display(description="dangerous attachments", ordering="attachments")
    def attachment_policy(self, obj):
        if obj.attachments:
            return obj.get_attachments_display()
        return f"server default ({settings.MAILSUITE_ATTACHMENT_POLICY})"

    def remove(self, request, obj):
        actions.remove_inbound_policy(obj.domain)


@admin.register(GreylistTriplet)
class GreylistTripletAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """What greylisting has seen lately; the SMTP server alone writes these rows."""

    list_display = ("network", "sender", "recipient", "first_seen", "last_seen", "attempts", "passed_at", "expires_at")
    list_filter = (("passed_at", admin.EmptyFieldListFilter),)
    search_fields = ("=network", "sender", "recipient")
    ordering = ("-last_seen",)
    show_full_result_count = False


class AllowedNetworkForm(ActionForm):
    days = forms.IntegerField(
        required=False, min_value=1, help_text="Leave empty to allow the network until it is removed",
    )

    class Meta:
        model = GreylistAllowedNetwork
        fields = ("network", "reason")

    def apply(self, data):
        return greylist.allow_network(data["network"], reason=data.get("reason", ""), days=data.get("days"))


@admin.register(GreylistAllowedNetwork)
class GreylistAllowedNetworkAdmin(ActionAdmin):
    """Networks that skip greylisting: auto-allowed after a passed retry, or added here."""

    add_form = AllowedNetworkForm
    list_display = ("network", "expires_at", "reason", "created")
    list_filter = (("expires_at", admin.EmptyFieldListFilter),)
    search_fields = ("=network", "reason")
    ordering = ("network",)

    def remove(self, request, obj):
        greylist.disallow_network(obj.network)
