"""The webmail's spam pages: the user's thresholds and allow/block lists, and the
Spam/Not spam buttons of the reading view, which train the user's filter at once.

Writes go through antispam.actions (and webmail.actions for the move); the verdict
panel of a message is the spam_panel tag (webmail/templatetags/spam_tags.py).
"""
from django import forms
from django.contrib import messages as notices
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from antispam import actions as spam_actions
from antispam import policy
from antispam.models import ListEntry, SpamSettings
from mailstore import actions as store
from mailstore.models import Folder
from webmail import actions
from webmail.auth import account_required
from webmail.security import page_csp


class ThresholdsForm(forms.Form):
    tag = forms.FloatField(label=gettext_lazy("Mark as spam from score"), required=False)
    junk = forms.FloatField(label=gettext_lazy("File into Junk from score"), required=False)
    reject = forms.FloatField(label=gettext_lazy("Refuse from score"), required=False)
    never_reject = forms.BooleanField(label=gettext_lazy("Never refuse mail: file it into Junk instead"), required=False)


class EntryForm(forms.Form):
    pattern = forms.CharField(label=gettext_lazy("Address or domain"), max_length=320)
    kind = forms.ChoiceField(
        label=gettext_lazy("List"),
        choices=[(ListEntry.ALLOW, gettext_lazy("Always accept")), (ListEntry.BLOCK, gettext_lazy("Always treat as spam"))],
    )


def _context(request, bound=None):
    from webmail.views import SETTINGS_SECTIONS, _layout

    account = request.account
    own = SpamSettings.objects.filter(account=account).first()
    initial = {}
    if own is not None:
        initial = {"tag": own.tag_threshold, "junk": own.junk_threshold, "reject": own.reject_threshold, "never_reject": own.never_reject}
    context = {
        **_layout(request),
        "sections": list(SETTINGS_SECTIONS.items()),
        "section": "spam",
        "section_label": _("Spam filter"),
        "thresholds_form": ThresholdsForm(initial=initial),
        "entry_form": EntryForm(),
        "effective": policy.thresholds(account),
        "entries": ListEntry.objects.filter(account=account),
        "domain_entries": ListEntry.objects.filter(domain_id=account.domain_id),
    }
    context.update(bound or {})
    return context


@never_cache
@page_csp
@account_required
@require_http_methods(["GET", "POST"])
def settings_page(request):
    if request.method == "GET":
        return render(request, "webmail/spam/settings.html", _context(request))
    account = request.account
    what = request.POST.get("form", "")
    if what == "remove":
        entry_id = request.POST.get("entry", "")
        if entry_id.isdigit():
            spam_actions.remove_list_entry(int(entry_id), account=account)
        return redirect(reverse("webmail:spam_settings"))
    form_class, name = {"thresholds": (ThresholdsForm, "thresholds_form"), "entry": (EntryForm, "entry_form")}.get(what, (None, None))
    if form_class is None:
        raise Http404("no such form")
    form = form_class(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            if what == "thresholds":
                spam_actions.set_thresholds(
                    account=account, tag=data["tag"], junk=data["junk"], reject=data["reject"], never_reject=data["never_reject"],
                )
            else:
                spam_actions.add_list_entry(data["kind"], data["pattern"], account=account)
        except spam_actions.SpamSettingsError as error:
            form.add_error(None, str(error))
    if form.errors:
        return render(request, "webmail/spam/settings.html", _context(request, {name: form}), status=400)
    notices.success(request, _("Settings saved."))
    return redirect(reverse("webmail:spam_settings"))


@require_POST
@account_required
def mark(request, folder_id, uid):
    """Spam / Not spam from the reading view: move the message, then learn from it at
    once (the move recorded the training example)."""
    folder = Folder.objects.filter(account=request.account, pk=folder_id).first()
    if folder is None:
        raise Http404("no such folder")
    action = request.POST.get("action", "")
    if action not in ("junk", "notjunk"):
        raise Http404("no such action")
    try:
        actions.apply(request.account, folder, [uid], action)
    except store.MailstoreError as error:
        notices.error(request, str(error))
        return redirect(reverse("webmail:message", args=[folder.pk, uid]))
    spam_actions.learn_examples(request.account.pk)
    notices.success(request, _("Marked as spam: your filter learned from it.") if action == "junk" else _("Marked as not spam: your filter learned from it."))
    following = request.POST.get("then", "")
    keep = request.POST.get("keep", "")
    keep = "?" + keep if keep and "//" not in keep and "\n" not in keep else ""
    if following.isdigit():
        return redirect(reverse("webmail:message", args=[folder.pk, int(following)]) + keep)
    return redirect(reverse("webmail:folder", args=[folder.pk]) + keep)
