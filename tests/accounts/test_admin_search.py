"""Admin and API searches at scale: what a term finds (the start of an address, a domain, a
name or a target), that each match is a range on an index rather than a scan of the table,
and that a page costs the same few queries however many rows match."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import actions
from accounts.models import Account, Alias, AliasTarget, Domain, Redirect
from tests.conftest import database_vendor

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def people():
    actions.create_domain("example.test")
    actions.create_domain("other.test")
    actions.create_account("alice@example.test", password=PASSWORD, display_name="Alice Smith")
    actions.create_account("smithers@example.test", password=PASSWORD, display_name="Waylon")
    actions.create_account("ben@other.test", password=PASSWORD, display_name="Ben Ng")
    actions.create_account("otto@example.test", password=PASSWORD)
    actions.create_alias("team@example.test", ["alice@example.test", "alicia@elsewhere.invalid"])
    actions.create_alias("sales@other.test", ["ben@other.test"])
    actions.create_alias("smith-list@example.test", ["otto@example.test"])
    actions.create_redirect("gone@example.test", "Gone.Person@Elsewhere.invalid")


def found(admin_client, model, q):
    response = admin_client.get(reverse(f"admin:accounts_{model}_changelist"), {"q": q})
    assert response.status_code == 200
    return sorted(str(row) for row in response.context["cl"].result_list)


@pytest.mark.parametrize("q, expected", [
    ("ali", ["alice@example.test"]),
    ("ALICE@", ["alice@example.test"]),
    ("smith", ["smithers@example.test"]),  # the start of the name: not its second word
    ("waylon", ["smithers@example.test"]),

    ("oth", ["ben@other.test"]),  # the domain
    ("@other", ["ben@other.test"]),
    ("t@ex", []),
    ("ot@ex", ["otto@example.test"]),
    ("ice", []),  # the middle of a word is not searched (it would read every row)
    ("ali other", []),  # every term must match (here only one of them)
    ("ali ex", ["alice@example.test"]),
])
def test_it_searches_accounts_by_the_start_of_an_address_domain_or_name(admin_client, people, q, expected):
    assert found(admin_client, "account", q) == expected


@pytest.mark.parametrize("q, expected", [
    ("ali", ["team@example.test"]),  # both targets match: the alias comes once
    ("alice@", []),  # with an @ it is the alias's own address
    ("ben", ["sales@other.test"]),
    ("smith", ["smith-list@example.test"]),
    ("@other.test", ["sales@other.test"]),
])
def test_it_searches_aliases_by_address_and_by_the_start_of_a_target(admin_client, people, q, expected):
    assert found(admin_client, "alias", q) == expected


def test_it_searches_redirects_by_address_and_target(admin_client, people):
    assert found(admin_client, "redirect", "gone.per") == ["gone@example.test"]
    assert found(admin_client, "redirect", "gone") == ["gone@example.test"]
    assert found(admin_client, "redirect", "elsewhere") == []


def test_it_searches_the_api_by_the_start_of_an_address(people):
    from accounts.admin import search_addresses

    def api_search(model, text):
        return sorted(str(row) for row in search_addresses(model.objects.select_related("domain"), text))

    assert api_search(Account, "ot") == ["ben@other.test", "otto@example.test"]
    assert api_search(Alias, "s") == ["sales@other.test", "smith-list@example.test"]
    assert api_search(Account, "\x00ali\x00") == ["alice@example.test"]


@pytest.mark.parametrize("text", ["a\U0010ffff", "x\ud7ff"])
def test_it_searches_for_the_last_characters_of_unicode_without_a_range(people, text):
    from accounts.admin import search_addresses

    assert list(search_addresses(Account.objects.all(), text)) == []


def plans(queries):
    """SQLite's plan of each SELECT the page ran."""
    steps = []
    with connection.cursor() as cursor:
        for query in queries:
            if query["sql"].startswith("SELECT"):
                cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
                steps += [row[-1] for row in cursor.fetchall()]
    return steps


