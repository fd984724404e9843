"""/api/v1/external-accounts/: remote POP3/IMAP accounts fetched into local ones (issue 12).

The remote password is write-only and stored encrypted; a domain admin sees and changes
only the rows of their domains' accounts (another tenant's row is a 404); the token scope
is `external`; bad input is a 400 naming the field."""
import json

import pytest

from accounts.models import AuditEntry
from mailsuite.lib import secrets
from mailstore import actions as store
from migration import fetching
from migration.models import ExternalAccount

pytestmark = pytest.mark.django_db

SECRET = "s3cret-remote-pw"


def new(account="bob@example.test", **extra):
    return {"account": account, "protocol": "imap", "host": "imap.remote.test", "username": "bob.remote",
            "password": SECRET, **extra}


def no_secret(response):
    assert SECRET not in response.content.decode()
    assert "password" not in json.dumps(response.json_body or {}).replace("has_password", "")


@pytest.fixture
def carols(carol):
    return fetching.add_external_account(
        carol, acting_user=None, protocol="pop3", host="pop.remote.test", username="carol.r",
        password=SECRET, tls="starttls")


def test_crud_by_a_domain_admin(tenants, as_user, bob):
    api = as_user(tenants["alice"])
    created = api.post("external-accounts/", new(remote_folders="INBOX\nArchive", keep=False))
    assert created.status_code == 201, created.content
    no_secret(created)
    row = created.json_body
    assert row["account"] == "bob@example.test" and row["port"] == 993 and row["tls"] == "implicit"
    assert row["has_password"] is True and row["keep"] is False and row["enabled"] is True
    assert row["remote_folders"] == "INBOX\nArchive" and row["local_folder"] == "INBOX"
    assert row["failures"] == 0 and row["last_error"] == "" and row["last_success"] is None
    stored = ExternalAccount.objects.get(pk=row["id"])
    assert stored.password != SECRET and secrets.decrypt(stored.password) == SECRET

    listed = api.get("external-accounts/")
    assert [r["id"] for r in listed.json_body["results"]] == [row["id"]]
    no_secret(listed)
    got = api.get(f"external-accounts/{row['id']}/")
    assert got.status_code == 200 and got.json_body == row
    no_secret(got)

    # A PATCH without a password (or an empty one) keeps the stored one.
    store.create_folder(bob, "Fetched")
    changed = api.patch(f"external-accounts/{row['id']}/", {"host": "mail.remote.test", "tls": "starttls",
                                                            "port": 143, "local_folder": "Fetched", "enabled": False,
                                                            "password": ""})
    assert changed.status_code == 200, changed.content
    no_secret(changed)
    assert changed.json_body["host"] == "mail.remote.test" and changed.json_body["port"] == 143
    assert changed.json_body["local_folder"] == "Fetched" and changed.json_body["enabled"] is False
    stored.refresh_from_db()
    assert secrets.decrypt(stored.password) == SECRET and stored.tls == "starttls"

    # A new password is stored encrypted and retries a backing-off account at once.
    ExternalAccount.objects.filter(pk=row["id"]).update(failures=3, next_attempt="2099-01-01T00:00:00Z")
    changed = api.patch(f"external-accounts/{row['id']}/", {"password": "another-one"})
    assert changed.status_code == 200 and "another-one" not in changed.content.decode()
    stored.refresh_from_db()
    assert secrets.decrypt(stored.password) == "another-one" and stored.next_attempt is None

    assert api.delete(f"external-accounts/{row['id']}/").status_code == 204
    assert not ExternalAccount.objects.filter(pk=row["id"]).exists()
    assert api.get(f"external-accounts/{row['id']}/").status_code == 404


def test_the_account_by_id_and_the_default_port(tenants, as_user, bob):
    api = as_user(tenants["root"])
    created = api.post("external-accounts/", new(account=str(bob.pk), protocol="pop3", tls="none", enabled=False))
    assert created.status_code == 201, created.content
    assert created.json_body["account"] == bob.address and created.json_body["port"] == 110
    assert created.json_body["enabled"] is False


