"""The permission matrix: root (superadmin), alice (example.test) and mallory
(mallory.example) on every endpoint. Nothing of another tenant is listed, readable or
writable, and another tenant's object answers 404, exactly like a missing one."""
import pytest
from django.utils import timezone

from accounts import actions
from accounts.models import Account, Alias, AuditEntry, Domain, DomainAlias, LoginEvent, Redirect
from sieve import actions as sieve_actions
from tests.api.conftest import ids

pytestmark = pytest.mark.django_db

SCRIPT = 'require "fileinto";\nif header :contains "subject" "x" { fileinto "Junk"; }\n'


@pytest.fixture
def world(tenants, bob, carol):
    """Each tenant has one of everything; ids by tenant and resource."""
    actions.create_domain_alias("example.net", "example.test")
    actions.create_domain_alias("mallory.net", "mallory.example")
    now = timezone.now()
    for account in (bob, carol):
        LoginEvent.objects.create(account=account, address=account.address, service="imap", success=True,
                                  reason="ok", time=now)
        sieve_actions.put_script(account, "main", SCRIPT, activate=True)
    actions.set_quota(bob.address, 200 * 1024**2)
    actions.set_quota(carol.address, 200 * 1024**2)

    def of(domain):
        return {
            "domains": [Domain.objects.get(name=domain).pk],
            "domain-aliases": list(DomainAlias.objects.filter(target__name=domain).values_list("pk", flat=True)),
            "accounts": list(Account.objects.filter(domain__name=domain).values_list("pk", flat=True)),
            "aliases": list(Alias.objects.filter(domain__name=domain).values_list("pk", flat=True)),
            "redirects": list(Redirect.objects.filter(domain__name=domain).values_list("pk", flat=True)),
            "login-events": list(LoginEvent.objects.filter(account__domain__name=domain).values_list("pk", flat=True)),
            "audit": list(AuditEntry.objects.filter(domain_name=domain).values_list("pk", flat=True)),
        }

    return {"alice": of("example.test"), "mallory": of("mallory.example")}


TENANT_RESOURCES = ["domains", "domain-aliases", "accounts", "aliases", "redirects", "login-events", "audit"]


@pytest.mark.parametrize("resource", TENANT_RESOURCES)
@pytest.mark.parametrize("persona, other", [("alice", "mallory"), ("mallory", "alice")])
def test_it_lists_only_the_tenants_own_objects(world, tenants, as_user, resource, persona, other):
    api = as_user(tenants[persona])
    listed = ids(api.get(f"{resource}/", page_size=500))
    assert listed == sorted(world[persona][resource]) and listed
    assert not set(listed) & set(world[other][resource])
    for pk in world[persona][resource]:
        assert api.get(f"{resource}/{pk}/").status_code == 200
    for pk in world[other][resource]:
        response = api.get(f"{resource}/{pk}/")
        assert response.status_code == 404 and response.json_body == {"detail": "Not found.", "code": "not_found"}


@pytest.mark.parametrize("resource", TENANT_RESOURCES)
def test_it_lists_everything_for_the_superadmin(world, tenants, as_user, resource):
    listed = ids(as_user(tenants["root"]).get(f"{resource}/", page_size=500))
    assert set(world["alice"][resource]) | set(world["mallory"][resource]) <= set(listed)


WRITES = [
    ("patch", "domains", {"default_quota": 1}),
    ("delete", "domains", None),
    ("delete", "domain-aliases", None),
    ("patch", "accounts", {"quota": 1}),
    ("delete", "accounts", None),
    ("post", "accounts/{pk}/password", {"password": "a fine new password 7"}),
    ("get", "accounts/{pk}/usage", None),
    ("patch", "aliases", {"targets": ["bob@example.test"]}),
    ("delete", "aliases", None),
    ("delete", "redirects", None),
    ("get", "accounts/{pk}/sieve", None),
    ("get", "accounts/{pk}/sieve/main", None),
    ("put", "accounts/{pk}/sieve/main", {"text": "keep;"}),
    ("post", "accounts/{pk}/sieve/main/activate", None),
    ("post", "accounts/{pk}-deactivate", None),
    ("delete", "accounts/{pk}/sieve/main", None),
]


