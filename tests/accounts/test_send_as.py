"""Send-as grants: addresses an admin lets an account send as, besides its own and its aliases'.

Personas: alice has a mailbox in example.test and an address of her own at
elsewhere.example; bob is a second mailbox there; mallory is an outsider at
elsewhere.example. example.org is an alias domain of example.test.
"""
import io
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import actions
from accounts.errors import Conflict, InvalidInput, NotFound
from accounts.identities import may_send_as
from accounts.models import SendAsGrant
from tests import datadir
from tests.conftest import PASSWORD

PROJECT_DIR = Path(__file__).resolve().parents[2]
ALICE = "alice@example.test"
EXTERNAL = "alice@elsewhere.example"


def grants(account):
    return list(SendAsGrant.objects.filter(account=account).order_by("address").values_list("address", flat=True))


# Actions ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_grants_a_normalised_address_in_any_domain(alice):
    grant = actions.grant_send_as(ALICE, "Alice@ElseWhere.EXAMPLE")
    assert (grant.account, grant.address) == (alice, EXTERNAL)
    actions.grant_send_as(ALICE, "info@bücher.example")
    assert grants(alice) == [EXTERNAL, "info@xn--bcher-kva.example"]


@pytest.mark.django_db
def test_it_refuses_a_duplicate_grant_in_any_spelling(alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    with pytest.raises(Conflict) as refusal:
        actions.grant_send_as("ALICE@example.test", "ALICE@elsewhere.example")
    assert str(refusal.value) == "alice@example.test may already send as alice@elsewhere.example"
    assert grants(alice) == [EXTERNAL]


@pytest.mark.django_db
def test_the_database_refuses_a_second_row_for_the_same_grant(alice):
    SendAsGrant.objects.create(account=alice, address=EXTERNAL)
    with pytest.raises(IntegrityError), transaction.atomic():
        SendAsGrant.objects.create(account=alice, address=EXTERNAL)


@pytest.mark.django_db
def test_the_grant_lookup_is_one_unique_index_led_by_the_account():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, SendAsGrant._meta.db_table)
    assert constraints["sendasgrant_unique"]["columns"] == ["account_id", "address"]
    assert constraints["sendasgrant_unique"]["unique"]
    indexed = [name for name, c in constraints.items() if (c["index"] or c["unique"]) and not c["primary_key"]]
    assert indexed == ["sendasgrant_unique"]  # no second, redundant index on the foreign key


@pytest.mark.django_db
@pytest.mark.parametrize(
    "identity, error",
    [
        ("nope", "identity 'nope' is not an address of the form local@domain"),
        ("@elsewhere.example", "identity '@elsewhere.example' is not an address of the form local@domain"),
        ("a b@elsewhere.example", "identity 'a b' is not a valid local part"),
        ("alice@localhost", "identity 'localhost' is not a fully qualified domain name"),
        ("alice@", "identity 'alice@' is not an address of the form local@domain"),
        ("alice@.", "identity 'alice@.' is not an address of the form local@domain"),
    ],
)
def test_it_refuses_a_malformed_identity(alice, identity, error):
    with pytest.raises(InvalidInput) as refusal:
        actions.grant_send_as(ALICE, identity)
    assert str(refusal.value) == error
    assert grants(alice) == []


@pytest.mark.django_db
def test_it_refuses_a_grant_for_an_unknown_account(domain):
    with pytest.raises(NotFound) as refusal:
        actions.grant_send_as("ghost@example.test", EXTERNAL)
    assert str(refusal.value) == "account ghost@example.test does not exist"
    assert not SendAsGrant.objects.exists()


