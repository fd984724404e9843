"""Every change to API tokens goes through here (the CLI, the tests).

Tokens are made and revoked with the audit log written as for any administrative change.
"""
import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.actions import audit, is_superadmin
from accounts.errors import InvalidInput, NotFound
from api import scopes as scope_rules
from api.models import ApiToken

MAX_EXPIRY = timedelta(days=3650)
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def hash_token(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_duration(text):
    """`30d`, `12h`, `2w`, `90m` as a timedelta."""
    text = (text or "").strip().lower()
    number, unit = text[:-1], text[-1:]
    if unit not in UNITS or not number.isdigit() or int(number) == 0:
        raise InvalidInput(f"{text!r} is not a duration like 30d, 12h, 2w or 90m")
    duration = timedelta(seconds=int(number) * UNITS[unit])
    if duration > MAX_EXPIRY:
        raise InvalidInput("a token may live at most 10 years")
    return duration


@transaction.atomic
def create_token(username, scopes, *, expires_in=None, name="", acting_user=None):
    """Make a token for the user; returns (ApiToken, the token text, shown only now)."""
    model = get_user_model()
    user = model.objects.filter(**{model.USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise NotFound(f"there is no active user {username}")
    if acting_user is not None and acting_user.pk != user.pk and not is_superadmin(acting_user):
        raise NotFound(f"there is no active user {username}")
    try:
        parsed = sorted({scope_rules.parse(scope) for scope in scopes})
    except scope_rules.ScopeError as error:
        raise InvalidInput(str(error)) from None
    if not parsed:
        raise InvalidInput("a token needs at least one scope")
    if len(name) > 100:
        raise InvalidInput("the name is longer than 100 characters")
    prefix = secrets.token_hex(6)
    text = f"ms_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=user, name=name, prefix=prefix, key_hash=hash_token(text), scopes=parsed,
        expires=timezone.now() + expires_in if expires_in else None,
    )
    audit(acting_user, "api_token.create", token, after={"user": username, "scopes": parsed,
                                                         "expires": token.expires.isoformat() if token.expires else None})
    return token, text


@transaction.atomic
def revoke_token(prefix, *, acting_user=None):
    tokens = ApiToken.objects.filter(prefix=prefix.removeprefix("ms_").split("_", 1)[0])
    if acting_user is not None and not is_superadmin(acting_user):
        tokens = tokens.filter(user=acting_user)
    token = tokens.select_related("user").first()
    if token is None:
        raise NotFound(f"no API token {prefix}")
    audit(acting_user, "api_token.revoke", token, before={"user": token.user.get_username(), "scopes": token.scopes})
    token.delete()


def authenticate(text):
    """The live ApiToken for a presented token, or None. Marks it used (at most once a minute)."""
    parts = text.split("_", 2)  # the secret may itself contain "_"
    if len(parts) != 3 or parts[0] != "ms":
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if token is None or not secrets.compare_digest(token.key_hash, hash_token(text)):
        return None
    now = timezone.now()
    if token.expires is not None and token.expires <= now:
        return None
    if token.last_used is None or now - token.last_used > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    return token