@pytest.mark.parametrize("method, path, body", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_it_answers_404_for_another_tenants_objects_and_changes_nothing(world, tenants, as_user, method, path,
                                                                        body):
    api = as_user(tenants["alice"])
    resource = path.split("/")[0].split("{")[0].rstrip("-") if "{" in path else path
    resource = "accounts" if path.startswith("accounts/{pk}") else resource
    before = AuditEntry.objects.count()
    for pk in world["mallory"][resource]:
        url = (path.replace("{pk}-deactivate", f"{pk}/sieve-deactivate").replace("{pk}", str(pk)) + "/"
               if "{pk}" in path else f"{path}/{pk}/")
        response = api.call(method, url, body)
        assert response.status_code == 404, (url, response.content)
        assert response.json_body["code"] == "not_found"
    assert AuditEntry.objects.count() == before
    carol = Account.objects.get(localpart="carol")
    assert carol.quota == 200 * 1024**2 and sieve_actions.active_script(carol).name == "main"


@pytest.mark.parametrize("resource, body", [
    ("accounts", {"address": "eve@mallory.example", "password": "a fine new password 7"}),
    ("aliases", {"address": "eve@mallory.example", "targets": ["bob@example.test"]}),
    ("aliases", {"address": "@mallory.example", "targets": ["bob@example.test"]}),
    ("redirects", {"address": "eve@mallory.example", "target": "eve@elsewhere.invalid"}),
])
def test_it_refuses_creating_in_another_tenants_domain_as_not_found(world, tenants, as_user, resource, body):
    response = as_user(tenants["alice"]).post(f"{resource}/", body)
    assert response.status_code == 404
    assert response.json_body == {"detail": "domain mallory.example does not exist (add it with: manage.py domain "
                                            "add mallory.example)", "code": "not_found"}


@pytest.mark.parametrize("method, path, body", [
    ("post", "domains/", {"name": "new.example"}),
    ("post", "domain-aliases/", {"name": "example.org", "target": "example.test"}),
    ("get", "routes/", None),
    ("post", "routes/", {"kind": "smarthost", "host": "relay.example.net"}),
    ("get", "queue/", None),
])
def test_it_keeps_server_wide_endpoints_for_superadmins(world, tenants, as_user, method, path, body):
    response = as_user(tenants["alice"]).call(method, path, body)
    assert response.status_code == 403, response.content
    assert response.json_body["code"] in ("forbidden", "permission_denied")
    assert as_user(tenants["root"]).call(method, path, body).status_code in (200, 201)


def test_it_refuses_a_domain_admin_the_superadmins_domain_fields(world, tenants, as_user):
    example = world["alice"]["domains"][0]
    api = as_user(tenants["alice"])
    response = api.patch(f"domains/{example}/", {"max_accounts": 1000})
    assert response.status_code == 403
    assert response.json_body == {"detail": "only a superadmin may set a domain's limits", "code": "forbidden"}
    assert api.patch(f"domains/{example}/", {"default_quota": 1024}).status_code == 200


def test_it_shows_statistics_of_the_tenants_own_domains(world, tenants, as_user):
    stats = as_user(tenants["alice"]).get("stats/").json_body
    assert [row["name"] for row in stats["domains"]] == ["example.test"]
    assert stats["domains"][0] | {"quota_used": 0} == {
        "name": "example.test", "accounts": 1, "aliases": 1, "redirects": 1,
        "quota_allocated": 200 * 1024**2, "quota_used": 0,
    }
    assert "queue" not in stats
    everything = as_user(tenants["root"]).get("stats/").json_body
    assert everything["totals"]["accounts"] == 2 and set(everything["queue"]) >= {"queued", "held"}


def test_it_refuses_anonymous_callers(world):
    from django.test import Client

    response = Client().get("/api/v1/accounts/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["code"] == "not_authenticated"
