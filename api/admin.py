"""API tokens in the admin: listed (never their secret) and revoked; made with
`manage.py apitoken create`, which shows the token once."""
from django.contrib import admin, messages

from accounts.actions import channel
from api import actions
from api.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("token_prefix", "user", "name", "scope_list", "expires", "last_used", "created")
    list_select_related = ("user",)
    search_fields = ("prefix", "user__username", "name")
    fields = ("token_prefix", "user", "name", "scope_list", "expires", "last_used", "created")
    readonly_fields = fields
    actions = ("revoke",)

    def has_add_permission(self, request):
        return False  # the token is shown once, by `manage.py apitoken create`

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # revoke (audited) instead

    def has_revoke_permission(self, request):
        return request.user.is_superuser

    @admin.display(description="token")
    def token_prefix(self, obj):
        return f"ms_{obj.prefix}_…"

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke(self, request, queryset):
        prefixes = list(queryset.values_list("prefix", flat=True))
        with channel("admin"):
            for prefix in prefixes:
                actions.revoke_token(prefix, acting_user=request.user)
        self.message_user(request, f"Revoked {len(prefixes)} token(s).", messages.SUCCESS)
