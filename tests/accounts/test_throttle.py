"""Failed-login throttling: per IP and per address, growing blocks, shared by every protocol.

Personas: alice and bob have mailboxes in example.test; mallory guesses passwords from
192.0.2.66 (and from wherever else she can).
"""
import threading

import pytest
from django.db import connection
from django.urls import reverse

from accounts import actions, throttle
from accounts.auth import authenticate, check_login_allowed, record_login
from accounts.errors import LoginThrottled
from accounts.models import LoginThrottle
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

MALLORY = "192.0.2.66"


def login(address, password=PASSWORD, ip=MALLORY, service="imap"):
    return authenticate(address, password, service=service, remote_ip=ip)


def fail(times, address="alice@example.test", ip=MALLORY):
    for _ in range(times):
        assert login(address, "wrong guess", ip=ip) is None


def refusal(address="alice@example.test", ip=MALLORY):
    with pytest.raises(LoginThrottled) as raised:
        login(address, ip=ip)
    return raised.value


def row(kind, key):
    return LoginThrottle.objects.get(kind=kind, key=key)


# Per IP -------------------------------------------------------------------------------


def test_it_blocks_an_ip_after_five_failures_in_ten_minutes(clock, alice, bob):
    for n in range(4):
        fail(1, f"guess{n}@example.test")
        clock.advance(minutes=2)
    assert login("alice@example.test").address == "alice@example.test"  # 4 failures: still fine
    fail(1, "bob@example.test")
    blocked = refusal("bob@example.test")  # the right password, refused unchecked
    assert (blocked.retry_after, blocked.scope) == (60, "ip")
    assert str(blocked) == "Too many failed logins; try again in 60 seconds"
    assert login("bob@example.test", ip="198.51.100.7").address == "bob@example.test"


def test_it_counts_loopback_like_any_other_ip(clock, alice):
    fail(5, ip="127.0.0.1")
    assert refusal(ip="127.0.0.1").scope == "ip"


def test_it_counts_ipv6_clients_per_64_and_mapped_ipv4_as_ipv4(clock, alice):
    for host in range(1, 6):
        fail(1, f"guess{host}@example.test", ip=f"2001:db8:0:7::{host}")
    assert refusal(ip="2001:db8:0:7:ffff::1").scope == "ip"
    assert login("alice@example.test", ip="2001:db8:0:8::1") is not None
    assert row("ip", "2001:db8:0:7::/64").blocked_until is not None

    fail(5, "nobody@example.test", ip="::ffff:203.0.113.9")
    assert refusal(ip="203.0.113.9").scope == "ip"


def test_failures_spread_over_more_than_the_window_do_not_block(clock, alice):
    fail(4)
    clock.advance(minutes=10)
    fail(4)
    assert login("alice@example.test") is not None


# Per account --------------------------------------------------------------------------


def test_it_blocks_an_account_guessed_from_many_ips(clock, alice, bob):
    for n in range(10):
        fail(1, ip=f"198.51.100.{n}")
    blocked = refusal(ip="203.0.113.1")
    assert (blocked.retry_after, blocked.scope) == (60, "account")
    assert login("bob@example.test", ip="203.0.113.1") is not None


def test_it_counts_an_address_however_it_is_typed(clock, alice):
    for n, typed in enumerate(["Alice@Example.TEST", " alice@example.test", "ALICE@EXAMPLE.TEST"] * 3 + ["alice@example.test"]):
        fail(1, typed, ip=f"198.51.100.{n}")
    assert refusal("alice@EXAMPLE.test", ip="203.0.113.1").scope == "account"


def test_it_throttles_unknown_addresses_alike_so_they_cannot_be_told_apart(clock, domain):
    for n in range(10):
        fail(1, "nobody@example.test", ip=f"198.51.100.{n}")
    assert refusal("nobody@example.test", ip="203.0.113.1").scope == "account"


def test_a_success_clears_the_account_count_but_not_the_ip_count(clock, alice, bob):
    fail(4)
    assert login("alice@example.test") is not None
    assert not LoginThrottle.objects.filter(kind="account").exists()
    assert row("ip", MALLORY).failures == 4
    fail(1, "bob@example.test")
    assert refusal("bob@example.test").scope == "ip"


# Blocks: unchecked, expiring, growing ---------------------------------------------------


def test_attempts_during_a_block_are_neither_checked_nor_counted(clock, alice):
    fail(5)
    for _ in range(3):
        refusal()
    assert row("ip", MALLORY).failures == 0
    assert row("account", "alice@example.test").failures == 5


def test_a_block_ends_after_its_time(clock, alice):
    fail(5)
    clock.advance(seconds=59)
    assert refusal().retry_after == 1
    clock.advance(seconds=1)
    assert login("alice@example.test") is not None


def test_blocks_in_a_row_double_up_to_the_maximum(clock, settings, alice):
    settings.MAILSUITE_LOGIN_BLOCK_MAX = 300
    lengths = []
    for round in range(5):
        fail(5, f"nobody{round}@example.test")
        lengths.append(refusal().retry_after)
        clock.advance(seconds=lengths[-1])
    assert lengths == [60, 120, 240, 300, 300]
    assert row("ip", MALLORY).blocks == 5


