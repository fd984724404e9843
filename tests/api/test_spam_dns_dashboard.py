"""Spam thresholds and allow/block lists, the DNS doctor and the dashboard through the API,
with the personas: root (superadmin), alice (example.test, bob's domain) and mallory
(mallory.example, carol's). Another tenant's rows are 404 like missing ones; writes are the
audited actions ("via api")."""
import pytest

from accounts import actions
from accounts.models import AuditEntry, Domain
from antispam import actions as spam_actions
from antispam.models import ListEntry, SpamSettings
from ops import dnsdoctor
from tests.api.conftest import ids
from tests.dnsserver import DNSServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def spam_world(tenants, bob, carol, example, mallory_domain):
    """An entry and thresholds for each tenant's domain and account."""
    rows = {}
    for who, domain, account in (("alice", example, bob), ("mallory", mallory_domain, carol)):
        rows[who] = {
            "spam-lists": [
                spam_actions.add_list_entry("block", "spam.invalid", domain=domain).pk,
                spam_actions.add_list_entry("allow", "friend@pals.invalid", account=account).pk,
            ],
            "spam-settings": [
                spam_actions.set_thresholds(domain=domain, tag=4, junk=6, reject=12).pk,
                spam_actions.set_thresholds(account=account, junk=8).pk,
            ],
        }
    return rows


@pytest.mark.parametrize("resource", ["spam-lists", "spam-settings"])
@pytest.mark.parametrize("persona, other", [("alice", "mallory"), ("mallory", "alice")])
def test_it_lists_and_shows_only_the_tenants_own_spam_settings(spam_world, tenants, as_user, resource, persona,
                                                                 other):
    api = as_user(tenants[persona])
    assert ids(api.get(f"{resource}/")) == sorted(spam_world[persona][resource])
    for pk in spam_world[persona][resource]:
        assert api.get(f"{resource}/{pk}/").status_code == 200
    for pk in spam_world[other][resource]:
        response = api.get(f"{resource}/{pk}/")
        assert response.status_code == 404 and response.json_body == {"detail": "Not found.", "code": "not_found"}
    everything = ids(as_user(tenants["root"]).get(f"{resource}/"))
    assert everything == sorted(spam_world["alice"][resource] + spam_world["mallory"][resource])


def test_it_shows_a_list_entry_with_its_scope(spam_world, tenants, as_user):
    api = as_user(tenants["alice"])
    rows = api.get("spam-lists/", ordering="pattern").json_body["results"]
    assert [{k: row[k] for k in ("kind", "pattern", "domain", "account")} for row in rows] == [
        {"kind": "allow", "pattern": "friend@pals.invalid", "domain": None, "account": "bob@example.test"},
        {"kind": "block", "pattern": "spam.invalid", "domain": "example.test", "account": None},
    ]
    assert ids(api.get("spam-lists/", domain="example.test")) == [spam_world["alice"]["spam-lists"][0]]
    assert ids(api.get("spam-lists/", kind="allow")) == [spam_world["alice"]["spam-lists"][1]]


def test_it_adds_moves_and_removes_list_entries_through_the_audited_actions(spam_world, tenants, as_user, bob,
                                                                              example):
    api = as_user(tenants["alice"])
    response = api.post("spam-lists/", {"kind": "block", "pattern": " @Bad.Example.INVALID. ", "account": bob.address})
    assert response.status_code == 201, response.content
    created = response.json_body
    assert {k: created[k] for k in ("kind", "pattern", "domain", "account")} == {
        "kind": "block", "pattern": "bad.example.invalid", "domain": None, "account": "bob@example.test",
    }
    moved = api.post("spam-lists/", {"kind": "allow", "pattern": "spam.invalid", "domain": "example.test"})
    assert moved.status_code == 201 and moved.json_body["id"] == spam_world["alice"]["spam-lists"][0]
    assert ListEntry.objects.get(pk=moved.json_body["id"]).kind == "allow"
    assert api.delete(f"spam-lists/{created['id']}/").status_code == 204
    assert not ListEntry.objects.filter(pk=created["id"]).exists()
    entries = AuditEntry.objects.filter(object_type="spam").order_by("id")
    assert [(e.action, e.object_repr, e.actor_name, e.via, e.domain_name, e.before, e.after) for e in entries] == [
        ("spam.list_add", "bad.example.invalid on bob@example.test", "alice", "api", "example.test", None,
         {"kind": "block", "pattern": "bad.example.invalid"}),
        ("spam.list_add", "spam.invalid on example.test", "alice", "api", "example.test", {"kind": "block"},
         {"kind": "allow", "pattern": "spam.invalid"}),
        ("spam.list_remove", "bad.example.invalid on bob@example.test", "alice", "api", "example.test",
         {"kind": "block", "pattern": "bad.example.invalid"}, None),
    ]


