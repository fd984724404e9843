"""The content filter in the admin: thresholds and allow/block lists per domain (and per
account), the verdicts stored with messages, and what each Bayes filter has learned.

Saving a threshold row or a list entry is an accounts.actions call (set_spam_thresholds,
add_spam_list_entry: scoped and audited, over antispam.actions); the form runs it after
the model's own checks, inside the admin's transaction, so a refusal shows as a form
error. Verdicts and Bayes counts are read-only: the filter owns them.

Domain admins (delegated administration, accounts.admin.TenantScopedMixin) see and change
the thresholds and lists of their domains and of their domains' accounts, the actions
checking the same rule again; verdicts and Bayes counts stay the superusers'.

The dry run of a folder through the filter is the page /admin/antispam/dry-run/
(antispam.admin_views; also an action of the folder list, and open to domain admins for
their domains) and `manage.py spam check ACCOUNT FOLDER`.
"""
from django import forms
from django.contrib import admin

from accounts import actions as account_actions
from accounts.admin import TenantScopedMixin
from accounts.errors import AccountsError
from accounts.models import Account
from antispam import actions
from antispam.models import BayesCorpus, ListEntry, SpamSettings, Verdict


class _ActionForm(forms.ModelForm):
    """Saved by accounts.actions (scoped to what acting_user administers, and audited as
    made through the admin), which call antispam.actions."""

    acting_user = None  # set per request by the admin (get_form)

    def run(self):
        raise NotImplementedError

    def _post_clean(self):
        super()._post_clean()  # the model's own checks (one row per domain...) first
        if not self.errors:
            try:
                with account_actions.channel("admin"):
                    self.saved = self.run()
            except (AccountsError, actions.SpamSettingsError) as error:
                self.add_error(None, str(error))

    def save(self, commit=True):
        self.save_m2m = lambda: None
        return self.saved

    def scope(self, domain, account):
        """accounts.actions' names for a row's scope: a domain name or an account address."""
        return {"domain": domain.name if domain else None, "account": account.address if account else None}


class SpamSettingsForm(_ActionForm):
    class Meta:
        model = SpamSettings
        fields = ("domain", "account", "tag_threshold", "junk_threshold", "reject_threshold", "never_reject")

    def run(self):
        c = self.cleaned_data
        return account_actions.set_spam_thresholds(
            **self.scope(c.get("domain"), c.get("account")), tag=c.get("tag_threshold"),
            junk=c.get("junk_threshold"), reject=c.get("reject_threshold"), never_reject=c.get("never_reject", False),
            acting_user=self.acting_user,
        )


class ListEntryForm(_ActionForm):
    class Meta:
        model = ListEntry
        fields = ("domain", "account", "kind", "pattern")

    def run(self):
        c = self.cleaned_data
        if self.instance.pk:
            account_actions.remove_spam_list_entry(
                self.instance.pk, **self.scope(self.instance.domain, self.instance.account), acting_user=self.acting_user,
            )
        return account_actions.add_spam_list_entry(
            c["kind"], c["pattern"], **self.scope(c.get("domain"), c.get("account")), acting_user=self.acting_user,
        )


class _Scoped(TenantScopedMixin, admin.ModelAdmin):
    """Domain admins see and change the rows of their domains and their accounts."""

    raw_id_fields = ("account",)
    autocomplete_fields = ("domain",)
    list_select_related = ("domain", "account", "account__domain")
    show_full_result_count = False

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.acting_user = request.user
        return form

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.related_model is Account:
            kwargs["queryset"] = Account.objects.visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        pass  # the form's action saved it

    @admin.display(description="scope")
    def scope(self, obj):
        return str(obj.account or obj.domain)


@admin.register(SpamSettings)
class SpamSettingsAdmin(_Scoped):
    form = SpamSettingsForm
    list_display = ("scope", "tag_threshold", "junk_threshold", "reject_threshold", "never_reject")
    search_fields = ("domain__name", "account__localpart")


@admin.register(ListEntry)
class ListEntryAdmin(_Scoped):
    form = ListEntryForm
    list_display = ("pattern", "kind", "scope", "created")
    list_filter = ("kind",)
    search_fields = ("pattern", "domain__name", "account__localpart")


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ("created", "account", "score", "action")
    list_filter = ("action",)
    list_select_related = ("account", "account__domain")
    raw_id_fields = ("account", "blob")
    readonly_fields = ("account", "blob", "score", "action", "rules", "results", "created")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BayesCorpus)
class BayesCorpusAdmin(VerdictAdmin):
    list_display = ("__str__", "spam", "ham")
    list_filter = ()
    list_select_related = ("account",)
    raw_id_fields = ("account",)
    readonly_fields = ("account", "spam", "ham")
