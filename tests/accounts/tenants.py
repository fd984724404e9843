"""Personas for delegated administration, shared by tests/accounts and tests/api.

root is a superadmin; alice administers example.test (bob has a mailbox there);
mallory administers mallory.example (carol has a mailbox there). Import the fixtures
a module needs: `from tests.accounts.tenants import root, alice, mallory, ...`.
"""
import pytest

from tests.conftest import PASSWORD

MiB = 1024**2


@pytest.fixture
def example(db):
    from accounts import actions

    return actions.create_domain("example.test")


@pytest.fixture
def mallory_domain(db):
    from accounts import actions

    return actions.create_domain("mallory.example")


@pytest.fixture
def bob(example):
    from accounts import actions

    return actions.create_account("bob@example.test", password=PASSWORD, quota=100 * MiB, display_name="Bob")


@pytest.fixture
def carol(mallory_domain):
    from accounts import actions

    return actions.create_account("carol@mallory.example", password=PASSWORD, quota=100 * MiB, display_name="Carol")


def make_user(username, *, superuser=False):
    from django.contrib.auth import get_user_model

    model = get_user_model()
    if superuser:
        return model.objects.create_superuser(username, f"{username}@admin.invalid", PASSWORD)
    return model.objects.create_user(username, f"{username}@admin.invalid", PASSWORD)


@pytest.fixture
def root(db):
    return make_user("root", superuser=True)


@pytest.fixture
def alice(example):
    from accounts import actions

    user = make_user("alice")
    actions.grant_domain_admin("alice", "example.test")
    user.refresh_from_db()
    return user


@pytest.fixture
def mallory(mallory_domain):
    from accounts import actions

    user = make_user("mallory")
    actions.grant_domain_admin("mallory", "mallory.example")
    user.refresh_from_db()
    return user


@pytest.fixture
def tenants(root, alice, mallory, bob, carol):
    """Both tenants with a mailbox, an alias and a redirect each."""
    from accounts import actions

    actions.create_alias("info@example.test", ["bob@example.test"])
    actions.create_redirect("gone@example.test", "bob@elsewhere.invalid")
    actions.create_alias("sales@mallory.example", ["carol@mallory.example"])
    actions.create_redirect("old@mallory.example", "carol@elsewhere.invalid")
    return {"root": root, "alice": alice, "mallory": mallory}