@pytest.mark.parametrize("body, message", [
    ({"kind": "block", "pattern": "not a domain", "domain": "example.test"},
     "'not a domain' is not a domain name or an address"),
    ({"kind": "block", "pattern": "x@@y", "domain": "example.test"}, "'x@@y' is not an e-mail address"),
    ({"kind": "block", "pattern": "spam.invalid"}, "give a domain or an account, not both"),
    ({"kind": "block", "pattern": "spam.invalid", "domain": "example.test", "account": "bob@example.test"},
     "give a domain or an account, not both"),
])
def test_it_refuses_a_bad_list_entry_with_a_clear_message_and_writes_nothing(spam_world, tenants, as_user, body,
                                                                             message):
    api = as_user(tenants["alice"])
    before = ListEntry.objects.count(), AuditEntry.objects.count()
    response = api.post("spam-lists/", body)
    assert response.status_code == 400
    assert response.json_body == {"detail": message, "code": "invalid"}
    assert (ListEntry.objects.count(), AuditEntry.objects.count()) == before


def test_it_refuses_a_bad_kind_as_a_field_error(spam_world, tenants, as_user):
    response = as_user(tenants["alice"]).post("spam-lists/", {"kind": "maybe", "pattern": "x.invalid",
                                                              "domain": "example.test"})
    assert response.status_code == 400 and response.json_body["fields"] == {"kind": ['"maybe" is not a valid choice.']}


@pytest.mark.parametrize("method, path, body", [
    ("post", "spam-lists/", {"kind": "block", "pattern": "x.invalid", "domain": "mallory.example"}),
    ("post", "spam-lists/", {"kind": "block", "pattern": "x.invalid", "account": "carol@mallory.example"}),
    ("delete", "spam-lists/{list}/", None),
    ("post", "spam-settings/", {"domain": "mallory.example", "junk_threshold": 1}),
    ("post", "spam-settings/", {"account": "carol@mallory.example", "junk_threshold": 1}),
    ("put", "spam-settings/{settings}/", {"junk_threshold": 1}),
])
def test_it_answers_404_for_another_tenants_spam_settings_and_changes_nothing(spam_world, tenants, as_user, method,
                                                                             path, body):
    api = as_user(tenants["alice"])
    before = (sorted(ListEntry.objects.values_list("pk", "kind", "pattern")),
              sorted(SpamSettings.objects.values_list("pk", "junk_threshold")), AuditEntry.objects.count())
    for n in range(2):
        url = path.format(list=spam_world["mallory"]["spam-lists"][n], settings=spam_world["mallory"]["spam-settings"][n])
        response = api.call(method, url, body)
        assert response.status_code == 404, response.content
        assert response.json_body["code"] == "not_found"
    after = (sorted(ListEntry.objects.values_list("pk", "kind", "pattern")),
             sorted(SpamSettings.objects.values_list("pk", "junk_threshold")), AuditEntry.objects.count())
    assert after == before


def test_it_sets_and_replaces_thresholds(spam_world, tenants, as_user, bob):
    api = as_user(tenants["alice"])
    pk = spam_world["alice"]["spam-settings"][1]
    response = api.put(f"spam-settings/{pk}/", {"tag_threshold": 3.5, "junk_threshold": 7, "never_reject": True})
    assert response.status_code == 200, response.content
    assert response.json_body == {
        "id": pk, "domain": None, "account": "bob@example.test", "tag_threshold": 3.5, "junk_threshold": 7.0,
        "reject_threshold": None, "never_reject": True,
    }
    again = api.post("spam-settings/", {"account": "bob@example.test", "junk_threshold": 9})
    assert again.status_code == 201 and again.json_body["id"] == pk and again.json_body["tag_threshold"] is None
    entry = AuditEntry.objects.filter(action="spam.thresholds").latest("id")
    assert (entry.object_repr, entry.via, entry.before, entry.after) == (
        "spam thresholds of bob@example.test", "api",
        {"tag": 3.5, "junk": 7.0, "reject": None, "never_reject": True},
        {"tag": None, "junk": 9, "reject": None, "never_reject": False},
    )


def test_it_refuses_thresholds_out_of_order_and_keeps_the_old_ones(spam_world, tenants, as_user):
    pk = spam_world["alice"]["spam-settings"][0]
    response = as_user(tenants["alice"]).put(f"spam-settings/{pk}/", {"tag_threshold": 9, "junk_threshold": 5})
    assert response.status_code == 400
    assert response.json_body == {"detail": "the Junk threshold cannot be below the tag threshold", "code": "invalid"}
    row = SpamSettings.objects.get(pk=pk)
    assert (row.tag_threshold, row.junk_threshold, row.reject_threshold) == (4, 6, 12)


def test_it_needs_the_spam_scope(spam_world, tenants):
    from api import actions as api_actions
    from tests.api.conftest import Api

    _, text = api_actions.create_token("alice", ["spam:read"])
    api = Api(text)
    assert api.get("spam-lists/").status_code == 200
    response = api.post("spam-lists/", {"kind": "block", "pattern": "x.invalid", "domain": "example.test"})
    assert response.status_code == 403 and response.json_body["detail"] == "This token lacks the scope spam:write"
    _, text = api_actions.create_token("alice", ["accounts:write"])
    assert Api(text).get("spam-settings/").status_code == 403


