"""What each endpoint does, through real tokens: writes land through the actions (and are
audited "via api"), refusals are JSON with field messages, lists page by cursor, filter,
search and order."""
import pytest

from accounts import actions
from accounts.models import Account, Alias, AuditEntry, Domain, Redirect
from mailstore.models import Blob
from mta.models import QueuedMessage, QueuedRecipient, SmartHost
from sieve import actions as sieve_actions

pytestmark = pytest.mark.django_db

MiB = 1024**2
PASSWORD = "a perfectly good password 9"


@pytest.fixture
def alice_api(tenants, as_user):
    return as_user(tenants["alice"])


@pytest.fixture
def root_api(tenants, as_user):
    return as_user(tenants["root"])


def test_it_creates_changes_and_removes_an_account(alice_api, alice):
    response = alice_api.post("accounts/", {
        "address": "Dave@Example.test", "password": PASSWORD, "quota": 10 * MiB, "display_name": "Dave",
        "messages_per_hour": 50, "send_as": ["dave.d@example.test"],
    })
    assert response.status_code == 201, response.content
    body = response.json_body
    assert {k: body[k] for k in ("address", "domain", "display_name", "quota", "quota_used", "active",
                                 "messages_per_hour", "recipients_per_day", "send_as")} == {
        "address": "dave@example.test", "domain": "example.test", "display_name": "Dave", "quota": 10 * MiB,
        "quota_used": 0, "active": True, "messages_per_hour": 50, "recipients_per_day": None,
        "send_as": ["dave.d@example.test"],
    }
    assert "password" not in body
    dave = Account.objects.get(localpart="dave")
    assert dave.check_password(PASSWORD)
    pk = body["id"]
    response = alice_api.patch(f"accounts/{pk}/", {"quota": 20 * MiB, "active": False, "display_name": "D."})
    assert response.status_code == 200 and response.json_body["quota"] == 20 * MiB
    assert alice_api.post(f"accounts/{pk}/password/", {"password": "another good password 8"}).status_code == 204
    dave.refresh_from_db()
    assert dave.check_password("another good password 8") and not dave.active
    usage = alice_api.get(f"accounts/{pk}/usage/").json_body
    assert usage == {"quota": 20 * MiB, "quota_used": 0, "quota_percent": 0, "messages_last_hour": 0,
                     "messages_per_hour": 50, "recipients_last_day": 0, "recipients_per_day": 2000}
    assert alice_api.delete(f"accounts/{pk}/").status_code == 204
    assert not Account.objects.filter(localpart="dave").exists()
    entries = AuditEntry.objects.filter(object_repr="dave@example.test").order_by("id")
    assert {(e.actor_name, e.via) for e in entries} == {("alice", "api")}
    assert [e.action for e in entries][0] == "account.create" and entries.last().action == "account.remove"


def test_it_answers_refusals_as_json_with_field_messages(alice_api, bob):
    response = alice_api.post("accounts/", {"address": "x@example.test", "quota": -1, "messages_per_hour": "lots"})
    assert response.status_code == 400
    assert response.json_body["code"] == "invalid"
    assert set(response.json_body["fields"]) == {"quota", "messages_per_hour"}
    assert response.json_body["detail"].startswith(("quota: ", "messages_per_hour: "))
    response = alice_api.post("accounts/", {"address": "bob@example.test"})
    assert response.status_code == 409
    assert response.json_body == {"detail": "bob@example.test already exists as an account", "code": "conflict"}
    response = alice_api.post("accounts/", {"address": "not an address"})
    assert response.status_code == 400 and response.json_body["code"] == "invalid"
    response = alice_api.post("accounts/", {"address": "weak@example.test", "password": "123"})
    assert response.status_code == 400 and "too short" in response.json_body["detail"]
    response = alice_api.call("post", "accounts/", None)
    assert response.status_code == 400 and response.json_body["fields"] == {"address": ["This field is required."]}


