"""The webmail's side of unlocking: the token cookie and the session (secmail.unlock)."""
from django.conf import settings

from secmail import unlock
from secmail.models import OwnKey


def token(request):
    return request.COOKIES.get(unlock.UNLOCK_COOKIE, "")


def set_token_cookie(request, response, value):
    response.set_cookie(unlock.UNLOCK_COOKIE, value, httponly=True, samesite="Strict",
                        secure=request.is_secure() or settings.SESSION_COOKIE_SECURE)


def unlocked_keys(request, account):
    """The account's keys unlocked in this browser session (secmail.keys.UnlockedKey)."""
    ids = unlock.unlocked_ids(request.session)
    if not ids or not token(request):
        return []
    found = []
    for own in OwnKey.objects.filter(account=account, pk__in=ids):
        opened = unlock.unlocked(request.session, token(request), own)
        if opened is not None:
            found.append(opened)
    return found
