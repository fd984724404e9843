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