def test_it_enforces_the_domains_limits_with_409(alice_api, root, bob):
    actions.set_domain_limits("example.test", max_accounts=1, max_aliases=2, max_quota_total=150 * MiB)
    response = alice_api.post("accounts/", {"address": "dave@example.test", "quota": MiB})
    assert response.status_code == 409
    assert response.json_body == {"detail": "domain example.test may have at most 1 account(s)",
                                  "code": "limit_exceeded"}
    response = alice_api.patch(f"accounts/{bob.pk}/", {"quota": 151 * MiB})
    assert response.status_code == 409 and "50M is left" in response.json_body["detail"]
    response = alice_api.post("aliases/", {"address": "more@example.test", "targets": ["bob@example.test"]})
    assert response.status_code == 409 and response.json_body["code"] == "limit_exceeded"


def test_it_changes_several_fields_all_or_nothing(alice_api, bob):
    actions.set_domain_limits("example.test", max_quota_total=150 * MiB)
    response = alice_api.patch(f"accounts/{bob.pk}/", {"display_name": "Robert", "quota": 151 * MiB})
    assert response.status_code == 409
    bob.refresh_from_db()
    assert bob.display_name == "Bob"


def test_it_manages_aliases_and_redirects(alice_api, bob):
    response = alice_api.post("aliases/", {"address": "@example.test", "targets": ["bob@example.test"]})
    assert response.status_code == 201, response.content
    catchall = response.json_body
    assert (catchall["address"], catchall["targets"]) == ("@example.test", ["bob@example.test"])
    response = alice_api.patch(f"aliases/{catchall['id']}/", {"targets": ["bob@example.test", "x@elsewhere.invalid"]})
    assert response.json_body["targets"] == ["bob@example.test", "x@elsewhere.invalid"]
    assert alice_api.delete(f"aliases/{catchall['id']}/").status_code == 204
    response = alice_api.post("aliases/", {"address": "typo@example.test", "targets": ["nobody@example.test"]})
    assert response.status_code == 400
    assert response.json_body == {"detail": "target nobody@example.test does not exist in a local domain",
                                  "code": "invalid"}
    response = alice_api.post("redirects/", {"address": "left@example.test", "target": "left@elsewhere.invalid"})
    assert response.status_code == 201 and response.json_body["target"] == "left@elsewhere.invalid"
    assert alice_api.delete(f"redirects/{response.json_body['id']}/").status_code == 204
    assert set(Alias.objects.values_list("localpart", flat=True)) == {"info", "sales"}
    assert not Redirect.objects.filter(localpart="left").exists()


def test_it_pages_filters_searches_and_orders(alice_api, example):
    Account.objects.bulk_create(
        Account(domain=example, localpart=f"user{i:03}", quota=MiB, quota_used=i, active=i % 2 == 0)
        for i in range(120)
    )
    seen, url = [], "accounts/?page_size=50&ordering=localpart"
    while url:
        page = alice_api.get(url if url.startswith("/") else url).json_body
        seen += [row["address"] for row in page["results"]]
        url = page["next"] and page["next"].split("testserver", 1)[1]
    assert len(seen) == 121 and seen == sorted(seen)
    assert page["previous"]
    active = alice_api.get("accounts/", active="false", page_size=500).json_body["results"]
    assert len(active) == 60 and not any(row["active"] for row in active)
    found = alice_api.get("accounts/", search="user01").json_body["results"]
    assert [row["address"] for row in found] == [f"user01{i}@example.test" for i in range(10)]
    assert len(alice_api.get("accounts/", search="@example.test", page_size=500).json_body["results"]) == 121
    newest = alice_api.get("accounts/", ordering="-quota_used", page_size=1).json_body["results"]
    assert newest[0]["address"] == "user119@example.test"
    response = alice_api.get("accounts/", active="perhaps")
    assert response.status_code == 400 and response.json_body["fields"] == {"active": ["Must be true or false."]}
    assert alice_api.get("accounts/", domain="mallory.example").json_body["results"] == []


