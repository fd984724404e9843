"""The outbound queue in the admin, for looking only.

The queue's rows are its truth and delivery workers own them; changes go through
mta.queue, never through these pages. Counts come from one annotated query per page.
"""
from django.contrib import admin
from django.db.models import F, OuterRef

from accounts.admin import count_subquery
from mailsuite.admin_utils import ReadOnlyMixin
from mailsuite.lib.sizes import format_size
from mta.models import QueuedMessage, QueuedRecipient

PENDING = (QueuedRecipient.State.QUEUED, QueuedRecipient.State.DEFERRED, QueuedRecipient.State.HELD)


class QueuedRecipientInline(ReadOnlyMixin, admin.TabularInline):
    model = QueuedRecipient
    fields = ("address", "state", "attempts", "next_attempt_at", "last_error", "local_account")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("local_account__domain")



@admin.register(QueuedMessage)
class QueuedMessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    inlines = (QueuedRecipientInline,)
    list_display = ("queue_id", "sender", "recipient_count", "pending_count", "size", "received_from", "created")
    list_filter = ("recipients__state", "smtputf8")
    search_fields = ("=queue_id", "mail_from", "recipients__address")
    # Newest first, by the primary key index.
    ordering = ("-pk",)
    show_full_result_count = False
    fields = ("queue_id", "sender", "size", "smtputf8", "received_from", "created")
    readonly_fields = fields

    def get_queryset(self, request):
        # Counts in the page's one query; the blob's size without loading the blob row
        # (it holds the message's search text).
        recipients = QueuedRecipient.objects.filter(message=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                recipient_count=count_subquery(recipients),
                pending_count=count_subquery(recipients.filter(state__in=PENDING)),
                blob_size=F("blob__size"),
            )
        )


    @admin.display(description="from", ordering="mail_from")
    def sender(self, obj):
        return f"<{obj.mail_from}>"

    @admin.display(description="recipients", ordering="recipient_count")
    def recipient_count(self, obj):
        return obj.recipient_count

    @admin.display(description="pending", ordering="pending_count")
    def pending_count(self, obj):
        return obj.pending_count

    @admin.display(description="size", ordering="blob_size")
    def size(self, obj):
        return format_size(obj.blob_size)


# DKIM keys --------------------------------------------------------------------------
# Imported here rather than at the top: this part was added after the queue's.

from django.conf import settings  # noqa: E402
from django.core.exceptions import PermissionDenied  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.shortcuts import get_object_or_404  # noqa: E402
from django.urls import path, reverse  # noqa: E402
from django.utils.html import format_html  # noqa: E402

from accounts.errors import AccountsError  # noqa: E402
from accounts.models import Domain  # noqa: E402
from mta.dns_records import dkim_record, records_for  # noqa: E402
from mta.models import DKIMKey  # noqa: E402


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