def test_tenants_do_not_see_or_touch_each_others_rows(tenants, as_user, bob, carols):
    alice, mallory, root = (as_user(tenants[name]) for name in ("alice", "mallory", "root"))
    bobs = alice.post("external-accounts/", new()).json_body["id"]
    assert [r["id"] for r in alice.get("external-accounts/").json_body["results"]] == [bobs]
    assert [r["id"] for r in mallory.get("external-accounts/").json_body["results"]] == [carols.pk]
    assert sorted(r["id"] for r in root.get("external-accounts/").json_body["results"]) == sorted([bobs, carols.pk])

    for method, body in (("get", None), ("patch", {"host": "evil.test"}), ("delete", None)):
        response = mallory.call(method, f"external-accounts/{bobs}/", body)
        assert response.status_code == 404, (method, response.content)
    assert ExternalAccount.objects.get(pk=bobs).host == "imap.remote.test"

    # Nor add one to another tenant's account, by address or by id: the same 400 as an unknown one.
    for given in ("bob@example.test", str(bob.pk), "nobody@mallory.example"):
        response = mallory.post("external-accounts/", new(account=given))
        assert response.status_code == 400 and list(response.json_body["fields"]) == ["account"], response.content
        assert "example.test" not in response.json_body["detail"] or given == "bob@example.test"
    assert ExternalAccount.objects.count() == 2


@pytest.mark.parametrize("scopes, method, allowed", [
    (["external:read"], "get", True),
    (["external:read"], "post", False),
    (["external:write"], "post", True),
    (["accounts:write"], "get", False),
    (["*:read"], "get", True),
    (["*:read"], "post", False),
])
def test_the_token_scope(tenants, as_user, bob, scopes, method, allowed):
    api = as_user(tenants["alice"], scopes)
    response = api.call(method, "external-accounts/", new() if method == "post" else None)
    if allowed:
        assert response.status_code in (200, 201), response.content
    else:
        assert response.status_code == 403
        assert response.json_body["detail"].startswith("This token lacks the scope external:")
        assert not ExternalAccount.objects.exists()


@pytest.mark.parametrize("change, field", [
    ({"account": "nobody@example.test"}, "account"),
    ({"account": "not an address"}, "account"),
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"port": "x"}, "port"),
    ({"protocol": "smtp"}, "protocol"),
    ({"tls": "sometimes"}, "tls"),
    ({"password": ""}, "password"),
    ({"password": None}, "password"),
    ({"host": ""}, "host"),
    ({"local_folder": "Nowhere"}, "local_folder"),
])
def test_bad_input_is_a_400_naming_the_field(tenants, as_user, bob, change, field):
    api = as_user(tenants["alice"])
    body = {**new(), **change}
    response = api.post("external-accounts/", body)
    assert response.status_code == 400, response.content
    assert field in response.json_body["fields"] and response.json_body["code"] == "invalid"
    assert SECRET not in response.content.decode()
    assert not ExternalAccount.objects.exists()


def test_a_bad_patch_changes_nothing(tenants, as_user, bob):
    api = as_user(tenants["alice"])
    row = api.post("external-accounts/", new()).json_body
    for change, field in (({"port": -1}, "port"), ({"tls": "x"}, "tls"), ({"local_folder": "Nowhere"}, "local_folder"),
                          ({"host": "other.test", "local_folder": "Nowhere"}, "local_folder")):
        response = api.patch(f"external-accounts/{row['id']}/", change)
        assert response.status_code == 400 and field in response.json_body["fields"], response.content
    assert api.get(f"external-accounts/{row['id']}/").json_body == row


def test_every_change_is_audited_without_the_password(tenants, as_user, bob):
    api = as_user(tenants["alice"])
    row = api.post("external-accounts/", new()).json_body
    api.patch(f"external-accounts/{row['id']}/", {"host": "mail.remote.test"})
    api.patch(f"external-accounts/{row['id']}/", {"host": "mail.remote.test", "password": ""})  # changes nothing
    api.patch(f"external-accounts/{row['id']}/", {"host": "other.test", "local_folder": "Nowhere"})  # refused
    api.patch(f"external-accounts/{row['id']}/", {"password": "another-one"})
    api.delete(f"external-accounts/{row['id']}/")
    entries = list(AuditEntry.objects.filter(object_type="external").order_by("id"))
    assert [e.action for e in entries] == ["external.add", "external.change", "external.change", "external.remove"]
    assert {(e.actor, e.actor_name, e.via) for e in entries} == {
        (tenants["alice"], tenants["alice"].get_username(), "api")}
    assert {e.domain_name for e in entries} == {"example.test"}
    assert entries[0].object_repr == "bob.remote@imap.remote.test for bob@example.test"
    assert (entries[1].before["host"], entries[1].after["host"]) == ("imap.remote.test", "mail.remote.test")
    assert entries[2].after["password"] == "changed"
    logged = json.dumps([[e.before, e.after] for e in entries])
    assert SECRET not in logged and "another-one" not in logged