def test_it_manages_domains_for_the_superadmin(root_api):
    response = root_api.post("domains/", {"name": "New.Example", "default_quota": MiB, "max_accounts": 10})
    assert response.status_code == 201, response.content
    body = response.json_body
    assert (body["name"], body["max_accounts"], body["account_count"]) == ("new.example", 10, 0)
    response = root_api.patch(f"domains/{body['id']}/", {"max_quota_total": 5 * MiB, "messages_per_hour": 10})
    assert response.json_body["max_quota_total"] == 5 * MiB and response.json_body["max_accounts"] == 10
    response = root_api.post("domain-aliases/", {"name": "new.example.net", "target": "new.example"})
    assert response.status_code == 201 and response.json_body["target"] == "new.example"
    assert root_api.delete(f"domain-aliases/{response.json_body['id']}/").status_code == 204
    example = Domain.objects.get(name="example.test")
    response = root_api.delete(f"domains/{example.pk}/")
    assert response.status_code == 409 and "still has 1 account" in response.json_body["detail"]
    assert root_api.delete(f"domains/{example.pk}/", force="true").status_code == 204
    assert root_api.delete(f"domains/{body['id']}/").status_code == 204
    assert list(Domain.objects.values_list("name", flat=True)) == ["mallory.example"]


SCRIPT = 'require "fileinto";\nif header :contains "subject" "[spam]" { fileinto "Junk"; }\n'


def test_it_lists_gets_puts_activates_and_deletes_sieve_scripts(alice_api, bob):
    base = f"accounts/{bob.pk}/sieve/"
    assert alice_api.get(base).json_body == []
    response = alice_api.put(base + "filters/", {"text": SCRIPT})
    assert response.status_code == 200 and response.json_body["active"] is False
    response = alice_api.put(base + "broken/", {"text": "if true {"})
    assert response.status_code == 400 and response.json_body["code"] == "invalid"
    assert "line" in response.json_body["detail"]
    assert alice_api.post(base + "filters/activate/").json_body["active"] is True
    assert [(s["name"], s["active"]) for s in alice_api.get(base).json_body] == [("filters", True)]
    assert alice_api.get(base + "filters/").json_body["text"] == SCRIPT
    response = alice_api.delete(base + "filters/")
    assert response.status_code == 409 and response.json_body["detail"] == "the active script cannot be deleted"
    assert alice_api.post(f"accounts/{bob.pk}/sieve-deactivate/").status_code == 204
    assert alice_api.delete(base + "filters/").status_code == 204
    assert alice_api.get(base + "filters/").status_code == 404
    assert not sieve_actions.active_script(bob)
    assert list(AuditEntry.objects.filter(object_type="sieve").values_list("action", flat=True).order_by("id")) == [
        "sieve.put", "sieve.activate", "sieve.activate", "sieve.delete"
    ]


def queued(count):
    blob = Blob.objects.get_or_create(name="test/queued", defaults={"size": 2048, "sha256": "0" * 64})[0]
    messages = QueuedMessage.objects.bulk_create(
        QueuedMessage(blob=blob, mail_from="bob@example.test", queue_id=f"Q{i:07}") for i in range(count)
    )
    QueuedRecipient.objects.bulk_create(
        QueuedRecipient(message=m, address=f"r{i}@dest.example", domain="dest.example",
                        state=QueuedRecipient.State.DEFERRED, attempts=1)
        for i, m in enumerate(messages)
    )
    return messages


