"""Folders and messages in the admin, for looking only.

Writes to the mail store go through mailstore.actions (UIDs, MODSEQ, quota usage and
folder counters move together there), so these pages add, change and delete nothing.
Lists fetch what they show with the page (list_select_related) and never count the
whole table twice: there may be many millions of messages.
"""
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse

from accounts.admin import search_by_address
from mailsuite.admin_utils import ReadOnlyMixin
from mailsuite.lib.sizes import format_size
from mailstore.models import DEFAULT_FOLDERS, Blob, Folder, Message


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    show_full_result_count = False



class SpecialUseFilter(admin.SimpleListFilter):
    # Fixed choices: Django's default would scan every folder for its distinct values.
    title = "special use"
    parameter_name = "special_use"

    def lookups(self, request, model_admin):
        return [(use, use) for _, use in DEFAULT_FOLDERS if use] + [("none", "(none)")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            return queryset.filter(special_use="")
        if self.value():
            return queryset.filter(special_use=self.value())
        return queryset


@admin.register(Folder)
class FolderAdmin(ReadOnlyAdmin):
    list_display = ("account", "name", "special_use", "message_count", "unseen_count", "size", "subscribed")
    list_select_related = ("account__domain",)
    list_filter = (SpecialUseFilter, "subscribed")
    search_fields = ("name", "account__localpart", "account__domain__name")
    raw_id_fields = ("account",)
    fields = (
        "account",
        "name",
        "special_use",
        "subscribed",
        "message_count",
        "unseen_count",
        "size",
        "uidvalidity",
        "uidnext",
        "highestmodseq",
        "created",
    )
    readonly_fields = fields
    actions = ["dry_run_spam_filter"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account__domain")

    @admin.action(description="Run the folder through the spam filter (dry run)")
    def dry_run_spam_filter(self, request, queryset):
        folders = list(queryset[:2])
        if len(folders) != 1:
            self.message_user(request, "Choose one folder for a dry run.", messages.WARNING)
            return None
        folder = folders[0]
        query = urlencode({"account": folder.account.address, "folder": folder.name})
        return redirect(f"{reverse('antispam:admin_dry_run')}?{query}")

    def get_search_results(self, request, queryset, search_term):
        # "bob@example.com" finds that account's folders.
        queryset, rest = search_by_address(queryset, search_term, prefix="account__")
        return super().get_search_results(request, queryset, rest)

    @admin.display(description="size", ordering="total_size")
    def size(self, obj):
        return format_size(obj.total_size)


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    list_display = ("mailbox", "uid", "subject", "sender", "sent_date", "size_display", "flag_list")
    list_select_related = ("folder__account__domain",)
    list_filter = ("seen", "flagged", "deleted", "has_attachments")
    search_fields = ("subject", "from_address", "=message_id")
    # Newest first, by the primary key index: no sort over the whole table.
    ordering = ("-pk",)
    fields = (
        "mailbox",
        "uid",
        "modseq",
        "internaldate",
        "size_display",
        "flag_list",
        "sent_date",
        "from_display",
        "from_address",
        "to_display",
        "cc_display",
        "subject",
        "message_id",
        "has_attachments",
        "preview",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("folder__account__domain")

    @admin.display(description="mailbox", ordering="folder")
    def mailbox(self, obj):
        return f"{obj.folder.account} {obj.folder.name}"

    @admin.display(description="from", ordering="from_address")
    def sender(self, obj):
        return obj.from_display or obj.from_address

    @admin.display(description="size", ordering="size")
    def size_display(self, obj):
        return format_size(obj.size)

    @admin.display(description="flags")
    def flag_list(self, obj):
        return " ".join(obj.flags)

    @admin.display(description="preview")
    def preview(self, obj):
        # Only the preview: the blob row also holds the full search text.
        return Blob.objects.filter(pk=obj.blob_id).values_list("preview", flat=True).first() or ""