@pytest.mark.django_db
def test_it_revokes_a_grant(alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    actions.grant_send_as(ALICE, "role@shared.example")
    assert actions.revoke_send_as(ALICE, "Alice@Elsewhere.Example") == EXTERNAL
    assert grants(alice) == ["role@shared.example"]


@pytest.mark.django_db
def test_it_refuses_to_revoke_what_was_never_granted(alice, bob):
    actions.grant_send_as("bob@example.test", EXTERNAL)
    with pytest.raises(NotFound) as refusal:
        actions.revoke_send_as(ALICE, EXTERNAL)
    assert str(refusal.value) == "alice@example.test has no grant to send as alice@elsewhere.example"
    assert grants(bob) == [EXTERNAL]


@pytest.mark.django_db
def test_it_replaces_the_whole_set(alice, bob):
    actions.grant_send_as(ALICE, EXTERNAL)
    actions.grant_send_as(ALICE, "old@shared.example")
    actions.grant_send_as("bob@example.test", "old@shared.example")
    result = actions.set_send_as(ALICE, ["role@shared.example", "ALICE@elsewhere.example", "Role@Shared.Example"])
    assert result == [EXTERNAL, "role@shared.example"]
    assert grants(alice) == [EXTERNAL, "role@shared.example"]
    assert grants(bob) == ["old@shared.example"]
    assert actions.set_send_as(ALICE, []) == []
    assert grants(alice) == []


@pytest.mark.django_db
def test_it_replaces_nothing_when_one_identity_is_malformed(alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    with pytest.raises(InvalidInput) as refusal:
        actions.set_send_as(ALICE, ["role@shared.example", "nope"])
    assert str(refusal.value) == "identity 'nope' is not an address of the form local@domain"
    assert grants(alice) == [EXTERNAL]


@pytest.mark.django_db
def test_grants_go_with_the_account(alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    actions.remove_account(ALICE)
    assert not SendAsGrant.objects.exists()


# may_send_as ------------------------------------------------------------------------


@pytest.fixture
def identities(alice, bob):
    actions.create_domain_alias("example.org", "example.test")
    actions.create_alias("sales@example.test", ["alice@example.test", "bob@example.test"])
    actions.create_alias("support@example.test", ["bob@example.test"])
    actions.create_alias("@example.test", ["alice@example.test"])
    actions.grant_send_as(ALICE, EXTERNAL)
    actions.grant_send_as(ALICE, "role@shared.example")
    return alice


@pytest.mark.django_db
@pytest.mark.parametrize(
    "address, allowed",
    [
        ("alice@example.test", True),  # her own address
        ("Alice@EXAMPLE.test", True),
        ("alice+news@example.test", True),  # with subaddress detail
        ("alice@example.org", True),  # in an alias domain of her domain
        ("alice+news@example.org", True),
        ("sales@example.test", True),  # an alias that delivers to her (too)
        ("sales@example.org", True),
        ("support@example.test", False),  # an alias that delivers only to bob
        ("ceo@example.test", False),  # only the catch-all delivers it to her
        ("ceo@example.org", False),
        ("alice@elsewhere.example", True),  # granted, in another domain
        ("ALICE@Elsewhere.Example", True),
        ("role@shared.example", True),  # a granted shared role address
        ("alice+news@elsewhere.example", False),  # a grant is for exactly that address
        ("bob@example.test", False),  # someone else's mailbox
        ("bob+news@example.test", False),
        ("mallory@elsewhere.example", False),  # someone else's, elsewhere
        ("not an address", False),
        ("", False),
    ],
)
def test_who_alice_may_send_as(identities, address, allowed):
    assert may_send_as(identities, address) is allowed


@pytest.mark.django_db
def test_a_grant_is_for_one_account_only(identities, bob):
    assert not may_send_as(bob, EXTERNAL)
    assert not may_send_as(bob, "role@shared.example")


@pytest.mark.django_db
def test_a_grant_may_name_another_mailbox_here(alice, bob):
    assert not may_send_as(alice, "bob@example.test")
    actions.grant_send_as(ALICE, "bob@example.test")
    assert may_send_as(alice, "bob@example.test")
    assert not may_send_as(alice, "bob+news@example.test")


@pytest.mark.django_db
def test_revoking_takes_the_address_away(alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    assert may_send_as(alice, EXTERNAL)
    actions.revoke_send_as(ALICE, EXTERNAL)
    assert not may_send_as(alice, EXTERNAL)
    assert may_send_as(alice, ALICE)


def grant_queries(account, address):
    with CaptureQueriesContext(connection) as queries:
        may_send_as(account, address)
    return [query["sql"] for query in queries if SendAsGrant._meta.db_table in query["sql"]]


@pytest.mark.django_db
def test_a_grant_costs_one_query_and_an_own_address_none(identities):
    assert len(grant_queries(identities, EXTERNAL)) == 1
    assert len(grant_queries(identities, "mallory@elsewhere.example")) == 1
    assert grant_queries(identities, ALICE) == []
    assert grant_queries(identities, "sales@example.test") == []


# Through the submission server -------------------------------------------------------


def insecure_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.django_db(transaction=True)
def test_a_granted_address_is_accepted_until_revoked(submission_servers, alice):
    client = smtplib.SMTP("127.0.0.1", submission_servers.ports["submission"], local_hostname="laptop.test", timeout=10)
    client.starttls(context=insecure_context())
    client.login(ALICE, PASSWORD)
    refusal = (553, b"5.7.1 <alice@elsewhere.example>: not an address you may send as")
    assert client.mail(EXTERNAL) == refusal
    client.rset()

    actions.grant_send_as(ALICE, EXTERNAL)
    message = b"From: Alice <alice@elsewhere.example>\r\nTo: friend@faraway.test\r\nSubject: hi\r\n\r\nhi\r\n"
    assert client.sendmail(EXTERNAL, ["friend@faraway.test"], message) == {}

    actions.revoke_send_as(ALICE, EXTERNAL)
    assert client.mail(EXTERNAL) == refusal
    client.rset()
    client.mail(ALICE)
    client.rcpt("friend@faraway.test")
    assert client.data(message) == refusal  # nor in From:
    client.quit()


# The admin --------------------------------------------------------------------------


def change_page(account):
    return reverse("admin:accounts_account_change", args=[account.pk])


def change_account(client, account, **fields):
    data = {"display_name": account.display_name, "quota": "1G", "active": "on", **fields}
    return client.post(change_page(account), data)


def field_errors(response):
    return dict(response.context["adminform"].form.errors)


@pytest.mark.django_db
def test_the_admin_shows_the_grants(admin_client, alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    actions.grant_send_as(ALICE, "role@shared.example")
    response = admin_client.get(change_page(alice))
    form = response.context["adminform"].form
    assert form.initial["send_as"] == [EXTERNAL, "role@shared.example"]
    html = response.content.decode()
    assert "May also send as" in html
    assert ">\nalice@elsewhere.example\nrole@shared.example</textarea>" in html


@pytest.mark.django_db
def test_the_admin_saves_the_grants(admin_client, alice):
    actions.grant_send_as(ALICE, "old@shared.example")
    response = change_account(admin_client, alice, send_as="Role@Shared.Example, alice@elsewhere.example\r\n")
    assert response.status_code == 302
    assert grants(alice) == [EXTERNAL, "role@shared.example"]
    assert may_send_as(alice, "role@shared.example") and not may_send_as(alice, "old@shared.example")

    response = change_account(admin_client, alice, send_as="")
    assert response.status_code == 302
    assert grants(alice) == []


@pytest.mark.django_db
def test_the_admin_keeps_the_grants_when_the_field_is_unchanged(admin_client, alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    response = change_account(admin_client, alice, display_name="Al", send_as=EXTERNAL)
    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.display_name, grants(alice)) == ("Al", [EXTERNAL])


@pytest.mark.django_db
def test_the_admin_shows_a_bad_identity_beside_the_field_and_saves_nothing(admin_client, alice):
    actions.grant_send_as(ALICE, EXTERNAL)
    response = change_account(admin_client, alice, display_name="Changed", send_as="role@shared.example, nope")
    assert response.status_code == 200
    assert field_errors(response) == {"send_as": ["identity 'nope' is not an address of the form local@domain"]}
    assert "identity &#x27;nope&#x27; is not an address" in response.content.decode()
    alice.refresh_from_db()
    assert (alice.display_name, grants(alice)) == ("Alice", [EXTERNAL])


@pytest.mark.django_db
def test_the_admin_undoes_the_grants_when_another_field_is_refused(admin_client, alice):
    response = change_account(admin_client, alice, send_as=EXTERNAL, password1="x", password2="x")
    assert response.status_code == 200
    assert "too short" in " ".join(field_errors(response)["__all__"])
    assert grants(alice) == []


def change_page_queries(client, account):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(change_page(account))
    assert response.status_code == 200
    return [query["sql"] for query in queries]


@pytest.mark.django_db
def test_the_change_page_reads_the_grants_in_one_query(admin_client, alice):
    change_page_queries(admin_client, alice)  # warm the session and content types
    before = change_page_queries(admin_client, alice)
    actions.set_send_as(ALICE, [f"role{i}@shared.example" for i in range(200)])
    after = change_page_queries(admin_client, alice)
    assert len(after) == len(before)
    assert len([sql for sql in after if SendAsGrant._meta.db_table in sql]) == 1


# The command line -------------------------------------------------------------------


def run(*args):
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def refused(*args):
    with pytest.raises(CommandError) as info:
        run(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.mark.django_db
def test_the_cli_adds_lists_and_removes_grants(alice):
    out, err = run("account", "send-as", ALICE, "--add", "Alice@Elsewhere.Example", "--add", "info@bücher.example")
    assert out == (
        "alice@example.test may now send as alice@elsewhere.example\n"
        "alice@example.test may now send as info@bücher.example\n"
    )
    assert err == ""
    assert grants(alice) == [EXTERNAL, "info@xn--bcher-kva.example"]

    assert run("account", "send-as", ALICE) == ("alice@elsewhere.example\ninfo@bücher.example\n", "")

    out, _ = run("account", "send-as", ALICE, "--remove", EXTERNAL, "--add", "role@shared.example")
    assert out == (
        "alice@example.test may no longer send as alice@elsewhere.example\n"
        "alice@example.test may now send as role@shared.example\n"
    )
    assert grants(alice) == ["info@xn--bcher-kva.example", "role@shared.example"]
    assert may_send_as(alice, "role@shared.example") and not may_send_as(alice, EXTERNAL)


@pytest.mark.django_db
def test_the_cli_lists_nothing_for_an_account_without_grants(alice):
    assert run("account", "send-as", ALICE) == ("", "")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, error",
    [
        (("--add", "nope"), "identity 'nope' is not an address of the form local@domain"),
        (("--add", "role@shared.example", "--add", "role@shared.example"),
         "alice@example.test may already send as role@shared.example"),
        (("--remove", "mallory@elsewhere.example"),
         "alice@example.test has no grant to send as mallory@elsewhere.example"),
        (("--add", "role@shared.example", "--remove", "x@"), "identity 'x@' is not an address of the form local@domain"),
    ],
)
def test_the_cli_refuses_bad_changes_and_makes_none(alice, args, error):
    actions.grant_send_as(ALICE, EXTERNAL)
    assert refused("account", "send-as", ALICE, *args) == error
    assert grants(alice) == [EXTERNAL]


@pytest.mark.django_db
def test_the_cli_refuses_an_unknown_account(domain):
    assert refused("account", "send-as", "ghost@example.test") == "account ghost@example.test does not exist"
    assert refused("account", "send-as", "ghost@nowhere.example", "--add", EXTERNAL) == (
        "domain nowhere.example does not exist (add it with: manage.py domain add nowhere.example)"
    )


def test_the_cli_exits_non_zero_with_one_line(tmp_path):
    env = datadir.child_env(datadir.prepared_data_dir(tmp_path, *datadir.ALICE_AT_EXAMPLE))

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )

    added = manage("account", "send-as", ALICE, "--add", EXTERNAL)
    assert (added.returncode, added.stdout, added.stderr) == (
        0, "alice@example.test may now send as alice@elsewhere.example\n", ""
    )
    again = manage("account", "send-as", ALICE, "--add", EXTERNAL)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == "CommandError: alice@example.test may already send as alice@elsewhere.example\n"
    bad = manage("account", "send-as", ALICE, "--remove", "nope")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr == "CommandError: identity 'nope' is not an address of the form local@domain\n"
    listed = manage("account", "send-as", ALICE)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "alice@elsewhere.example\n", "")