def test_it_lists_holds_releases_retries_and_deletes_queued_mail(root_api, queue_kicks,
                                                                 django_capture_on_commit_callbacks):
    first, second = queued(2)
    listed = root_api.get("queue/", state="deferred").json_body["results"]
    assert [m["queue_id"] for m in listed] == ["Q0000000", "Q0000001"]
    assert listed[0]["recipients"][0] | {"id": 0, "next_attempt_at": None} == {
        "id": 0, "address": "r0@dest.example", "state": "deferred", "attempts": 1, "next_attempt_at": None,
        "last_error": "", "status": "", "remote_mta": "", "delivered_at": None,
    }
    assert root_api.post(f"queue/{first.pk}/hold/").json_body == {"changed": 1}
    assert root_api.get("queue/", state="held").json_body["results"][0]["queue_id"] == "Q0000000"
    with django_capture_on_commit_callbacks(execute=True):
        assert root_api.post(f"queue/{first.pk}/release/").json_body == {"changed": 1}
        assert root_api.post(f"queue/{second.pk}/retry/").json_body == {"changed": 1}
    assert queue_kicks == ["dest.example", "dest.example"]
    assert root_api.delete(f"queue/{second.pk}/").status_code == 204
    assert list(QueuedMessage.objects.values_list("queue_id", flat=True)) == ["Q0000000"]
    assert root_api.get(f"queue/{second.pk}/").status_code == 404
    actions_done = list(AuditEntry.objects.filter(object_type="queue").order_by("id").values_list("action", "actor_name"))
    assert actions_done == [("queue.hold", "root"), ("queue.release", "root"), ("queue.retry", "root"),
                            ("queue.delete", "root")]


def test_it_sets_and_removes_routes_and_never_shows_a_password(root_api):
    response = root_api.post("routes/", {"kind": "smarthost", "host": "relay.example.net", "port": 587,
                                         "username": "me", "password": "relay secret"})
    assert response.status_code == 201, response.content
    route = response.json_body
    assert (route["kind"], route["tls"], route["has_password"]) == ("smarthost", "starttls", True)
    assert "relay secret" not in str(root_api.get("routes/").content)
    assert "password" not in route
    response = root_api.post("routes/", {"kind": "smarthost", "host": "other.example.net"})
    assert response.status_code == 409
    response = root_api.put(f"routes/{route['id']}/", {"kind": "smarthost", "host": "other.example.net", "port": 587,
                                                       "username": "me", "password": None})
    assert response.status_code == 200 and response.json_body["host"] == "other.example.net"
    assert response.json_body["has_password"] is True  # kept
    response = root_api.put(f"routes/{route['id']}/", {"kind": "transport", "domain": "x.example", "host": "h.example"})
    assert response.status_code == 400 and "cannot change" in response.json_body["detail"]
    response = root_api.post("routes/", {"kind": "relay", "domain": "backup.example", "host": "10.0.0.1",
                                         "verify_recipients": "list", "recipients": ["a@backup.example"]})
    assert response.status_code == 201 and response.json_body["recipients"] == ["a@backup.example"]
    response = root_api.post("routes/", {"kind": "transport", "domain": "example.test", "host": "x.example.net"})
    assert response.status_code == 400 and "is a local domain" in response.json_body["detail"]
    assert root_api.delete(f"routes/{route['id']}/").status_code == 204
    assert list(SmartHost.objects.values_list("domain", flat=True)) == ["backup.example"]
    assert [e.action for e in AuditEntry.objects.filter(object_type="route").order_by("id")] == [
        "route.set_smarthost", "route.set_smarthost", "route.add_relay_domain", "route.clear_smarthost"
    ]


def test_it_serves_the_schema_and_local_docs(db):
    from django.test import Client

    client = Client()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/api/v1/accounts/", "/api/v1/accounts/{id}/password/", "/api/v1/queue/{id}/hold/",
            "/api/v1/accounts/{account_pk}/sieve/{name}/", "/api/v1/stats/"} <= set(paths)
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs and "//cdn" not in docs and "unpkg" not in docs and "jsdelivr" not in docs
    assert "/static/drf_spectacular_sidecar/" in docs
    redoc = client.get("/api/redoc/").content.decode()
    assert "/static/drf_spectacular_sidecar/redoc" in redoc and "cdn" not in redoc
