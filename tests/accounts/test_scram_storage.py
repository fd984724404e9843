"""SCRAM-SHA-256 credentials (RFC 5802, RFC 7677, stored as RFC 5803) kept beside the password hash.

Personas: alice and bob have mailboxes in example.test.
"""
import pytest
from django.urls import reverse

from accounts import actions
from accounts.auth import authenticate, login_account, scram_credentials_for
from accounts.errors import InvalidInput
from accounts.models import Account
from mailsuite.lib.sasl import make_scram_credentials, parse_scram_credentials
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-brand-new-long-passphrase"


def stored(account):
    return Account.objects.get(pk=account.pk).scram_sha256


def made_from(password, text):
    """True if the stored string is what `password` gives with the same salt and iterations."""
    credentials = parse_scram_credentials(text)
    return make_scram_credentials(password, iterations=credentials.iterations, salt=credentials.salt) == text


def test_create_account_stores_scram_credentials(alice):
    text = stored(alice)
    assert text.startswith("SCRAM-SHA-256$4096:")
    credentials = parse_scram_credentials(text)
    assert credentials.iterations == 4096 and len(credentials.salt) == 16
    assert made_from(PASSWORD, text) and not made_from("wrong", text)
    assert PASSWORD not in text


def test_each_account_gets_its_own_salt(alice, bob):
    assert parse_scram_credentials(stored(alice)).salt != parse_scram_credentials(stored(bob)).salt


def test_an_account_without_a_password_has_none(domain):
    account = actions.create_account("nopass@example.test")
    assert stored(account) == ""
    assert scram_credentials_for("nopass@example.test") is None


def test_set_password_replaces_them(alice):
    before = stored(alice)
    actions.set_password("alice@example.test", NEW_PASSWORD)
    after = stored(alice)
    assert after != before and made_from(NEW_PASSWORD, after)


def test_a_refused_password_leaves_them_alone(alice):
    before = stored(alice)
    with pytest.raises(InvalidInput):
        actions.set_password("alice@example.test", "short")
    assert stored(alice) == before


def test_the_admin_sets_them_through_the_actions(admin_client, domain, alice):
    response = admin_client.post(
        reverse("admin:accounts_account_add"),
        {"localpart": "carol", "domain": domain.pk, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
         "quota": "1G", "active": "on"},
    )
    assert response.status_code == 302
    assert made_from(NEW_PASSWORD, Account.objects.get(localpart="carol").scram_sha256)

    response = admin_client.post(
        reverse("admin:accounts_account_change", args=[alice.pk]),
        {"display_name": "Alice", "quota": "1G", "active": "on", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert made_from(NEW_PASSWORD, stored(alice))


def test_the_admin_never_shows_them(admin_client, alice):
    text = stored(alice)
    for page in (reverse("admin:accounts_account_changelist"), reverse("admin:accounts_account_change", args=[alice.pk])):
        html = admin_client.get(page).content.decode()
        assert "SCRAM-SHA-256$" not in html
        for part in text.replace(":", "$").split("$")[1:]:
            assert part not in html


def test_scram_credentials_for_follows_domain_aliases_and_case(alice):
    actions.create_domain_alias("example.net", "example.test")
    expected = parse_scram_credentials(stored(alice))
    assert scram_credentials_for("alice@example.test") == expected
    assert scram_credentials_for("Alice@EXAMPLE.net") == expected
    assert login_account("alice@example.net").pk == alice.pk


@pytest.mark.parametrize("address", ["nobody@example.test", "alice@elsewhere.test", "not an address", ""])
def test_scram_credentials_for_unknown_addresses_is_none(alice, address):
    assert scram_credentials_for(address) is None
    assert login_account(address) is None


def test_scram_credentials_for_disabled_accounts_and_domains_is_none(alice):
    actions.set_account_active("alice@example.test", False)
    assert scram_credentials_for("alice@example.test") is None
    actions.set_account_active("alice@example.test", True)
    actions.set_domain_active("example.test", False)
    assert scram_credentials_for("alice@example.test") is None


def test_a_password_login_fills_in_missing_credentials(clock, alice):
    Account.objects.filter(pk=alice.pk).update(scram_sha256="")  # set before SCRAM was stored
    assert scram_credentials_for("alice@example.test") is None
    assert authenticate("alice@example.test", "wrong", service="imap", remote_ip="198.51.100.1") is None
    assert stored(alice) == ""
    assert authenticate("alice@example.test", PASSWORD, service="imap", remote_ip="198.51.100.1")
    assert made_from(PASSWORD, stored(alice))
    before = stored(alice)
    authenticate("alice@example.test", PASSWORD, service="imap", remote_ip="198.51.100.1")
    assert stored(alice) == before  # not recomputed on every login
