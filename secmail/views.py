"""secmail's HTTP side: WKD for our users' published keys, and the keys pages (webmail).

Views stay thin: they read through models/actions and render; every change goes through
secmail.actions.
"""
from django.conf import settings
from django.contrib import messages as notices
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import Account, Domain
from secmail import actions, forms, openpgp, session, unlock, wkd
from secmail.errors import InvalidInput, SecmailError
from secmail.models import OPENPGP, OwnKey, PeerKey, RevocationList, TrustedCA
from webmail.auth import account_required
from webmail.security import page_csp


def _served_domain(name):
    name = name.lower().rstrip(".")
    if name.startswith("openpgpkey."):
        name = name[len("openpgpkey.") :]
    return Domain.objects.filter(name=name, active=True).first()


def _host_domain(request):
    """The mail domain the request was sent to. ops.middleware (ServedDomainHostsMiddleware)
    keeps it in request.mail_host when it let a served domain's Host through."""
    host = getattr(request, "mail_host", "") or request.get_host()
    return _served_domain(host.rsplit(":", 1)[0] if not host.startswith("[") else "")


def _published_key(domain, hashed, local):
    """The published OpenPGP key of the account in `domain` whose local part hashes to `hashed`."""
    if local and wkd.local_hash(local) != hashed:
        return None  # ?l= disagrees with the hash: answer for neither
    accounts = Account.objects.filter(domain=domain, active=True)
    if local:
        accounts = accounts.filter(localpart=local.lower())
    keys = OwnKey.objects.filter(account__in=accounts, kind=OPENPGP, published=True).exclude(public_data="").select_related("account")
    for key in keys:
        if wkd.local_hash(key.account.localpart) == hashed:
            return key
    return None


def _key_response(domain, hashed, request):
    if domain is None:
        raise Http404
    key = _published_key(domain, hashed, request.GET.get("l", ""))
    if key is None:
        raise Http404
    address = f"{key.account.localpart}@{domain.name}"
    try:
        data = openpgp.minimal_key(key.public_data, address)
    except InvalidInput:
        raise Http404 from None
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Access-Control-Allow-Origin"] = "*"  # draft §3.1: browsers' OpenPGP clients may fetch it
    return response


@require_GET
def wkd_direct_key(request, hashed):
    return _key_response(_host_domain(request), hashed, request)


@require_GET
def wkd_advanced_key(request, domain, hashed):
    return _key_response(_served_domain(domain), hashed, request)


@require_GET
def wkd_direct_policy(request):
    if _host_domain(request) is None:
        raise Http404
    return HttpResponse(b"", content_type="text/plain")


@require_GET
def wkd_advanced_policy(request, domain):
    if _served_domain(domain) is None:
        raise Http404
    return HttpResponse(b"", content_type="text/plain")


# ---- the keys page (webmail settings) ------------------------------------------------------

FORMS = {
    "generate": forms.GenerateOpenPGPForm,
    "request": forms.RequestSmimeForm,
    "pkcs12": forms.ImportPkcs12Form,
    "secret": forms.ImportOpenPGPSecretForm,
    "own_public": forms.PublicKeyForm,
    "peer": forms.PublicKeyForm,
    "ca": forms.PublicKeyForm,
    "lookup": forms.LookupForm,
    "crl": forms.CrlForm,
}


def _context(request, bound=None):
    from webmail.views import SETTINGS_SECTIONS, _layout

    account = request.account
    unlocked = unlock.unlocked_ids(request.session) if session.token(request) else set()
    own_keys = list(OwnKey.objects.filter(account=account))
    for key in own_keys:
        key.unlocked = key.pk in unlocked
    context = {
        **_layout(request),
        "sections": list(SETTINGS_SECTIONS.items()),
        "section": "keys",
        "section_label": _("Signing and encryption"),
        "server_keys": settings.MAILSUITE_SERVER_PRIVATE_KEYS,
        "own_keys": own_keys,
        "peer_keys": PeerKey.objects.filter(account=account).order_by("address", "kind"),
        "trusted_cas": TrustedCA.objects.filter(account=account),
        "crls": RevocationList.objects.filter(account=account).defer("der"),
        "unlock_form": forms.UnlockForm(),
        "certificate_form": forms.InstallCertificateForm(),
        "change_form": forms.ChangePassphraseForm(),
    }
    for name, form_class in FORMS.items():
        context[f"{name}_form"] = form_class(prefix=name)
    context.update(bound or {})
    return context


@never_cache
@page_csp
@account_required
@require_http_methods(["GET", "POST"])
def keys_page(request):
    if request.method == "GET":
        return render(request, "secmail/keys.html", _context(request))
    what = request.POST.get("form", "")
    response = redirect(reverse("secmail:keys"))
    try:
        if what in FORMS:
            form_class = FORMS[what]
            form = form_class(request.POST, request.FILES, prefix=what)
            if not form.is_valid():
                return render(request, "secmail/keys.html", _context(request, {f"{what}_form": form, "open_form": what}), status=400)
            try:
                _apply(request, what, form.cleaned_data)
            except SecmailError as error:
                form.add_error(None, str(error))
                return render(request, "secmail/keys.html", _context(request, {f"{what}_form": form, "open_form": what}), status=400)
        else:
            _key_action(request, what, response)
    except SecmailError as error:
        notices.error(request, str(error))
        return response
    return response


