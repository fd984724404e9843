"""The settings pages stored as the account's Sieve script (issue 8): filters, vacation
reply, forwarding, and the raw script editor. All of them go through sieve.rules
(load/save/save_raw), so ManageSieve clients and these pages see the same script; a
script the simple editors did not write is "too complex" and offered to the raw editor.

context(account, section) -> template context; change(request, section) -> None when
saved, else the bound forms to show with their errors.
"""
from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from sieve import actions as sieve_actions
from sieve import rules

FIELD_CHOICES = [
    ("from", gettext_lazy("From")), ("to", gettext_lazy("To or Cc")), ("subject", gettext_lazy("Subject")),
    ("header", gettext_lazy("Header field")), ("size", gettext_lazy("Size in bytes")),
]
OPERATOR_CHOICES = [
    ("contains", gettext_lazy("contains")), ("not_contains", gettext_lazy("does not contain")),
    ("is", gettext_lazy("is")), ("not_is", gettext_lazy("is not")), ("matches", gettext_lazy("matches (* and ?)")),
    ("over", gettext_lazy("is over")), ("under", gettext_lazy("is under")),
]
ACTION_CHOICES = [
    ("move", gettext_lazy("Move to folder")), ("copy", gettext_lazy("Copy to folder")),
    ("flag", gettext_lazy("Set flag")), ("forward", gettext_lazy("Forward to")),
    ("forward_copy", gettext_lazy("Forward a copy to")), ("discard", gettext_lazy("Delete")),
    ("reject", gettext_lazy("Reject with message")), ("stop", gettext_lazy("Stop processing")),
]


class RuleForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=200)
    field = forms.ChoiceField(label=gettext_lazy("If"), choices=FIELD_CHOICES)
    header = forms.CharField(label=gettext_lazy("Header field name"), max_length=100, required=False)
    operator = forms.ChoiceField(label=gettext_lazy("Comparison"), choices=OPERATOR_CHOICES)
    value = forms.CharField(label=gettext_lazy("Value"), max_length=1000)
    action = forms.ChoiceField(label=gettext_lazy("Then"), choices=ACTION_CHOICES)
    argument = forms.CharField(label=gettext_lazy("Folder, flag, address or text"), max_length=1000, required=False)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class VacationForm(forms.Form):
    enabled = forms.BooleanField(label=gettext_lazy("Send an automatic reply"), required=False)
    subject = forms.CharField(label=gettext_lazy("Subject"), max_length=500)
    body = forms.CharField(label=gettext_lazy("Message"), max_length=10000, widget=forms.Textarea(attrs={"rows": 6}))
    start = forms.DateField(label=gettext_lazy("From date"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    end = forms.DateField(label=gettext_lazy("Until date"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    days = forms.IntegerField(label=gettext_lazy("Reply to the same sender at most every (days)"), min_value=1, max_value=365, initial=7)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            self.add_error("end", _("The end date is before the start date."))
        return data


class ForwardingForm(forms.Form):
    enabled = forms.BooleanField(label=gettext_lazy("Forward my mail"), required=False)
    address = forms.EmailField(label=gettext_lazy("Forward to"), max_length=320)
    keep_copy = forms.BooleanField(label=gettext_lazy("Keep a copy here"), required=False, initial=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class RawForm(forms.Form):
    text = forms.CharField(label=gettext_lazy("Sieve script"), max_length=256 * 1024, required=False, strip=False,
                           widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "code"}))


def _rule_summary(rule):
    condition, action = rule.conditions[0], rule.actions[0]
    return {
        "name": rule.name, "enabled": rule.enabled,
        "condition": f"{condition.header or condition.field} {condition.operator} {condition.value}",
        "action": f"{action.kind} {action.argument}".strip(),
        "extra": len(rule.conditions) > 1 or len(rule.actions) > 1,
    }


def context(account, section):
    loaded = rules.load(account)
    result = {"sieve": loaded, "too_complex": loaded.filters is None}
    filters = loaded.filters
    if section == "sieve":
        result["raw_form"] = RawForm(initial={"text": loaded.text})
    elif filters is None:
        pass
    elif section == "filters":
        result["rules"] = [_rule_summary(rule) for rule in filters.rules]
        result["rule_buttons"] = [
            ("toggle", _("Enable or disable")), ("up", _("Move up")), ("down", _("Move down")), ("delete", _("Delete")),
        ]
        result["rule_form"] = RuleForm()
    elif section == "vacation":
        vacation = filters.vacation
        initial = {"days": 7, "enabled": False}
        if vacation is not None:
            initial = {"enabled": vacation.enabled, "subject": vacation.subject, "body": vacation.body,
                       "start": vacation.start, "end": vacation.end, "days": vacation.days}
        result["vacation_form"] = VacationForm(initial=initial)
    elif section == "forwarding":
        forwarding = filters.forwarding
        initial = {"enabled": False, "keep_copy": True}
        if forwarding is not None:
            initial = {"enabled": forwarding.enabled, "address": forwarding.address, "keep_copy": forwarding.keep_copy}
        result["forwarding_form"] = ForwardingForm(initial=initial)
    return result


def _save(account, filters, form):
    try:
        rules.save(account, filters)
    except (rules.RulesError, sieve_actions.SieveError) as error:
        form.add_error(None, str(error))
        return False
    return True


def change(request, section):
    account = request.account
    post = request.POST
    if section == "sieve":
        form = RawForm(post)
        if not form.is_valid():
            return {"raw_form": form}
        try:
            rules.save_raw(account, form.cleaned_data["text"])
        except sieve_actions.InvalidScript as invalid:
            error = invalid.error
            lines = form.cleaned_data["text"].splitlines()
            line = getattr(error, "line", 1)
            return {
                "raw_form": form, "raw_error": error,
                "raw_error_line": lines[line - 1] if 0 < line <= len(lines) else "",
                "raw_error_caret": " " * max(getattr(error, "column", 1) - 1, 0) + "^",
            }
        except sieve_actions.SieveError as error:
            form.add_error(None, str(error))
            return {"raw_form": form}
        return None
    loaded = rules.load(account)
    filters = loaded.filters
    if filters is None:
        return {}  # the page says it is too complex and links the raw editor
    if section == "filters":
        what = post.get("form", "")
        if what == "rule":
            form = RuleForm(post)
            if not form.is_valid():
                return {"rule_form": form}
            data = form.cleaned_data
            rule = rules.Rule(
                name=data["name"],
                conditions=[rules.Condition(data["field"], data["operator"], data["value"], header=data["header"])],
                actions=[rules.Action(data["action"], data["argument"])],
            )
            filters.rules.append(rule)
            return None if _save(account, filters, form) else {"rule_form": form}
        index = post.get("index", "")
        if not index.isdigit() or int(index) >= len(filters.rules):
            return {}
        index = int(index)
        if what == "delete":
            del filters.rules[index]
        elif what == "toggle":
            filters.rules[index].enabled = not filters.rules[index].enabled
        elif what == "up" and index > 0:
            filters.rules[index - 1], filters.rules[index] = filters.rules[index], filters.rules[index - 1]
        elif what == "down" and index + 1 < len(filters.rules):
            filters.rules[index + 1], filters.rules[index] = filters.rules[index], filters.rules[index + 1]
        form = RuleForm()
        return None if _save(account, filters, form) else {"rule_form": form}
    if section == "vacation":
        form = VacationForm(post)
        if not form.is_valid():
            return {"vacation_form": form}
        data = form.cleaned_data
        filters.vacation = rules.Vacation(
            subject=data["subject"], body=data["body"], enabled=data["enabled"],
            start=data["start"], end=data["end"], days=data["days"],
        )
        return None if _save(account, filters, form) else {"vacation_form": form}
    if section == "forwarding":
        form = ForwardingForm(post)
        if not form.is_valid():
            return {"forwarding_form": form}
        data = form.cleaned_data
        filters.forwarding = rules.Forwarding(address=data["address"], keep_copy=data["keep_copy"], enabled=data["enabled"])
        return None if _save(account, filters, form) else {"forwarding_form": form}
    return {}
