"""API tokens: shown once, stored hashed, scoped per resource family, expiring; and
`manage.py apitoken`."""
import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.models import AuditEntry
from api import actions
from api.models import ApiToken
from tests.api.conftest import Api

pytestmark = pytest.mark.django_db


def test_it_stores_only_a_hash_of_the_token(tenants, alice):
    token, text = actions.create_token("alice", ["accounts:read"], name="backup script")
    assert text.startswith(f"ms_{token.prefix}_") and len(text) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert text not in repr(stored.__dict__) and stored.key_hash == actions.hash_token(text)
    entry = AuditEntry.objects.latest("id")
    assert entry.action == "api_token.create" and text not in repr(entry.after)


@pytest.mark.parametrize("scopes, method, path, allowed", [
    (["accounts:read"], "get", "accounts/", True),
    (["accounts:read"], "post", "accounts/", False),
    (["accounts:write"], "get", "accounts/", True),
    (["accounts:read"], "get", "aliases/", False),
    (["*:read"], "get", "aliases/", True),
    (["*:read"], "patch", "domains/{domain}/", False),
    (["*"], "patch", "domains/{domain}/", True),
    (["sieve:read"], "get", "accounts/{bob}/sieve/", True),
    (["accounts:write"], "get", "accounts/{bob}/sieve/", False),
    (["audit:read"], "get", "audit/", True),
    (["stats:read"], "get", "stats/", True),
    (["stats:read"], "get", "login-events/", False),
])
def test_it_checks_the_tokens_scopes(tenants, alice, bob, example, scopes, method, path, allowed):
    _, text = actions.create_token("alice", scopes)
    body = {"default_quota": 1} if method == "patch" else {"address": "x@example.test"} if method == "post" else None
    response = Api(text).call(method, path.format(domain=example.pk, bob=bob.pk), body)
    if allowed:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == 403
        assert response.json_body["detail"].startswith("This token lacks the scope ")


def test_it_refuses_expired_revoked_and_forged_tokens(tenants, alice):
    token, text = actions.create_token("alice", ["*"], expires_in=timedelta(days=1))
    assert Api(text).get("accounts/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert Api(text).get("accounts/").json_body == {"detail": "Invalid or expired token", "code": "authentication_failed"}
    _, other = actions.create_token("alice", ["*"])
    forged = other[:-4] + ("AAAA" if not other.endswith("AAAA") else "BBBB")
    assert Api(forged).get("accounts/").status_code == 401
    assert Api("ms_nothing_here").get("accounts/").status_code == 401
    actions.revoke_token(other)
    assert Api(other).get("accounts/").status_code == 401
    alice.is_active = False
    alice.save()
    _, text = actions.create_token("root", ["*"])
    assert Api(text).get("accounts/").status_code == 200


def test_it_refuses_unknown_scopes_and_durations(tenants):
    from accounts.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown scope 'accounts:admin'"):
        actions.create_token("alice", ["accounts:admin"])
    with pytest.raises(InvalidInput, match="unknown scope 'mail:read'"):
        actions.create_token("alice", ["mail:read"])
    with pytest.raises(InvalidInput, match="not a duration"):
        actions.parse_duration("30 days")
    assert actions.parse_duration("2w") == timedelta(days=14)


def run(*args):
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def test_it_makes_lists_and_revokes_tokens_from_the_command_line(tenants, alice):
    out, err = run("apitoken", "create", "alice", "--scope", "accounts:write,aliases:read", "--expires", "30d",
                   "--name", "provisioning")
    text = out.strip()
    assert text.startswith("ms_") and "\n" not in text
    assert "token for alice with accounts:write, aliases:read; expires " in err and "not shown again" in err
    token = ApiToken.objects.get()
    assert timedelta(days=29, hours=23) < token.expires - timezone.now() <= timedelta(days=30)
    assert Api(text).get("accounts/").status_code == 200
    listed, _ = run("apitoken", "list")
    assert f"ms_{token.prefix}" in listed and "alice" in listed and text not in listed
    with pytest.raises(CommandError, match="unknown scope"):
        run("apitoken", "create", "alice", "--scope", "everything")
    with pytest.raises(CommandError, match="there is no active user nobody"):
        run("apitoken", "create", "nobody", "--scope", "*")
    # A domain admin may make tokens for themselves only.
    with pytest.raises(CommandError, match="there is no active user root"):
        run("apitoken", "create", "root", "--scope", "*", "--as", "alice")
    run("apitoken", "revoke", f"ms_{token.prefix}")
    assert not ApiToken.objects.exists()
    assert Api(text).get("accounts/").status_code == 401


def test_it_lets_a_browser_session_use_the_api(client, tenants, alice):
    client.force_login(alice)
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 200
    assert [row["address"] for row in response.json()["results"]] == ["bob@example.test"]
    # A session write needs the CSRF token, as any form does.
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    response = strict.post("/api/v1/aliases/", {"address": "x@example.test", "targets": ["bob@example.test"]},
                           content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


def test_it_lists_tokens_in_the_admin_without_secrets_and_revokes_them(client, tenants, root, alice):
    token, text = actions.create_token("alice", ["accounts:read"], name="backup")
    client.force_login(root)
    page = client.get("/admin/api/apitoken/").content.decode()
    assert f"ms_{token.prefix}_…" in page and text not in page and token.key_hash not in page
    response = client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert response.status_code == 302
    assert not ApiToken.objects.exists()
    entry = AuditEntry.objects.latest("id")
    assert (entry.action, entry.actor_name, entry.via) == ("api_token.revoke", "root", "admin")
    client.force_login(alice)
    assert client.get("/admin/api/apitoken/").status_code == 403