def test_a_quiet_window_after_a_block_starts_afresh(clock, alice):
    fail(5, "nobody1@example.test")
    clock.advance(seconds=60)
    fail(5, "nobody2@example.test")
    assert refusal().retry_after == 120
    clock.advance(seconds=120 + 600)  # the block, then a whole window without failures
    fail(5, "nobody3@example.test")
    assert refusal().retry_after == 60


def test_zero_turns_a_kind_of_throttling_off(clock, settings, alice):
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = 0
    fail(9)
    assert login("alice@example.test") is not None
    assert not LoginThrottle.objects.filter(kind="ip").exists()


# The pieces for mechanisms that never see a password (SCRAM) ---------------------------


def test_check_login_allowed_and_record_login_throttle_like_authenticate(clock, alice):
    check_login_allowed("alice@example.test", MALLORY)
    for _ in range(5):
        record_login("alice@example.test", service="smtp", remote_ip=MALLORY, success=False)
    with pytest.raises(LoginThrottled) as raised:
        check_login_allowed("alice@example.test", MALLORY)
    assert raised.value.scope == "ip"
    check_login_allowed("alice@example.test", "198.51.100.1")  # another IP: 5 of 10 for alice
    record_login("alice@example.test", service="smtp", remote_ip="198.51.100.1", success=True)
    assert not LoginThrottle.objects.filter(kind="account").exists()


def test_a_password_check_costs_few_queries(clock, alice, django_assert_num_queries, django_assert_max_num_queries):
    # Three reads (throttle, domain, account), then the writes of one transaction.
    with django_assert_num_queries(3 + 2):  # the event and last_login: no failures to clear
        assert login("alice@example.test") is not None
    fail(1)
    with django_assert_num_queries(3 + 3):  # the event, last_login, the account's count reset
        assert login("alice@example.test") is not None
    assert not LoginThrottle.objects.filter(kind="account").exists()
    with django_assert_max_num_queries(3 + 2 + 4):  # the event; insert-if-missing, lock and update the counts
        assert login("alice@example.test", "wrong") is None


# Several processes at once ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_are_all_counted(settings, domain):
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = 1000
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_ACCOUNT = 1000
    start = threading.Barrier(12)
    errors = []

    def guess():
        try:
            start.wait()
            for _ in range(3):
                throttle.record_failure("alice@example.test", MALLORY)
        except Exception as error:  # reported below: a thread's exception would vanish
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert row("ip", MALLORY).failures == 36
    assert row("account", "alice@example.test").failures == 36


# The admin and the operator's actions -----------------------------------------------------


def test_the_admin_lists_active_blocks_and_clears_them(clock, admin_client, alice, bob):
    fail(5)  # blocks the IP; alice's own count is 5 of 10, not blocked
    fail(1, "bob@example.test", ip="198.51.100.1")
    changelist = reverse("admin:accounts_loginthrottle_changelist")
    response = admin_client.get(changelist)
    assert [str(obj) for obj in response.context["cl"].result_list] == [f"IP address {MALLORY}"]
    html = response.content.decode()
    assert "1m 00s" in html
    response = admin_client.get(changelist, {"state": "all"})
    assert len(response.context["cl"].result_list) == 4  # and the three rows still counting

    blocked = row("ip", MALLORY)
    response = admin_client.post(changelist, {"action": "clear", "_selected_action": [blocked.pk]}, follow=True)
    assert "Cleared 1 login throttle record(s)." in response.content.decode()
    assert not LoginThrottle.objects.filter(kind="ip", key=MALLORY).exists()
    assert login("alice@example.test") is not None


def test_the_admin_searches_blocks_by_address_and_ipv6_host(clock, admin_client, alice):
    fail(5, ip="2001:db8::1")
    changelist = reverse("admin:accounts_loginthrottle_changelist")
    response = admin_client.get(changelist, {"q": "2001:DB8::99"})
    assert [obj.key for obj in response.context["cl"].result_list] == ["2001:db8::/64"]
    response = admin_client.get(changelist, {"q": "Alice@", "state": "all"})
    assert [obj.key for obj in response.context["cl"].result_list] == ["alice@example.test"]


def test_the_account_page_shows_its_block(clock, admin_client, alice):
    page = reverse("admin:accounts_account_change", args=[alice.pk])
    assert "not blocked (0 recent failure(s))" in admin_client.get(page).content.decode()
    for n in range(10):
        fail(1, ip=f"198.51.100.{n}")
    html = admin_client.get(page).content.decode()
    assert "blocked until 2030-01-01 12:01:00 UTC" in html
    assert "state=all&amp;q=alice%40example.test" in html


def test_unblock_login_clears_an_address_or_an_ip(clock, alice):
    for n in range(10):
        fail(1, ip=f"198.51.100.{n}")
    fail(5, "nobody@example.test", ip="2001:db8::5")
    assert actions.unblock_login(address="Alice@example.test") == 1
    assert actions.unblock_login(remote_ip="2001:db8::77") == 1
    assert login("alice@example.test", ip="2001:db8::5") is not None


def test_pruning_drops_only_rows_whose_window_has_ended(clock, alice):
    fail(5)  # blocked for a minute: its next window runs to 12:11
    fail(1, "bob@example.test", ip="198.51.100.1")
    clock.advance(minutes=10)
    assert actions.prune_login_throttle() == 3
    assert list(LoginThrottle.objects.values_list("key", flat=True)) == [MALLORY]
    clock.advance(minutes=1)
    assert actions.prune_login_throttle() == 1
    assert not LoginThrottle.objects.exists()
