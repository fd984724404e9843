"""Signing in and out: the shared authenticate(), throttling, session cookies."""
import pytest
from django.test import Client

from accounts import actions as accounts
from accounts.models import LoginEvent
from tests.conftest import PASSWORD


@pytest.fixture
def client():
    return Client()


def test_it_signs_in_with_address_and_password(alice, client):
    response = client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"
    inbox = client.get("/")
    assert inbox.status_code == 302 and inbox["Location"].startswith("/f/")
    page = client.get(inbox["Location"])
    assert page.status_code == 200
    assert b"alice@example.test" in page.content or b"Alice" in page.content
    event = LoginEvent.objects.get()
    assert (event.service, event.success, event.remote_ip) == ("web", True, "127.0.0.1")


def test_it_refuses_a_wrong_password_and_says_so(alice, client):
    response = client.post("/login/", {"address": "alice@example.test", "password": "nope"})
    assert response.status_code == 403
    assert b"Wrong address or password." in response.content
    assert client.get("/").status_code == 302  # still signed out
    assert LoginEvent.objects.get().reason == "password"


def test_it_throttles_repeated_failures_like_every_protocol(alice, client, settings):
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = 3
    for _ in range(3):
        client.post("/login/", {"address": "alice@example.test", "password": "nope"})
    response = client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    assert response.status_code == 403
    assert b"Too many failed sign-ins. Try again in 60 seconds." in response.content
    assert LoginEvent.objects.filter(reason="throttled").count() == 1


def test_it_sets_secure_cookie_flags_and_forgets_the_session_with_the_browser(alice, client):
    response = client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    cookie = response.cookies["sessionid"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["max-age"] == "" and cookie["expires"] == ""  # a browser-session cookie


def test_it_remembers_the_session_when_asked(alice, client, settings):
    response = client.post("/login/", {"address": "alice@example.test", "password": PASSWORD, "remember": "on"})
    assert int(response.cookies["sessionid"]["max-age"]) == settings.SESSION_COOKIE_AGE


def test_it_takes_a_new_session_id_at_sign_in(alice, client):
    client.get("/login/")
    client.session.save()
    before = client.session.session_key
    client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    assert client.session.session_key != before


def test_it_signs_out_with_post_only(alice, client):
    client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_a_password_change_ends_the_session(alice, client):
    client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    accounts.set_password("alice@example.test", "another long password")
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_disabled_account_is_signed_out(alice, client):
    client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})
    accounts.set_account_active("alice@example.test", False)
    assert client.get("/")["Location"].startswith("/login/")


def test_it_goes_back_where_it_was_asked_and_nowhere_else(alice, client):
    page = client.get("/folders/")
    assert page["Location"] == "/login/?next=%2Ffolders%2F"
    response = client.post("/login/?next=/folders/", {"address": "alice@example.test", "password": PASSWORD})
    assert response["Location"] == "/folders/"
    client.post("/logout/")
    response = client.post("/login/", {"address": "alice@example.test", "password": PASSWORD, "next": "https://evil.test/"})
    assert response["Location"] == "/"


def test_htmx_requests_of_a_signed_out_browser_are_sent_to_sign_in(client):
    response = client.get("/folders/", headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login/")
