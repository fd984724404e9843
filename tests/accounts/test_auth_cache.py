"""Remembered logins: a verified password skips the slow hash next time, and nothing else."""
import pytest

from accounts import actions, auth
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def hashes(monkeypatch):
    """Counts the real password checks authenticate() makes."""
    auth._verified.clear()
    calls = []
    real = auth.check_password

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(auth, "check_password", counting)
    yield calls
    auth._verified.clear()


def login(password=PASSWORD):
    return auth.authenticate("alice@example.test", password, service="imap", remote_ip="192.0.2.1")


def test_it_checks_a_password_once_then_remembers_it(alice, hashes):
    assert login() == alice
    assert login() == alice
    assert len(hashes) == 1


def test_a_wrong_password_is_never_served_from_memory(alice, hashes):
    assert login() == alice
    assert login("wrong") is None
    assert len(hashes) == 2


def test_a_password_change_forgets_what_was_remembered(alice, hashes):
    assert login() == alice
    actions.set_password("alice@example.test", "a new secret phrase")
    assert login() is None
    assert login("a new secret phrase") is not None
    assert len(hashes) == 3


def test_it_can_be_turned_off_and_expires(alice, hashes, settings, monkeypatch):
    settings.MAILSUITE_AUTH_CACHE_SECONDS = 0
    login()
    login()
    assert len(hashes) == 2
    settings.MAILSUITE_AUTH_CACHE_SECONDS = 60
    login()
    clock = auth.time.monotonic() + 61
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock)
    login()
    assert len(hashes) == 4


def test_a_disabled_account_is_refused_even_when_remembered(alice, hashes):
    assert login() == alice
    alice.active = False
    alice.save()
    assert login() is None