# The DNS doctor ------------------------------------------------------------------------

HOST = "mail.example.test"


@pytest.fixture
def dns(settings):
    with DNSServer({}, ttl=0) as server:
        settings.MAILSUITE_DNS_SERVERS = [server.address]
        settings.MAILSUITE_HOSTNAME = HOST
        settings.MAILSUITE_DNSBL_ZONES = ()
        yield server


def domain_pk(name):
    return Domain.objects.get(name=name).pk


def test_it_lists_the_records_to_publish_for_the_tenants_domains_only(tenants, as_user, dns):
    api = as_user(tenants["alice"])
    response = api.get(f"domains/{domain_pk('example.test')}/dns-records/")
    assert response.status_code == 200, response.content
    body = response.json_body
    expected = dnsdoctor.records(Domain.objects.get(name="example.test"))
    assert body["domain"] == "example.test"
    assert [(r["name"], r["type"], r["value"]) for r in body["records"]] == [(r.name, r.type, r.value) for r in expected]
    assert body["records"][0]["zone_line"] == "example.test. 3600 IN MX 10 mail.example.test. ; " + expected[0].comment
    assert body["zone"] == "".join(record.zone_line() + "\n" for record in expected)
    for path in ("dns-records", "dns-check"):
        response = api.get(f"domains/{domain_pk('mallory.example')}/{path}/")
        assert response.status_code == 404 and response.json_body["code"] == "not_found"


def test_it_checks_a_domain_in_live_dns_and_says_what_to_fix(tenants, as_user, dns):
    example = Domain.objects.get(name="example.test")
    for record in dnsdoctor.records(example):
        if record.type == "MX":
            continue  # the one left out
        dns.set(record.name, record.type, [record.text if record.type == "TXT" else record.value])
    dns.set(HOST, "A", ["127.0.0.2"])
    dns.set("2.0.0.127.in-addr.arpa", "PTR", [HOST + "."])
    response = as_user(tenants["alice"]).get(f"domains/{example.pk}/dns-check/")
    assert response.status_code == 200, response.content
    body = response.json_body
    assert (body["domain"], body["hostname"], body["ok"]) == ("example.test", HOST, False)
    problems = [(f["what"], f["status"]) for f in body["records"] + body["server"] if f["status"] != "ok"]
    assert problems == [("MX", "missing")]
    mx = body["records"][0]
    assert mx["record"]["value"] == "10 mail.example.test." and "MX" in mx["fix"] and mx["found"] == []


def test_it_refuses_the_dns_doctor_for_a_server_name_that_cannot_be_in_dns(tenants, as_user, settings):
    settings.MAILSUITE_HOSTNAME = "localhost"
    response = as_user(tenants["alice"]).get(f"domains/{domain_pk('example.test')}/dns-records/")
    assert response.status_code == 400
    assert response.json_body["detail"].startswith("the server name 'localhost' cannot go in DNS")


# The dashboard and the statistics --------------------------------------------------------


def test_it_shows_the_dashboard_to_superadmins_only(tenants, as_user, dns):
    response = as_user(tenants["root"]).get("dashboard/")
    assert response.status_code == 200, response.content
    body = response.json_body
    assert set(body) == {"at", "queue", "counters", "server_dns", "domains_checked", "warnings"}
    assert body["queue"]["waiting"] == {"queued": 0, "deferred": 0, "held": 0}
    assert {"topic": "dns", "text": f"address of {HOST}: missing. publish A (and AAAA) records for {HOST}: "
            "this server's public IP"} in body["warnings"]
    for who in ("alice", "mallory"):
        refused = as_user(tenants[who]).get("dashboard/")
        assert refused.status_code == 403 and refused.json_body["detail"] == "Only a superadmin may use this endpoint"


def test_it_counts_every_domain_in_the_totals_and_caches_the_servers_numbers(tenants, as_user, monkeypatch):
    from api import views

    monkeypatch.setattr(views, "STATS_DOMAINS", 1)
    root = as_user(tenants["root"])
    first = root.get("stats/").json_body
    assert [row["name"] for row in first["domains"]] == ["example.test"]
    assert first["totals"] | {"quota_used": 0} == {
        "name": "", "accounts": 2, "aliases": 2, "redirects": 2, "quota_allocated": 200 * 1024**2, "quota_used": 0,
    }
    actions.create_account("dave@example.test", password="a perfectly good password 9", quota=1)
    assert root.get("stats/").json_body == first  # counted at most every STATS_CACHE_SECONDS
    assert as_user(tenants["alice"]).get("stats/").json_body["totals"]["accounts"] == 2  # a tenant's: live (bob, dave)
    monkeypatch.setattr(views, "STATS_CACHE_SECONDS", 0)
    fresh = root.get("stats/").json_body
    assert fresh["totals"]["accounts"] == 3 and fresh["computed"] > first["computed"]