@pytest.mark.skipif(database_vendor() != "sqlite3", reason="reads SQLite's query plans")
@pytest.mark.parametrize("model, q, table", [
    ("account", "ali", "accounts_account"),
    ("account", "ali@exam", "accounts_account"),
    ("alias", "ali", "accounts_alias"),
    ("alias", "ali", "accounts_aliastarget"),
    ("redirect", "gone", "accounts_redirect"),
])
def test_it_searches_through_indexes_without_scanning_the_table(admin_client, people, model, q, table):
    admin_client.get(reverse(f"admin:accounts_{model}_changelist"))  # the session and content types
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(f"admin:accounts_{model}_changelist"), {"q": q})
    assert response.status_code == 200 and response.context["cl"].result_list
    steps = plans(queries.captured_queries)
    assert any(step.startswith(f"SEARCH {table} USING") for step in steps), steps
    assert not [step for step in steps if step.startswith(f"SCAN {table}")], steps


def add_rows(model, start, count):
    """`count` accounts, aliases (three targets each) or redirects whose names start with "bulk"."""
    example = Domain.objects.get(name="example.test")
    names = [f"bulk{i:04}" for i in range(start, start + count)]
    if model == "account":
        Account.objects.bulk_create(Account(domain=example, localpart=name) for name in names)
    elif model == "alias":
        made = Alias.objects.bulk_create(Alias(domain=example, localpart=name) for name in names)
        AliasTarget.objects.bulk_create(AliasTarget(alias=alias, address=f"bulk{n}@elsewhere.invalid")
                                        for alias in made for n in range(3))
    else:
        Redirect.objects.bulk_create(Redirect(domain=example, localpart=name, target="x@elsewhere.invalid")
                                     for name in names)


@pytest.mark.parametrize("model", ["account", "alias", "redirect"])
def test_it_runs_the_same_few_queries_for_a_search_page_however_many_rows_match(admin_client, people, model):
    page = reverse(f"admin:accounts_{model}_changelist")
    admin_client.get(page)

    def search():
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(page, {"q": "bulk"})
        assert response.status_code == 200
        return len(captured), len(response.context["cl"].result_list)

    add_rows(model, 0, 2)
    few, shown = search()
    assert shown == 2 and few <= 7
    add_rows(model, 2, 300)
    assert search() == (few, 100)


def test_it_counts_a_long_list_only_up_to_a_cap_and_says_so(admin_client, people, monkeypatch):
    from accounts.admin import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "cap", 150)
    add_rows("account", 0, 200)
    page = reverse("admin:accounts_account_changelist")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(page)
    assert "more than 150 accounts: search or filter to narrow the list" in response.content.decode()
    counts = [query["sql"] for query in queries.captured_queries if "COUNT(" in query["sql"].upper()]
    assert len(counts) == 1 and "LIMIT 151" in counts[0], counts
    narrowed = admin_client.get(page, {"q": "bulk01"}).content.decode()  # bulk0100 to bulk0199
    assert "100 accounts" in narrowed and "more than" not in narrowed


LARGE_STATISTICS = {  # what ANALYZE says at 100 domains, 100,000 accounts and 1,000,000 aliases
    "accounts_domain": "100 1",
    "accounts_account": "100000 1000 1",
    "accounts_alias": "1000000 10000 1",
    "accounts_aliastarget": "1000000 1 1",
}


def pretend_large_tables():
    """Give SQLite's planner the statistics of large tables (it plans from sqlite_stat1)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        for table, stat in LARGE_STATISTICS.items():
            cursor.execute("UPDATE sqlite_stat1 SET stat = %s WHERE tbl = %s", [stat, table])
        cursor.execute("ANALYZE sqlite_schema")  # reload them


@pytest.mark.skipif(database_vendor() != "sqlite3", reason="reads SQLite's query plans")
@pytest.mark.parametrize("model, table", [("account", "accounts_account"), ("alias", "accounts_alias")])
def test_it_does_not_walk_the_table_in_page_order_to_search_it(admin_client, people, model, table):
    """With the statistics of a million rows the planner preferred reading every row in the
    page's order (domain, local part) and testing each over reading the search's index ranges."""
    admin_client.get(reverse(f"admin:accounts_{model}_changelist"))
    pretend_large_tables()
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(f"admin:accounts_{model}_changelist"), {"q": "smith"})
    assert response.status_code == 200 and response.context["cl"].result_list
    steps = plans(queries.captured_queries)
    assert not [step for step in steps if step.startswith(("SCAN accounts_domain", f"SCAN {table}"))], steps
