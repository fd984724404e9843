"""The operator admin: lists that scale, and every write through accounts.actions.

Personas: alice has a mailbox in example.test (the domain the admin user runs), bob is
a second mailbox there. Test setup may write rows directly (bulk_create, for speed);
the admin under test may not.
"""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import actions
from accounts.models import Account, Alias, AliasTarget, Domain, DomainAlias, Redirect
from mailstore.models import DEFAULT_FOLDERS, Folder

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "correct-horse-battery-staple"
MiB = 1024**2
GiB = 1024**3
CROWD = 3000


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def example():
    return actions.create_domain("example.test")


@pytest.fixture
def alice(example):
    return actions.create_account("alice@example.test", password=GOOD_PASSWORD, quota=GiB, display_name="Alice")


@pytest.fixture
def bob(example):
    return actions.create_account("bob@example.test", password=GOOD_PASSWORD, display_name="Bob")


def url(name, *args):
    return reverse(f"admin:{name}", args=args)


def add_accounts(domain, count, start=0):
    Account.objects.bulk_create(
        Account(domain=domain, localpart=f"user{i:05}", quota=GiB, quota_used=i * 1000)
        for i in range(start, start + count)
    )


def results(response):
    return [str(obj) for obj in response.context["cl"].result_list]


def account_list_queries(client, **params):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url("accounts_account_changelist"), params)
    assert response.status_code == 200
    return len(queries)


def test_it_counts_account_list_queries_independent_of_rows(admin_client, example, django_assert_max_num_queries):
    add_accounts(example, 10)
    account_list_queries(admin_client)
    few = account_list_queries(admin_client)
    add_accounts(example, CROWD, start=10)
    with django_assert_max_num_queries(few):
        account_list_queries(admin_client)
    assert account_list_queries(admin_client, active="1", domain_active="1", q="user") == few


def test_it_shows_account_counts_per_domain(admin_client, example, alice, bob):
    actions.create_domain("empty.test")
    response = admin_client.get(url("accounts_domain_changelist"))
    counts = {str(domain): domain.account_count for domain in response.context["cl"].result_list}
    assert counts == {"empty.test": 0, "example.test": 2}


def test_it_searches_domains_by_their_unicode_name(admin_client, example):
    actions.create_domain("bücher.example")
    response = admin_client.get(url("accounts_domain_changelist"), {"q": "bücher"})
    assert results(response) == ["bücher.example"]


def test_it_searches_aliases_by_target(admin_client, alice, bob):
    actions.create_alias("team@example.test", ["bob@example.test"])
    actions.create_alias("sales@example.test", ["alice@example.test"])
    response = admin_client.get(url("accounts_alias_changelist"), {"q": "bob@"})
    assert results(response) == []  # bob is an account, not an alias
    response = admin_client.get(url("accounts_alias_changelist"), {"q": "alice"})
    assert results(response) == ["sales@example.test"]


def test_it_searches_folders_by_account_address(admin_client, alice, bob):
    response = admin_client.get(url("mailstore_folder_changelist"), {"q": "bob@example.test"})
    names = [folder.name for folder in response.context["cl"].result_list]
    assert sorted(names) == sorted(name for name, _ in DEFAULT_FOLDERS)


def test_it_filters_accounts_by_domain_active(admin_client, example, alice):
    actions.create_domain("off.test")
    actions.create_account("carol@off.test", password=GOOD_PASSWORD)
    actions.set_domain_active("off.test", False)
    response = admin_client.get(url("accounts_account_changelist"), {"domain_active": "0"})
    assert results(response) == ["carol@off.test"]


def test_it_draws_the_quota_bar(admin_client, alice):
    Account.objects.filter(pk=alice.pk).update(quota_used=int(12.3 * MiB))
    actions.create_account("unlimited@example.test", password=GOOD_PASSWORD, quota=0)
    response = admin_client.get(url("accounts_account_changelist"))
    html = response.content.decode()
    assert "12.3M of 1G" in html
    assert "width:1%" in html
    assert "0B of unlimited" in html


# Adding and changing accounts -------------------------------------------------------


