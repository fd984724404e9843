"""Who calls the API: a token (`Authorization: Bearer ms_…`) or a browser session, and
whether the token's scopes cover the endpoint. Imported by DRF's settings, so it must not
import rest_framework.views (that would be circular)."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts import actions as accounts_actions
from api import actions, scopes


class TokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer ms_…` (RFC 6750 §2.1)."""

    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be: Bearer TOKEN")
        try:
            text = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token") from None
        token = actions.authenticate(text)
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or expired token")
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A token from `manage.py apitoken create`"}


class ScopePermission(permissions.BasePermission):
    """Signed in, and (with a token) the token's scopes cover the view's `scope_family`.

    Views with `superadmin_only` refuse everyone else with 403.
    """

    message = "Your token's scopes do not allow this"

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if getattr(view, "superadmin_only", False) and not accounts_actions.is_superadmin(user):
            self.message = "Only a superadmin may use this endpoint"
            return False
        token = request.auth
        if token is None:  # a browser session
            return True
        level = "read" if request.method in permissions.SAFE_METHODS else "write"
        if not scopes.allows(token.scopes, view.scope_family, level):
            self.message = f"This token lacks the scope {view.scope_family}:{level}"
            return False
        return True
