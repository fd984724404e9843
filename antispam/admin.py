"""The content filter in the admin: thresholds and allow/block lists per domain (and per
account), the verdicts stored with messages, and what each Bayes filter has learned.

Saving a threshold row or a list entry is an antispam.actions call (the form runs it
after the model's own checks, inside the admin's transaction, so a refusal shows as a
form error). Verdicts and Bayes counts are read-only: the filter owns them. The dry run of a folder through
the filter is `manage.py spam check ACCOUNT FOLDER`.
"""
from django import forms
from django.contrib import admin

from antispam import actions
from antispam.models import BayesCorpus, ListEntry, SpamSettings, Verdict


class _ActionForm(forms.ModelForm):
    def run(self):
        raise NotImplementedError

    def _post_clean(self):
        super()._post_clean()  # the model's own checks (one row per domain...) first
        if not self.errors:
            try:
                self.saved = self.run()
            except actions.SpamSettingsError as error:
                self.add_error(None, str(error))

    def save(self, commit=True):
        self.save_m2m = lambda: None
        return self.saved


class SpamSettingsForm(_ActionForm):
    class Meta:
        model = SpamSettings
        fields = ("domain", "account", "tag_threshold", "junk_threshold", "reject_threshold", "never_reject")

    def run(self):
        c = self.cleaned_data
        return actions.set_thresholds(
            domain=c.get("domain"), account=c.get("account"), tag=c.get("tag_threshold"),
            junk=c.get("junk_threshold"), reject=c.get("reject_threshold"), never_reject=c.get("never_reject", False),
        )


class ListEntryForm(_ActionForm):
    class Meta:
        model = ListEntry
        fields = ("domain", "account", "kind", "pattern")

    def run(self):
        c = self.cleaned_data
        if self.instance.pk:
            actions.remove_list_entry(self.instance.pk, domain=self.instance.domain, account=self.instance.account)
        return actions.add_list_entry(c["kind"], c["pattern"], domain=c.get("domain"), account=c.get("account"))


class _Scoped(admin.ModelAdmin):
    raw_id_fields = ("account",)
    autocomplete_fields = ("domain",)
    list_select_related = ("domain", "account", "account__domain")
    show_full_result_count = False

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