def add_account(client, domain, **fields):
    data = {
        "localpart": "carol",
        "domain": domain.pk,
        "display_name": "Carol",
        "password1": GOOD_PASSWORD,
        "password2": GOOD_PASSWORD,
        "quota": "500M",
        "active": "on",
        **fields,
    }
    return client.post(url("accounts_account_add"), data)


def form_errors(response):
    """Every error on the page's main form, as plain strings."""
    form = response.context["adminform"].form
    return [message for messages in form.errors.values() for message in messages]


def test_it_adds_an_account_with_its_folders_and_a_hashed_password(admin_client, example):
    response = add_account(admin_client, example)
    assert response.status_code == 302
    carol = Account.objects.get(localpart="carol", domain=example)
    assert (carol.display_name, carol.quota, carol.active) == ("Carol", 500 * MiB, True)
    assert carol.password.startswith("md5$") and GOOD_PASSWORD not in carol.password
    assert carol.check_password(GOOD_PASSWORD)
    names = set(Folder.objects.filter(account=carol).values_list("name", flat=True))
    assert names == {name for name, _ in DEFAULT_FOLDERS}


def test_it_gives_a_new_account_the_domain_default_quota(admin_client, example):
    actions.set_domain_default_quota("example.test", 2 * GiB)
    add_account(admin_client, example, quota="")
    assert Account.objects.get(localpart="carol").quota == 2 * GiB


def test_it_refuses_a_duplicate_address(admin_client, example, alice):
    response = add_account(admin_client, example, localpart="Alice")
    assert response.status_code == 200
    assert form_errors(response) == ["alice@example.test already exists as an account"]
    assert Account.objects.filter(localpart="alice").count() == 1


def test_it_refuses_an_address_taken_by_an_alias(admin_client, example, alice):
    actions.create_alias("carol@example.test", ["alice@example.test"])
    response = add_account(admin_client, example)
    assert form_errors(response) == ["carol@example.test already exists as an alias"]
    assert not Account.objects.filter(localpart="carol").exists()


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"password2": "something-else-entirely"}, "The two passwords do not match."),
        ({"password1": "short", "password2": "short"}, "too short"),
        ({"quota": "lots"}, "is not a size"),
        ({"localpart": "no spaces"}, "is not a valid local part"),
    ],
)
def test_it_refuses_a_bad_account_and_writes_nothing(admin_client, example, fields, error):
    response = add_account(admin_client, example, **fields)
    assert response.status_code == 200
    assert any(error in message for message in form_errors(response)), form_errors(response)
    assert not Account.objects.exists()
    assert not Folder.objects.exists()


def change_account(client, account, **fields):
    data = {"display_name": account.display_name, "quota": "1G", "active": "on", **fields}
    return client.post(url("accounts_account_change", account.pk), data)


def test_it_changes_an_account_through_the_actions(admin_client, alice):
    old_hash = alice.password
    response = change_account(
        admin_client,
        alice,
        display_name="Alice Liddell",
        quota="2G",
        active="",
        password1="a-new-long-passphrase",
        password2="a-new-long-passphrase",
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.display_name, alice.quota, alice.active) == ("Alice Liddell", 2 * GiB, False)
    assert alice.password != old_hash and alice.check_password("a-new-long-passphrase")


def test_it_keeps_the_password_when_none_is_given(admin_client, alice):
    old_hash = alice.password
    change_account(admin_client, alice, display_name="Al")
    alice.refresh_from_db()
    assert alice.password == old_hash and alice.display_name == "Al"


def test_it_saves_an_inexact_quota_unchanged(admin_client, alice):
    Account.objects.filter(pk=alice.pk).update(quota=1_500_000)
    page = admin_client.get(url("accounts_account_change", alice.pk)).content.decode()
    assert 'value="1500000"' in page
    response = change_account(admin_client, alice, quota="1500000", display_name="A")
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.quota == 1_500_000


def test_it_undoes_every_change_when_one_is_refused(admin_client, alice):
    response = change_account(admin_client, alice, display_name="Changed", quota="3G", password1="x", password2="x")
    assert "too short" in " ".join(form_errors(response))
    alice.refresh_from_db()
    assert (alice.display_name, alice.quota) == ("Alice", GiB)


