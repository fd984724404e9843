"""Sieve scripts in the admin: every save and delete goes through sieve.actions, so the
admin checks scripts (errors at their line and column) exactly as ManageSieve does."""
from django import forms
from django.contrib import admin, messages
from django.db import router, transaction

from sieve import actions
from sieve.models import GlobalScript, SieveScript


class _ActionForm(forms.ModelForm):
    """Saving is a sieve.actions call made while the form validates (in a savepoint)."""

    def apply(self, data):
        raise NotImplementedError

    def _post_clean(self):
        if self._errors:
            return
        try:
            with transaction.atomic(using=router.db_for_write(self._meta.model)):
                self.instance = self.apply(self.cleaned_data)
        except actions.InvalidScript as error:
            self.add_error("text", str(error.error))
        except actions.InvalidName as error:
            self.add_error("name", str(error))
        except actions.SieveError as error:
            self.add_error(None, str(error))

    def save(self, commit=True):
        return self.instance

    def save_m2m(self):
        pass


class SieveScriptForm(_ActionForm):
    class Meta:
        model = SieveScript
        fields = ["account", "name", "text", "active"]
        widgets = {"text": forms.Textarea(attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"})}

    def apply(self, data):
        account = self.instance.account if self.instance.pk else data["account"]
        if self.instance.pk and self.instance.name != data["name"]:
            actions.rename_script(account, self.instance.name, data["name"])
        script = actions.put_script(account, data["name"], data["text"], activate=data["active"])
        if not data["active"] and script.active:
            actions.set_active(account, "")
            script.active = False
        return script


@admin.register(SieveScript)
class SieveScriptAdmin(admin.ModelAdmin):
    form = SieveScriptForm
    list_display = ("name", "account", "active", "updated")
    list_filter = ("active",)
    list_select_related = ("account__domain",)
    search_fields = ("name", "account__localpart", "account__domain__name")
    raw_id_fields = ("account",)
    actions = ["deactivate"]

    def get_readonly_fields(self, request, obj=None):
        return ("account",) if obj else ()

    def save_model(self, request, obj, form, change):
        pass  # the form's action saved it

    def delete_model(self, request, obj):
        if obj.active:
            actions.set_active(obj.account, "")
        actions.delete_script(obj.account, obj.name)

    def delete_queryset(self, request, queryset):
        for script in queryset.select_related("account"):
            self.delete_model(request, script)

    @admin.action(description="Deactivate (mail goes to INBOX)")
    def deactivate(self, request, queryset):
        for script in queryset.filter(active=True).select_related("account"):
            actions.set_active(script.account, "")
        self.message_user(request, "Deactivated.", messages.SUCCESS)


class GlobalScriptForm(_ActionForm):
    class Meta:
        model = GlobalScript
        fields = ["name", "position", "text"]
        widgets = {"text": forms.Textarea(attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"})}

    def apply(self, data):
        if self.instance.pk and self.instance.name != data["name"]:
            actions.delete_global_script(self.instance.name)
        return actions.set_global_script(data["name"], data["text"], position=data["position"])


@admin.register(GlobalScript)
class GlobalScriptAdmin(admin.ModelAdmin):
    form = GlobalScriptForm
    list_display = ("name", "position", "updated")
    search_fields = ("name",)

    def save_model(self, request, obj, form, change):
        pass

    def delete_model(self, request, obj):
        actions.delete_global_script(obj.name)

    def delete_queryset(self, request, queryset):
        for script in queryset:
            actions.delete_global_script(script.name)
