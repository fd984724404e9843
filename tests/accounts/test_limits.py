"""Sending limits: messages per hour and recipients per day, per account, with alerts.

Personas: alice and bob send from example.test; mallory has taken over alice's
password and sends as much as she can.
"""
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.urls import reverse

from accounts import actions, limits
from accounts.errors import InvalidInput, SendLimitExceeded
from accounts.limits import check_and_record_send, limits_for, usage_for
from accounts.models import Account, SendLimitAlert

pytestmark = pytest.mark.django_db


def send(account, recipients=1):
    check_and_record_send(account, recipients)


def refused(account, recipients=1):
    with pytest.raises(SendLimitExceeded) as raised:
        send(account, recipients)
    return raised.value


def at(hour, minute, second=0):
    return datetime(2030, 1, 1, hour, minute, second, tzinfo=UTC)


# Limits and where they come from ------------------------------------------------------------


def test_it_refuses_the_message_after_the_hourly_limit(clock, settings, alice):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 3
    for _ in range(3):
        send(alice)
    error = refused(alice)
    assert (error.limit_name, error.limit, error.used) == ("messages_per_hour", 3, 3)
    assert str(error) == "Sending limit reached: at most 3 messages per hour; try again later"
    assert usage_for(alice).messages_last_hour == 3  # the refused one is not counted


def test_it_refuses_a_message_that_would_pass_the_daily_recipients(clock, settings, alice):
    settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY = 10
    send(alice, 6)
    error = refused(alice, 5)
    assert (error.limit_name, error.limit, error.used) == ("recipients_per_day", 10, 6)
    assert str(error) == "Sending limit reached: at most 10 recipients per day; try again later"
    send(alice, 4)  # exactly the limit is fine
    assert refused(alice, 1).used == 10
    assert usage_for(alice) == limits.Usage(messages_last_hour=2, recipients_last_day=10)


def test_the_defaults_are_sensible(alice):
    assert limits_for(alice) == limits.SendLimits(messages_per_hour=500, recipients_per_day=2000)


def test_a_domain_overrides_the_server_and_an_account_the_domain(clock, domain, alice, bob):
    actions.set_domain_send_limits("example.test", messages_per_hour=2, recipients_per_day=None)
    actions.set_send_limits("bob@example.test", messages_per_hour=5)
    alice, bob = (Account.objects.select_related("domain").get(pk=a.pk) for a in (alice, bob))
    assert limits_for(alice) == limits.SendLimits(2, 2000)
    assert limits_for(bob) == limits.SendLimits(5, 2000)
    send(alice), send(alice)
    assert refused(alice).limit == 2
    for _ in range(5):
        send(bob)
    assert refused(bob).limit == 5


def test_zero_is_no_limit_and_none_inherits(clock, settings, domain, alice):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 1
    actions.set_send_limits("alice@example.test", messages_per_hour=0, recipients_per_day=0)
    for _ in range(20):
        send(alice, 500)
    actions.set_send_limits("alice@example.test")  # both back to the server's
    assert refused(alice).limit == 1


def test_limits_are_read_fresh_not_from_a_stale_account(clock, settings, alice):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 1
    send(alice)
    actions.set_send_limits("alice@example.test", messages_per_hour=2)
    send(alice)  # `alice` still says None: the limit comes from the database
    assert refused(alice).limit == 2


@pytest.mark.parametrize("value", [-1, 2**31, 1.5, "10", True])
def test_it_refuses_a_bad_limit(domain, alice, value):
    with pytest.raises(InvalidInput):
        actions.set_send_limits("alice@example.test", messages_per_hour=value)
    with pytest.raises(InvalidInput):
        actions.set_domain_send_limits("example.test", recipients_per_day=value)


# Windows --------------------------------------------------------------------------------------


def test_the_hour_slides_in_five_minute_slices(clock, settings, alice):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 3
    clock.set(at(12, 58))
    for _ in range(3):
        send(alice)
    clock.set(at(13, 1))
    refused(alice)  # a clock-hour bucket would have let 3 more through here
    clock.set(at(13, 59, 59))
    refused(alice)  # the 12:55 slice still overlaps the last hour
    clock.set(at(14, 0))
    send(alice)


def test_never_more_than_the_limit_in_any_hour(clock, settings, alice):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 10
    sent = []
    for minute in range(0, 180, 3):  # one attempt every 3 minutes for 3 hours
        clock.set(at(12, 0) + timedelta(minutes=minute))
        try:
            send(alice)
            sent.append(minute)
        except SendLimitExceeded:
            pass
    assert all(len([m for m in sent if start <= m < start + 60]) <= 10 for start in range(0, 180))
    assert len(sent) >= 25  # and it does let mail through again


def test_the_day_slides_in_hour_slices(clock, settings, alice):
    settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY = 100
    clock.set(at(12, 30))
    send(alice, 100)
    clock.set(datetime(2030, 1, 2, 12, 59, tzinfo=UTC))
    refused(alice)
    clock.set(datetime(2030, 1, 2, 13, 0, tzinfo=UTC))
    send(alice, 100)