def test_it_never_shows_a_password_hash(admin_client, alice):
    for page in (url("accounts_account_changelist"), url("accounts_account_change", alice.pk)):
        html = admin_client.get(page).content.decode()
        assert alice.password not in html
        assert alice.password.split("$")[-1] not in html


# Domains ----------------------------------------------------------------------------


def test_it_adds_a_domain(admin_client):
    response = admin_client.post(url("accounts_domain_add"), {"name": "Bücher.Example", "default_quota": "1G", "active": "on"})
    assert response.status_code == 302
    domain = Domain.objects.get()
    assert (domain.name, domain.default_quota) == ("xn--bcher-kva.example", GiB)


def test_it_refuses_a_duplicate_domain(admin_client, example):
    response = admin_client.post(url("accounts_domain_add"), {"name": "EXAMPLE.test", "active": "on"})
    assert form_errors(response) == ["domain example.test already exists"]


def test_it_changes_a_domain(admin_client, example):
    response = admin_client.post(url("accounts_domain_change", example.pk), {"default_quota": "5G"})
    assert response.status_code == 302
    example.refresh_from_db()
    assert (example.default_quota, example.active) == (5 * GiB, False)


def test_it_refuses_to_delete_a_domain_with_accounts(admin_client, example, alice):
    page = admin_client.get(url("accounts_domain_delete", example.pk)).content.decode()
    assert "example.test still has 1 account(s); remove them first" in page

    admin_client.post(url("accounts_domain_delete", example.pk), {"post": "yes"})
    assert Domain.objects.filter(pk=example.pk).exists()

    response = admin_client.post(
        url("accounts_domain_changelist"),
        {"action": "delete_selected", "_selected_action": [example.pk], "post": "yes"},
    )
    assert "example.test still has 1 account(s)" in response.content.decode()
    assert Domain.objects.filter(pk=example.pk).exists()
    assert Account.objects.filter(pk=alice.pk).exists()


def test_it_deletes_a_domain_with_accounts_when_forced(admin_client, example, alice):
    forced = url("accounts_domain_delete", example.pk) + "?force=1"
    page = admin_client.get(forced).content.decode()
    assert "Accounts: 1" in page and "Are you sure" in page
    response = admin_client.post(forced, {"post": "yes"})
    assert response.status_code == 302
    assert not Domain.objects.exists()
    assert not Account.objects.exists()
    assert not Folder.objects.exists()


def test_it_deletes_empty_domains_in_bulk(admin_client, example):
    other = actions.create_domain("other.test")
    admin_client.post(
        url("accounts_domain_changelist"),
        {"action": "delete_selected", "_selected_action": [example.pk, other.pk], "post": "yes"},
    )
    assert not Domain.objects.exists()


def test_it_adds_and_removes_a_domain_alias(admin_client, example):
    response = admin_client.post(url("accounts_domainalias_add"), {"name": "example.net", "target": example.pk})
    assert response.status_code == 302
    alias = DomainAlias.objects.get(name="example.net")
    response = admin_client.post(url("accounts_domainalias_add"), {"name": "example.test", "target": example.pk})
    assert form_errors(response) == ["domain example.test already exists"]
    admin_client.post(url("accounts_domainalias_delete", alias.pk), {"post": "yes"})
    assert not DomainAlias.objects.exists()


# Account deletion -------------------------------------------------------------------


def test_it_deletes_an_account_with_its_mail(admin_client, alice, bob):
    page = admin_client.get(url("accounts_account_delete", alice.pk)).content.decode()
    assert f"Folders: {len(DEFAULT_FOLDERS)}" in page
    admin_client.post(url("accounts_account_delete", alice.pk), {"post": "yes"})
    assert list(Account.objects.values_list("localpart", flat=True)) == ["bob"]
    assert not Folder.objects.filter(account_id=alice.pk).exists()


def test_it_deletes_selected_accounts(admin_client, alice, bob):
    response = admin_client.post(
        url("accounts_account_changelist"),
        {"action": "delete_selected", "_selected_action": [alice.pk, bob.pk], "post": "yes"},
        follow=True,
    )
    assert "Successfully deleted 2 accounts." in response.content.decode()
    assert not Account.objects.exists()
    assert not Folder.objects.exists()


