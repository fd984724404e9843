from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils.html import format_html

from accounts.actions import channel
from mailsuite.lib.sizes import format_size
from migration import actions, fetching
from migration.models import ExternalAccount, TransferJob


class ExternalAccountForm(forms.ModelForm):
    """The stored password is never sent to the browser: a new one may be typed in, and it
    is stored encrypted, as the webmail and the CLI store it."""

    new_password = forms.CharField(
        label="Password", required=False, strip=False, max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown. Leave empty to keep the current one.",
    )

    class Meta:
        model = ExternalAccount
        exclude = ("password",)

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("new_password") and not self.instance.password:
            self.add_error("new_password", "An external account needs the remote password.")
        account = cleaned.get("account") or (self.instance.account if self.instance.pk else None)
        settings = {name: cleaned.get(name) for name in ("protocol", "host", "username", "port", "tls", "local_folder")}
        if account is not None and None not in settings.values():  # else a field's own error says what is wrong
            try:
                fetching.check_settings(account, **settings)
            except fetching.ExternalAccountError as error:
                self.add_error(error.field, str(error))
        return cleaned


@admin.register(ExternalAccount)
class ExternalAccountAdmin(admin.ModelAdmin):
    """Added and edited here, in the webmail or with the CLI (mail fetch-add); the password
    field is write-only (migration.fetching.set_password encrypts it)."""

    form = ExternalAccountForm
    list_display = ("account", "protocol", "username", "host", "port", "enabled", "last_success", "failures", "last_error")
    list_filter = ("protocol", "enabled")
    list_select_related = ("account", "account__domain")
    search_fields = ("username", "host", "account__localpart")
    raw_id_fields = ("account",)
    readonly_fields = ("password_state", "last_attempt", "last_success", "last_error", "failures", "next_attempt")
    list_editable = ("enabled",)

    @admin.display(description="stored password")
    def password_state(self, external):
        return "set (encrypted)" if external.password else "none"

    def get_readonly_fields(self, request, obj=None):
        # Mail is fetched into one account for good: another account means another external one.
        return self.readonly_fields + (("account",) if obj is not None else ())

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        password = form.cleaned_data.get("new_password")
        if change:
            # The form has set its values on obj: the stored row is what changes (and what
            # the audit log's "before" shows). The list's editable column has no password.
            stored = ExternalAccount.objects.select_related("account__domain").get(pk=obj.pk)
            changes = {name: getattr(obj, name) for name in form.changed_data if name in fetching.EDITABLE}
            with channel("admin"):
                fetching.update_external_account(stored, acting_user=request.user, password=password, **changes)
            return
        with channel("admin"):
            external = fetching.add_external_account(
                obj.account, acting_user=request.user, password=password,
                **{name: getattr(obj, name) for name in fetching.EDITABLE},
            )
        # The admin goes on with obj (its log entry, the page it redirects to): it is that row now.
        obj.pk, obj.password, obj._state = external.pk, external.password, external._state

    def delete_model(self, request, obj):
        with channel("admin"):
            fetching.remove_external_account(obj, acting_user=request.user)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for external in queryset.select_related("account__domain"):
            self.delete_model(request, external)


@admin.register(TransferJob)
class TransferJobAdmin(admin.ModelAdmin):
    """Imports, exports and migrations with their progress. Jobs are started from the CLI
    (`mail import|export|migrate --background`) or the webmail; here they are watched,
    cancelled and resumed (migration.actions)."""

    list_display = ("id", "account", "kind", "state", "progress", "messages", "already", "size", "label_or_source",
                    "created", "finished")
    list_filter = ("state", "kind")
    list_select_related = ("account", "account__domain")
    search_fields = ("account__localpart", "account__domain__name", "label", "source")
    raw_id_fields = ("account",)
    date_hierarchy = "created"
    ordering = ("-created",)
    actions = ("cancel", "resume")
    fields = ("account", "kind", "state", "progress", "label", "source", "folder", "options", "messages", "already",
              "size", "skipped", "cancel_requested", "error", "report", "created", "started", "finished", "updated")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # a job needs a file or a password: started from the CLI or the webmail

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, job):
        if job.percent is None:
            return "…" if job.active else ""
        return format_html('<progress max="100" value="{}">{}%</progress> {}%', job.percent, job.percent, job.percent)

    @admin.display(description="size", ordering="bytes")
    def size(self, job):
        return format_size(job.bytes)

    @admin.display(description="what")
    def label_or_source(self, job):
        return job.label or job.source

    @admin.action(description="Cancel the selected jobs (they stop before their next message)")
    def cancel(self, request, queryset):
        jobs = [actions.cancel_job(job) for job in queryset if job.active]
        self.message_user(request, f"{len(jobs)} jobs cancelled or stopping", messages.SUCCESS)

    @admin.action(description="Resume the selected failed or cancelled jobs")
    def resume(self, request, queryset):
        resumed, refused = 0, []
        for job in queryset:
            try:
                actions.resume_job(job)
                resumed += 1
            except actions.TransferError as error:
                refused.append(str(error))
        self.message_user(request, f"{resumed} jobs queued again", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)
