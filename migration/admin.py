from django.contrib import admin

from migration.models import ExternalAccount


@admin.register(ExternalAccount)
class ExternalAccountAdmin(admin.ModelAdmin):
    """Read and switch on/off here; credentials are set through the CLI (mail fetch-add),
    which encrypts them (migration.fetching.add_external_account)."""

    list_display = ("account", "protocol", "username", "host", "port", "enabled", "last_success", "failures", "last_error")
    list_filter = ("protocol", "enabled")
    list_select_related = ("account", "account__domain")
    search_fields = ("username", "host", "account__localpart")
    raw_id_fields = ("account",)
    readonly_fields = ("password", "last_attempt", "last_success", "last_error", "failures", "next_attempt")
    list_editable = ("enabled",)
