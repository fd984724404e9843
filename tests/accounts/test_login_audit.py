"""The login audit: every attempt by any protocol, with service, IP and outcome.

Personas: alice and bob have mailboxes in example.test; mallory guesses from 192.0.2.66.
"""
import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from accounts import actions
from accounts.auth import authenticate, record_login
from accounts.errors import LoginThrottled
from accounts.models import Account, LoginEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

MALLORY = "192.0.2.66"
NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def events():
    return [
        (e.account.address if e.account else None, e.address, e.service, e.remote_ip, e.success, e.reason)
        for e in LoginEvent.objects.select_related("account__domain").order_by("time", "pk")
    ]


def test_it_records_a_success_and_each_kind_of_failure(clock, alice, bob):
    actions.set_account_active("bob@example.test", False)
    assert authenticate("Alice@Example.test", PASSWORD, service="imap", remote_ip="198.51.100.4")
    assert authenticate("alice@example.test", "wrong", service="smtp", remote_ip=MALLORY) is None
    assert authenticate("nobody@example.test", PASSWORD, service="pop3", remote_ip=MALLORY) is None
    assert authenticate("bob@example.test", PASSWORD, service="web", remote_ip="2001:db8::1") is None
    assert authenticate("not an address", PASSWORD, service="imap", remote_ip=None) is None
    assert events() == [
        ("alice@example.test", "Alice@Example.test", "imap", "198.51.100.4", True, "ok"),
        ("alice@example.test", "alice@example.test", "smtp", MALLORY, False, "password"),
        (None, "nobody@example.test", "pop3", MALLORY, False, "unknown"),
        ("bob@example.test", "bob@example.test", "web", "2001:db8::1", False, "disabled"),
        (None, "not an address", "imap", None, False, "unknown"),
    ]
    assert set(LoginEvent.objects.values_list("time", flat=True)) == {NOON}
    alice.refresh_from_db()
    assert alice.last_login == NOON


def test_it_records_throttled_attempts(clock, alice):
    for _ in range(5):
        authenticate("alice@example.test", "wrong", service="imap", remote_ip=MALLORY)
    with pytest.raises(LoginThrottled):
        authenticate("alice@example.test", PASSWORD, service="pop3", remote_ip=MALLORY)
    assert events()[-1] == ("alice@example.test", "alice@example.test", "pop3", MALLORY, False, "throttled")
    assert LoginEvent.objects.count() == 6


def test_a_password_less_account_is_refused_as_disabled(clock, domain):
    actions.create_account("nopass@example.test")
    assert authenticate("nopass@example.test", "", service="imap", remote_ip=MALLORY) is None
    assert events()[-1][-1] == "disabled"


def test_it_keeps_the_address_as_typed_but_bounded(clock, domain):
    typed = "x" * 1000 + "@example.test"
    authenticate(typed, "guess", service="imap", remote_ip=MALLORY)
    assert LoginEvent.objects.get().address == typed[:320]


def test_it_stores_ipv4_mapped_clients_as_ipv4(clock, alice):
    authenticate("alice@example.test", PASSWORD, service="imap", remote_ip="::ffff:192.0.2.9")
    assert LoginEvent.objects.get().remote_ip == "192.0.2.9"


def test_record_login_finds_the_account_and_the_reason_itself(clock, alice):
    record_login("alice@example.test", service="smtp", remote_ip=MALLORY, success=False)
    record_login("nobody@example.test", service="smtp", remote_ip=MALLORY, success=False)
    record_login("alice@example.test", service="smtp", remote_ip=MALLORY, success=True, account=alice)
    assert events() == [
        ("alice@example.test", "alice@example.test", "smtp", MALLORY, False, "password"),
        (None, "nobody@example.test", "smtp", MALLORY, False, "unknown"),
        ("alice@example.test", "alice@example.test", "smtp", MALLORY, True, "ok"),
    ]
    assert Account.objects.get(pk=alice.pk).last_login == NOON


def test_no_password_reaches_the_logs_or_the_audit(clock, alice, caplog):
    secret = "hunter2-is-not-my-password"
    with caplog.at_level(logging.DEBUG):
        authenticate("alice@example.test", secret, service="imap", remote_ip=MALLORY)
        authenticate("alice@example.test", PASSWORD, service="imap", remote_ip=MALLORY)
        authenticate("nobody@example.test", secret, service="imap", remote_ip=MALLORY)
    logged = caplog.text
    assert secret not in logged and PASSWORD not in logged
    assert alice.password not in logged and "SCRAM-SHA-256$" not in logged
    stored = " ".join(str(value) for row in LoginEvent.objects.values_list() for value in row)
    assert secret not in stored and PASSWORD not in stored
    assert "login failed service=imap ip=192.0.2.66 user='alice@example.test' reason=password" in logged


