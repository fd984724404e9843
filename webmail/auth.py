"""Webmail sign-in: the shared accounts.auth.authenticate() and a session that names the account.

Implementation notes:
- Webmail users are mail accounts, not Django users: the session holds the account's id
  and a keyed hash of its password hash, so changing the password (anywhere: CLI, admin,
  settings) ends every webmail session signed in with the old one.
- Sign-in takes a new session id (no session fixation); sign-out deletes the session.
- Without "remember me" the cookie ends with the browser; with it, after
  SESSION_COOKIE_AGE. Cookie flags (Secure, HttpOnly, SameSite) are in settings.
- The account is looked up once per request (account_required) and every query of a
  view is scoped to it; other accounts' folders answer 404, never 403.
"""
from functools import wraps
from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.auth import authenticate
from accounts.models import Account

SESSION_ACCOUNT = "webmail_account"
SESSION_CHECK = "webmail_check"
SERVICE = "web"  # the login audit's name for the webmail


def _check_value(account):
    return salted_hmac("webmail.session", account.password, algorithm="sha256").hexdigest()


def sign_in(request, address, password, *, remember):
    """The Account for address+password, now signed in on this session; or None.

    Raises accounts.errors.LoginThrottled while the client IP or the address is blocked.
    """
    account = authenticate(address, password, service=SERVICE, remote_ip=request.META.get("REMOTE_ADDR"))
    if account is None:
        return None
    request.session.cycle_key()
    request.session[SESSION_ACCOUNT] = account.pk
    request.session[SESSION_CHECK] = _check_value(account)
    request.session.set_expiry(None if remember else 0)
    return account


def keep_signed_in(request, account):
    """After the user changed their password here: this session stays valid (others end)."""
    request.session.cycle_key()
    request.session[SESSION_CHECK] = _check_value(account)


def sign_out(request):
    request.session.flush()


def current_account(request):
    """The signed-in, still active Account (with .domain), or None."""
    if hasattr(request, "_webmail_account"):
        return request._webmail_account
    account = None
    pk = request.session.get(SESSION_ACCOUNT)
    if pk is not None:
        account = (
            Account.objects.select_related("domain")
            .filter(pk=pk, active=True, domain__active=True)
            .first()
        )
        if account is None or not constant_time_compare(request.session.get(SESSION_CHECK, ""), _check_value(account)):
            account = None
            request.session.flush()
    request._webmail_account = account
    return account


def safe_next(request, default):
    """The ?next= target if it stays on this site, else `default`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return default


def account_required(view):
    """Set request.account, or send the browser to the sign-in page (htmx: HX-Redirect)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        account = current_account(request)
        if account is None:
            login = reverse("webmail:login")
            if request.method == "GET":
                login += "?" + urlencode({"next": request.get_full_path()})
            if request.headers.get("HX-Request"):
                response = HttpResponse(status=204)
                response["HX-Redirect"] = login
                return response
            return redirect(login)
        request.account = account
        return view(request, *args, **kwargs)

    return wrapper