def _apply(request, what, data):
    account = request.account
    if what == "generate":
        actions.generate_openpgp_key(account, passphrase=data["passphrase"])
        notices.success(request, _("A new OpenPGP key was made."))
    elif what == "request":
        actions.request_smime_certificate(account, passphrase=data["passphrase"])
        notices.success(request, _("A key and its certificate request were made: send the request to your CA."))
    elif what == "pkcs12":
        actions.import_pkcs12(account, data["file"].read(), password=data["password"], passphrase=data["passphrase"])
        notices.success(request, _("The certificate and its key were imported."))
    elif what == "secret":
        actions.import_openpgp_secret_key(account, data["key"], key_passphrase=data["key_passphrase"], passphrase=data["passphrase"])
        notices.success(request, _("The OpenPGP key was imported."))
    elif what == "own_public":
        actions.add_own_public_key(account, data["key"])
        notices.success(request, _("Your public key was added."))
    elif what == "peer":
        learned = actions.import_peer_key(account, data["key"])
        notices.success(request, _("Key added for %(addresses)s.") % {"addresses": ", ".join(sorted({k.address for k in learned}))})
    elif what == "ca":
        actions.trust_ca(account, data["key"])
        notices.success(request, _("The CA is now trusted."))
    elif what == "lookup":
        if actions.learn_from_wkd(account, data["address"]) is None:
            raise SecmailError(_("No key was found for %(address)s.") % {"address": data["address"]})
        notices.success(request, _("Key found and added."))
    elif what == "crl":
        if data["file"].size > actions.MAX_CRL_BYTES:
            raise InvalidInput(_("The revocation list is larger than 10 MB."))
        crl = actions.import_crl(account, data["file"].read())
        notices.success(request, _("The revocation list of %(issuer)s was imported.") % {"issuer": crl.issuer})


def _key_action(request, what, response):
    account = request.account
    item = request.POST.get("key", "")
    if what == "unlock":
        own = actions.get_own_key(account, item)
        form = forms.UnlockForm(request.POST, prefix="unlock")
        if not form.is_valid():
            raise SecmailError(_("Enter the key passphrase."))
        token = session.token(request) or unlock.new_token()
        unlock.unlock(request.session, token, own, form.cleaned_data["passphrase"])
        session.set_token_cookie(request, response, token)
        notices.success(request, _("Key unlocked until you sign out."))
    elif what == "lock":
        unlock.lock(request.session, actions.get_own_key(account, item))
    elif what == "publish":
        actions.set_published(actions.get_own_key(account, item), request.POST.get("published") == "1")
    elif what == "delete":
        own = actions.get_own_key(account, item)
        unlock.lock(request.session, own)
        actions.delete_own_key(account, own.pk)
    elif what == "certificate":
        form = forms.InstallCertificateForm(request.POST, prefix="cert")
        if not form.is_valid():
            raise SecmailError(_("Paste the certificate."))
        actions.install_certificate(actions.get_own_key(account, item), form.cleaned_data["certificate"])
        notices.success(request, _("The certificate was installed."))
    elif what == "passphrase":
        form = forms.ChangePassphraseForm(request.POST, prefix="change")
        if not form.is_valid():
            raise SecmailError(" ".join(e for errors in form.errors.values() for e in errors))
        actions.change_passphrase(actions.get_own_key(account, item), form.cleaned_data["current"], form.cleaned_data["passphrase"])
        notices.success(request, _("The key passphrase was changed."))
    elif what == "delete_peer":
        actions.delete_peer_key(account, item)
    elif what == "distrust":
        actions.distrust_ca(account, item)
    elif what == "remove_crl":
        actions.remove_crl(account, item)
    else:
        raise Http404("no such form")


@account_required
def key_download(request, key_id, what):
    """The public certificate/key, or an S/MIME key's CSR — never anything private."""
    try:
        own = actions.get_own_key(request.account, key_id)
    except SecmailError:
        raise Http404("no such key") from None
    if what == "csr" and own.csr_pem:
        data, name, ctype = own.csr_pem, "request.csr", "application/pkcs10"
    elif what == "public" and own.public_data:
        ext = "pem" if own.kind == "smime" else "asc"
        data, name, ctype = own.public_data, f"{own.fingerprint[:16]}.{ext}", "application/octet-stream"
    else:
        raise Http404("nothing to download")
    response = HttpResponse(data, content_type=ctype)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_http_methods(["POST"])
@account_required
def import_part(request, folder_id, uid, number):
    """Import an attached public key or certificate (of the message as read: decrypted if
    it was encrypted) into the correspondents' keys."""
    from mailstore.models import Folder, Message
    from secmail.reading import key_parts, open_reading
    from webmail import mailbox
    from webmail.message import Reading

    try:
        folder = mailbox.folder_of(request.account, folder_id)
        message = mailbox.message_of(folder, uid)
    except (Folder.DoesNotExist, Message.DoesNotExist):
        raise Http404("no such message") from None
    _security, reading = open_reading(request, message, Reading(message))
    part = next((p for p in key_parts(reading) if p.number_text == number), None)
    if part is None:
        raise Http404("no such key part")
    try:
        learned = actions.import_peer_key(request.account, reading.part_bytes(part))
    except SecmailError as error:
        notices.error(request, str(error))
    else:
        notices.success(request, _("Key added for %(addresses)s.") % {"addresses": ", ".join(sorted({k.address for k in learned}))})
    return redirect(reverse("webmail:message", args=[folder.pk, uid]))