# Aliases and redirects --------------------------------------------------------------


def test_it_adds_an_alias_with_targets(admin_client, example, alice, bob):
    response = admin_client.post(
        url("accounts_alias_add"),
        {"localpart": "team", "domain": example.pk, "targets": "alice@example.test,\r\nBob@Example.test  x@elsewhere.example"},
    )
    assert response.status_code == 302
    alias = Alias.objects.get(localpart="team")
    assert [t.address for t in alias.targets.all()] == [
        "alice@example.test",
        "bob@example.test",
        "x@elsewhere.example",
    ]


def test_it_adds_a_catchall_alias(admin_client, example, alice):
    admin_client.post(url("accounts_alias_add"), {"localpart": "", "domain": example.pk, "targets": "alice@example.test"})
    assert Alias.objects.get().is_catchall


def test_it_refuses_an_alias_loop(admin_client, example):
    response = admin_client.post(
        url("accounts_alias_add"), {"localpart": "loop", "domain": example.pk, "targets": "loop@example.test"}
    )
    assert form_errors(response) == ["alias loop: loop@example.test → loop@example.test"]
    assert not Alias.objects.exists()
    assert not AliasTarget.objects.exists()


def alias_change_data(alias, targets):
    """The change form as the browser posts it, with the read-only inline's management form."""
    count = alias.targets.count()
    return {
        "targets": targets,
        "targets-TOTAL_FORMS": count,
        "targets-INITIAL_FORMS": count,
        "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 1000,
    }


def test_it_changes_alias_targets(admin_client, alice, bob):
    team = actions.create_alias("team@example.test", ["alice@example.test"])
    page = admin_client.get(url("accounts_alias_change", team.pk)).content.decode()
    assert "current targets" in page.lower()
    response = admin_client.post(url("accounts_alias_change", team.pk), alias_change_data(team, "bob@example.test"))
    assert response.status_code == 302
    assert [t.address for t in team.targets.all()] == ["bob@example.test"]


def test_it_refuses_a_change_that_makes_a_loop(admin_client, alice):
    first = actions.create_alias("first@example.test", ["alice@example.test"])
    actions.create_alias("second@example.test", ["first@example.test"])
    response = admin_client.post(url("accounts_alias_change", first.pk), alias_change_data(first, "second@example.test"))
    assert form_errors(response) == [
        "alias loop: first@example.test → second@example.test → first@example.test"
    ]
    assert [t.address for t in first.targets.all()] == ["alice@example.test"]


def test_it_rolls_back_the_action_when_the_page_is_shown_again(admin_client, alice, bob):
    team = actions.create_alias("team@example.test", ["alice@example.test"])
    data = alias_change_data(team, "bob@example.test")
    del data["targets-TOTAL_FORMS"]  # a tampered inline: the page comes back with an error
    response = admin_client.post(url("accounts_alias_change", team.pk), data)
    assert response.status_code == 200
    assert [t.address for t in team.targets.all()] == ["alice@example.test"]


def test_it_adds_and_removes_a_redirect(admin_client, example):
    response = admin_client.post(
        url("accounts_redirect_add"), {"localpart": "old", "domain": example.pk, "target": "new@elsewhere.example"}
    )
    assert response.status_code == 302
    redirect = Redirect.objects.get()
    assert redirect.target == "new@elsewhere.example"
    response = admin_client.post(url("accounts_redirect_change", redirect.pk), {"target": "x@elsewhere.example"})
    assert response.status_code == 403  # read-only once made
    admin_client.post(url("accounts_redirect_delete", redirect.pk), {"post": "yes"})
    assert not Redirect.objects.exists()


def test_it_refuses_a_redirect_to_a_local_domain(admin_client, example):
    response = admin_client.post(
        url("accounts_redirect_add"), {"localpart": "old", "domain": example.pk, "target": "new@example.test"}
    )
    assert form_errors(response) == ["new@example.test is in a local domain; use an alias for local targets"]


def test_it_offers_domains_by_autocomplete(admin_client, example):
    response = admin_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "accounts", "model_name": "account", "field_name": "domain", "term": "examp"},
    )
    assert [item["text"] for item in response.json()["results"]] == ["example.test"]