def test_pruning_drops_events_older_than_the_retention(clock, alice):
    authenticate("alice@example.test", PASSWORD, service="imap", remote_ip=MALLORY)
    clock.advance(days=20)
    authenticate("alice@example.test", PASSWORD, service="imap", remote_ip=MALLORY)
    clock.advance(days=11)
    assert actions.prune_login_events() == 1  # 31 days old; the other is 11
    assert LoginEvent.objects.get().time == NOON + timedelta(days=20)
    assert actions.prune_login_events(days=5) == 1
    assert not LoginEvent.objects.exists()


def test_pruning_works_in_batches(clock, monkeypatch, alice):
    monkeypatch.setattr(actions, "PRUNE_BATCH", 3)
    LoginEvent.objects.bulk_create(
        LoginEvent(account=alice, address="alice@example.test", service="imap", success=True, reason="ok",
                   time=NOON - timedelta(days=40, minutes=n))
        for n in range(10)
    )
    assert actions.prune_login_events() == 10


# The admin ------------------------------------------------------------------------------


@pytest.fixture
def history(clock, alice, bob):
    """alice logs in by IMAP, bob by SMTP, mallory fails as alice and as nobody."""
    authenticate("alice@example.test", PASSWORD, service="imap", remote_ip="198.51.100.4")
    authenticate("bob@example.test", PASSWORD, service="smtp", remote_ip="198.51.100.5")
    authenticate("alice@example.test", "guess", service="pop3", remote_ip=MALLORY)
    authenticate("nobody@example.test", "guess", service="imap", remote_ip=MALLORY)


def listed(client, **params):
    response = client.get(reverse("admin:accounts_loginevent_changelist"), params)
    assert response.status_code == 200
    return [(e.address, e.service, e.reason) for e in response.context["cl"].result_list]


def test_the_admin_lists_logins_newest_first_with_filters(admin_client, history):
    assert len(listed(admin_client)) == 4
    assert sorted(listed(admin_client, service="imap")) == [
        ("alice@example.test", "imap", "ok"),
        ("nobody@example.test", "imap", "unknown"),
    ]
    assert sorted(listed(admin_client, success__exact="0")) == [
        ("alice@example.test", "pop3", "password"),
        ("nobody@example.test", "imap", "unknown"),
    ]


def test_the_admin_searches_logins_by_ip_and_address(admin_client, history):
    assert sorted(listed(admin_client, q=MALLORY)) == [
        ("alice@example.test", "pop3", "password"),
        ("nobody@example.test", "imap", "unknown"),
    ]
    assert listed(admin_client, q="nobody@example.test") == [("nobody@example.test", "imap", "unknown")]
    assert sorted(listed(admin_client, q="alice@")) == [
        ("alice@example.test", "imap", "ok"),
        ("alice@example.test", "pop3", "password"),
    ]
    assert listed(admin_client, q="bob") == [("bob@example.test", "smtp", "ok")]


def test_the_login_list_stays_cheap(admin_client, clock, alice, django_assert_max_num_queries):
    LoginEvent.objects.bulk_create(
        LoginEvent(account=alice, address="alice@example.test", service="imap", remote_ip="198.51.100.4",
                   success=True, reason="ok", time=NOON - timedelta(seconds=n))
        for n in range(3000)
    )
    url = reverse("admin:accounts_loginevent_changelist")
    admin_client.get(url)
    with django_assert_max_num_queries(8):
        response = admin_client.get(url, {"service": "imap", "success__exact": "1"})
    assert len(response.context["cl"].result_list) == 100


def test_the_account_page_shows_its_last_fifty_logins(admin_client, clock, settings, alice, bob):
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_ACCOUNT = 0
    for n in range(60):
        authenticate("alice@example.test", PASSWORD if n % 2 else "guess", service="imap", remote_ip=f"198.51.100.{n}")
        clock.advance(seconds=1)
    authenticate("bob@example.test", PASSWORD, service="smtp", remote_ip="203.0.113.1")
    html = admin_client.get(reverse("admin:accounts_account_change", args=[alice.pk])).content.decode()
    assert html.count("<td>imap</td>") == 50
    assert "198.51.100.59" in html and "198.51.100.9<" not in html  # newest first, oldest cut
    assert "failed: wrong password" in html
    assert "203.0.113.1" not in html
    assert f"?account__id__exact={alice.pk}" in html
    response = admin_client.get(reverse("admin:accounts_loginevent_changelist"), {"account__id__exact": alice.pk})
    assert response.context["cl"].result_count == 60


def test_login_events_cannot_be_changed_in_the_admin(admin_client, history):
    event = LoginEvent.objects.first()
    response = admin_client.post(reverse("admin:accounts_loginevent_change", args=[event.pk]), {"reason": "ok"})
    assert response.status_code == 403
    assert admin_client.get(reverse("admin:accounts_loginevent_add")).status_code == 403