def test_the_usage_row_keeps_only_the_slices_still_needed(clock, alice):
    for hour in range(30):
        clock.set(at(0, 0) + timedelta(hours=hour))
        send(alice)
    alice.send_usage.refresh_from_db()
    # Only slices that overlap the last hour (day) are kept; older ones are dropped.
    assert sorted(alice.send_usage.messages.values()) == [1, 1]  # 04:00 and 05:00 the next day
    assert len(alice.send_usage.recipients) == 25


# Alerts ---------------------------------------------------------------------------------------


def test_one_alert_per_account_limit_and_window(clock, settings, alice, bob):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 1
    settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY = 5
    send(alice)
    for _ in range(3):
        refused(alice)
        clock.advance(minutes=10)
    refused(bob, 6)
    alerts = list(SendLimitAlert.objects.order_by("pk").values_list("account__localpart", "limit_name", "limit", "refused"))
    assert alerts == [("alice", "messages_per_hour", 1, 3), ("bob", "recipients_per_day", 5, 1)]
    assert SendLimitAlert.objects.get(account=alice).last_refused == at(12, 20)

    clock.set(at(13, 5))  # alice's 12:00 message is out of the window, her first refusal over an hour ago
    send(alice)
    refused(alice)
    assert SendLimitAlert.objects.filter(account=alice).count() == 2


def test_an_alert_is_logged_once(clock, settings, alice, caplog):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 1
    send(alice)
    for _ in range(3):
        refused(alice)
    warnings = [r.getMessage() for r in caplog.records if r.name == "accounts.limits"]
    assert warnings == ["sending limit reached account=alice@example.test limit=messages_per_hour max=1 used=1"]


# Concurrency ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_parallel_sends_never_exceed_the_limit(settings, domain):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 5
    account = actions.create_account("alice@example.test")
    workers = 16
    start = threading.Barrier(workers)
    outcomes = []

    def submit():
        try:
            start.wait()
            check_and_record_send(account, 1)
            outcomes.append("sent")
        except SendLimitExceeded:
            outcomes.append("refused")
        except Exception as error:  # reported below: a thread's exception would vanish
            outcomes.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 11 + ["sent"] * 5
    assert usage_for(account).messages_last_hour == 5
    alert = SendLimitAlert.objects.get()
    assert (alert.limit_name, alert.refused) == ("messages_per_hour", 11)


@pytest.mark.django_db(transaction=True)
def test_parallel_first_sends_create_one_usage_row(settings, domain):
    account = actions.create_account("alice@example.test")
    start = threading.Barrier(8)
    errors = []

    def submit():
        try:
            start.wait()
            check_and_record_send(account, 3)
        except Exception as error:
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert usage_for(account) == limits.Usage(messages_last_hour=8, recipients_last_day=24)


# The admin ------------------------------------------------------------------------------------


def test_the_admin_sets_limits_on_accounts_and_domains(admin_client, domain, alice):
    response = admin_client.post(
        reverse("admin:accounts_account_change", args=[alice.pk]),
        {"display_name": "Alice", "quota": "1G", "active": "on", "messages_per_hour": "50", "recipients_per_day": ""},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.messages_per_hour, alice.recipients_per_day) == (50, None)

    response = admin_client.post(
        reverse("admin:accounts_domain_change", args=[domain.pk]),
        {"default_quota": "0", "active": "on", "messages_per_hour": "", "recipients_per_day": "0"},
    )
    assert response.status_code == 302
    domain.refresh_from_db()
    assert (domain.messages_per_hour, domain.recipients_per_day) == (None, 0)


def test_the_account_form_says_what_an_empty_limit_inherits(admin_client, domain, alice):
    actions.set_domain_send_limits("example.test", messages_per_hour=40)
    html = admin_client.get(reverse("admin:accounts_account_change", args=[alice.pk])).content.decode()
    assert "limit (40); 0 is no limit." in html
    assert "limit (2000); 0 is no limit." in html


def test_the_admin_refuses_a_negative_limit(admin_client, alice):
    response = admin_client.post(
        reverse("admin:accounts_account_change", args=[alice.pk]),
        {"display_name": "Alice", "quota": "1G", "active": "on", "messages_per_hour": "-3"},
    )
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.messages_per_hour is None


def test_the_admin_shows_usage_and_alerts(admin_client, clock, settings, alice):
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 2
    send(alice, 3), send(alice, 4)
    refused(alice)
    html = admin_client.get(reverse("admin:accounts_account_change", args=[alice.pk])).content.decode()
    assert "2 of 2 messages in the last hour; 7 of 2000 recipients in the last 24 hours" in html
    assert "1 unacknowledged sending limit alert(s)" in html

    changelist = reverse("admin:accounts_sendlimitalert_changelist")
    response = admin_client.get(changelist, {"acknowledged__exact": "0", "q": "alice@"})
    [alert] = response.context["cl"].result_list
    response = admin_client.post(changelist, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)
    assert "Acknowledged 1 alert(s)." in response.content.decode()
    assert SendLimitAlert.objects.get().acknowledged
    html = admin_client.get(reverse("admin:accounts_account_change", args=[alice.pk])).content.decode()
    assert "unacknowledged" not in html
