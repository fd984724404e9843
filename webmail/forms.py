"""Forms: they parse and validate what the user sent, nothing more."""
from django import forms
from django.utils.translation import gettext_lazy as _

from mailstore.actions import InvalidFolderName, normalise_folder_name, validate_folder_name
from mailstore.models import HIERARCHY_DELIMITER
from webmail.actions import BULK_ACTIONS


class SignInForm(forms.Form):
    address = forms.CharField(
        label=_("Email address"), max_length=320,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True, "inputmode": "email", "spellcheck": "false", "autocapitalize": "none"}),
    )
    password = forms.CharField(label=_("Password"), max_length=1024, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    remember = forms.BooleanField(label=_("Remember me"), required=False)


class BulkForm(forms.Form):
    action = forms.ChoiceField(choices=[(a, a) for a in BULK_ACTIONS])
    uid = forms.TypedMultipleChoiceField(coerce=int, required=True)
    target = forms.IntegerField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Any positive UID may be named; the folder decides which exist.
        self.fields["uid"].valid_value = lambda value: str(value).isdigit() and 0 < int(value) < 2**63

    def clean_uid(self):
        uids = self.cleaned_data["uid"]
        if len(uids) > 10_000:
            raise forms.ValidationError(_("Too many messages at once."))
        return uids


def _full_name(parent, name):
    name = name.strip()
    if HIERARCHY_DELIMITER in name:
        raise forms.ValidationError(_("A folder name cannot contain “%(delimiter)s”.") % {"delimiter": HIERARCHY_DELIMITER})
    full = f"{parent.name}{HIERARCHY_DELIMITER}{name}" if parent is not None else name
    try:
        validate_folder_name(full)
    except InvalidFolderName as error:
        raise forms.ValidationError(str(error)) from None
    return normalise_folder_name(full)


class FolderForm(forms.Form):
    """A folder's name (one level) and its parent; `full_name` is what the mail store gets."""

    name = forms.CharField(label=_("Name"), max_length=200)
    parent = forms.ModelChoiceField(queryset=None, label=_("Inside"), required=False, empty_label=_("(top level)"))

    def __init__(self, *args, account, exclude=None, **kwargs):
        super().__init__(*args, **kwargs)
        from mailstore.models import Folder

        queryset = Folder.objects.filter(account=account).order_by("name")
        if exclude is not None:
            queryset = queryset.exclude(pk=exclude.pk).exclude(name__startswith=exclude.name + HIERARCHY_DELIMITER)
        self.fields["parent"].queryset = queryset
        self.fields["parent"].label_from_instance = lambda folder: folder.name

    def clean(self):
        data = super().clean()
        if "name" in data:
            try:
                data["full_name"] = _full_name(data.get("parent"), data["name"])
            except forms.ValidationError as error:
                self.add_error("name", error)
        return data


# Address fields offer the address book (compose.js fills the datalist as the user types).
_ADDRESSES = forms.TextInput(attrs={"list": "contact-suggestions", "autocomplete": "off", "data-addresses": "1"})


class ComposeForm(forms.Form):
    """The compose page. From: is free text here on purpose: the submission policy
    (mta.submission) is what decides whether the user may send as it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    from_address = forms.CharField(label=_("From"), max_length=320)
    to = forms.CharField(label=_("To"), max_length=20000, required=False, widget=_ADDRESSES)
    cc = forms.CharField(label=_("Cc"), max_length=20000, required=False, widget=_ADDRESSES)
    bcc = forms.CharField(label=_("Bcc"), max_length=20000, required=False, widget=_ADDRESSES)
    subject = forms.CharField(label=_("Subject"), max_length=998, required=False)
    body = forms.CharField(label=_("Message"), required=False, strip=False, widget=forms.Textarea(attrs={"rows": 18}))
    html = forms.BooleanField(label=_("Also send as rich text (HTML)"), required=False)
    in_reply_to = forms.CharField(required=False, max_length=998, widget=forms.HiddenInput)
    references = forms.CharField(required=False, max_length=20000, widget=forms.HiddenInput)
    # "folder_id:uid" of the draft this form replaces, and of the message whose parts are kept.
    draft = forms.RegexField(regex=r"^\d+:\d+$", required=False, widget=forms.HiddenInput)
    source = forms.RegexField(regex=r"^\d+:\d+$", required=False, widget=forms.HiddenInput)
    answered = forms.RegexField(regex=r"^\d+:\d+$", required=False, widget=forms.HiddenInput)
    # "folder_id:uid" of a message forwarded whole, as a message/rfc822 attachment.
    attach_message = forms.RegexField(regex=r"^\d+:\d+$", required=False, widget=forms.HiddenInput)


class DisplayNameForm(forms.Form):
    display_name = forms.CharField(label=_("Display name"), max_length=200, required=False)


class PasswordChangeForm(forms.Form):
    current = forms.CharField(label=_("Current password"), max_length=1024, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    new = forms.CharField(label=_("New password"), max_length=1024, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    again = forms.CharField(label=_("New password again"), max_length=1024, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self):
        data = super().clean()
        if data.get("new") and data.get("new") != data.get("again"):
            self.add_error("again", _("The two new passwords differ."))
        return data


class SignatureForm(forms.Form):
    signature = forms.CharField(label=_("Signature"), max_length=4000, required=False, strip=False, widget=forms.Textarea(attrs={"rows": 5}))


class RemoteContentForm(forms.Form):
    remote_content = forms.ChoiceField(
        label=_("Remote images"), widget=forms.RadioSelect,
        choices=[("ask", _("Block them until I allow them")), ("always", _("Always show them"))],
    )
