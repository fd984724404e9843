"""Forms of the keys page. Labels are translatable; validation of keys is secmail.actions'."""
from django import forms
from django.utils.translation import gettext_lazy as _

from secmail import sealing


class _Form(forms.Form):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class NewPassphraseMixin(forms.Form):
    passphrase = forms.CharField(label=_("Key passphrase"), widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
                                 min_length=sealing.MIN_PASSPHRASE,
                                 help_text=_("protects the private key on the server; not your login password"))
    passphrase_again = forms.CharField(label=_("Key passphrase again"), widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self):
        data = super().clean()
        if data.get("passphrase") and data.get("passphrase") != data.get("passphrase_again"):
            self.add_error("passphrase_again", _("The two passphrases differ."))
        return data


class GenerateOpenPGPForm(_Form, NewPassphraseMixin):
    prefix = "gen"


class RequestSmimeForm(_Form, NewPassphraseMixin):
    prefix = "csr"


class ImportPkcs12Form(_Form, NewPassphraseMixin):
    prefix = "p12"
    file = forms.FileField(label=_("PKCS#12 file (.p12, .pfx)"))
    password = forms.CharField(label=_("Password of the file"), required=False, widget=forms.PasswordInput)
    field_order = ["file", "password", "passphrase", "passphrase_again"]


class ImportOpenPGPSecretForm(_Form, NewPassphraseMixin):
    prefix = "sec"
    key = forms.CharField(label=_("Secret key (ASCII armour)"), widget=forms.Textarea(attrs={"rows": 4}), max_length=256 * 1024)
    key_passphrase = forms.CharField(label=_("Its current passphrase"), required=False, widget=forms.PasswordInput)
    field_order = ["key", "key_passphrase", "passphrase", "passphrase_again"]


class PublicKeyForm(_Form):
    prefix = "pub"
    key = forms.CharField(label=_("Certificate (PEM) or OpenPGP public key"), widget=forms.Textarea(attrs={"rows": 4}), max_length=256 * 1024)


class InstallCertificateForm(_Form):
    prefix = "cert"
    certificate = forms.CharField(label=_("Certificate from your CA (PEM)"), widget=forms.Textarea(attrs={"rows": 4}), max_length=64 * 1024)


class UnlockForm(_Form):
    prefix = "unlock"
    passphrase = forms.CharField(label=_("Key passphrase"), widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


class LookupForm(_Form):
    prefix = "wkd"
    address = forms.EmailField(label=_("Address"))


class ChangePassphraseForm(_Form, NewPassphraseMixin):
    prefix = "change"
    current = forms.CharField(label=_("Current key passphrase"), widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))
    field_order = ["current", "passphrase", "passphrase_again"]


class CrlForm(_Form):
    prefix = "crl"
    file = forms.FileField(label=_("Certificate revocation list (.crl, PEM or DER)"))
