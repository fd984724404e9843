"""secmail's HTTP side: WKD for our users' published keys, and the keys pages (webmail).

Views stay thin: they read through models/actions and render; every change goes through
secmail.actions.
"""
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET

from accounts.models import Account, Domain
from secmail import openpgp, wkd
from secmail.errors import InvalidInput
from secmail.models import OPENPGP, OwnKey


def _served_domain(name):
    name = name.lower().rstrip(".")
    if name.startswith("openpgpkey."):
        name = name[len("openpgpkey.") :]
    return Domain.objects.filter(name=name, active=True).first()


def _host_domain(request):
    return _served_domain(request.get_host().rsplit(":", 1)[0] if not request.get_host().startswith("[") else "")


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
