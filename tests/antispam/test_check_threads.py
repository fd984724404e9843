"""check_incoming_off_loop(): the checks' DNS threads never touch the database; whether
the From domain is ours (FORGED_LOCAL_DOMAIN) is read in the database pool. A message
whose lookups are all in memory is checked on the event loop, without a thread."""
import asyncio
import threading

import pytest
from django.conf import settings

from accounts import resolve
from antispam import checks, lookups
from mailsuite.lib.aio import shutdown_db_executor
from tests.antispam.conftest import STRANGER_IP, message, zone
from tests.dnsserver import DNSServer


@pytest.fixture
def asked_from(monkeypatch):
    """The names of the threads that read whether a domain is ours."""
    threads = []
    real = resolve.is_local_domain

    def recording(name):
        threads.append(threading.current_thread().name)
        return real(name)

    monkeypatch.setattr(resolve, "is_local_domain", recording)
    lookups.forget()
    yield threads
    lookups.forget()
    shutdown_db_executor()


def check(raw):
    decision, outcome = asyncio.run(checks.check_incoming_off_loop(
        raw, attachment_actions={"reject"}, outgoing=False,
        client_ip=STRANGER_IP, helo="mail.sender.test", mail_from="sam@sender.test",
    ))
    assert decision.refusal is None
    return outcome


@pytest.mark.django_db(transaction=True)
def test_our_from_domain_is_looked_up_in_the_database_pool(domain, asked_from):
    outcome = check(message(author="Boss <boss@example.test>"))
    assert "FORGED_LOCAL_DOMAIN" in {r.name for r in outcome.rules}
    assert len(asked_from) == 1
    assert not asked_from[0].startswith("sender-checks")
    # Remembered for lookups.TTL: the next message asks nobody.
    outcome = check(message(author="Boss <boss@example.test>"))
    assert "FORGED_LOCAL_DOMAIN" in {r.name for r in outcome.rules}
    assert len(asked_from) == 1


@pytest.mark.django_db(transaction=True)
def test_an_outside_from_domain_is_not_ours(domain, asked_from):
    outcome = check(message())
    assert "FORGED_LOCAL_DOMAIN" not in {r.name for r in outcome.rules}
    assert asked_from and not any(name.startswith("sender-checks") for name in asked_from)


@pytest.mark.django_db(transaction=True)
def test_the_attachment_and_sender_checks_share_one_parse(domain, asked_from, monkeypatch):
    import email

    parses = []
    real = email.message_from_bytes
    monkeypatch.setattr(email, "message_from_bytes", lambda *a, **k: parses.append(1) or real(*a, **k))
    monkeypatch.setattr(checks, "INLINE_LIMIT", 0)  # straight to a thread: one run
    check(message())
    assert len(parses) == 1


@pytest.fixture
def cached_dns(settings):
    """The zone from a server whose answers may be kept (a TTL of 5 minutes)."""
    with DNSServer(zone(), ttl=300) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        yield server


@pytest.fixture
def checked_in(monkeypatch):
    """The names of the threads check_incoming() ran in, once per run (started over or not)."""
    threads = []
    real = checks.check_incoming

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(checks, "check_incoming", recording)
    return threads


@pytest.mark.django_db(transaction=True)
def test_once_its_dns_answers_are_cached_a_message_is_checked_on_the_event_loop(domain, cached_dns, checked_in, asked_from):
    first = check(message())
    asked = len(cached_dns.queries)
    # First on the loop, which stops at the first lookup; then again in a thread.
    assert checked_in[0] == threading.main_thread().name
    assert checked_in[1].startswith("sender-checks")
    second = check(message())
    assert checked_in[2:] == [threading.main_thread().name]
    assert len(cached_dns.queries) == asked  # nothing asked the second time
    assert second.results == first.results == {"spf": "fail", "helo": "fail", "dkim": [], "dmarc": "fail", "arc": "none"}
    assert second.rules == first.rules and second.refusal == first.refusal


@pytest.mark.django_db(transaction=True)
def test_a_message_over_the_inline_limit_is_checked_in_a_thread(domain, cached_dns, checked_in, asked_from):
    check(message())
    big = message(body=b"All the numbers, once more.\r\n" * (checks.INLINE_LIMIT // 29 + 1))
    check(big)
    assert checked_in[-1].startswith("sender-checks")


@pytest.mark.django_db(transaction=True)
def test_a_check_started_over_logs_once(domain, cached_dns, checked_in, asked_from, caplog):
    forged = message(extra=b"Authentication-Results: " + settings.MAILSUITE_HOSTNAME.encode() + b"; spf=pass\r\n")
    with caplog.at_level("INFO", logger="antispam.checks"):
        check(forged)
    assert len(checked_in) == 2  # started over in a thread
    lines = [r.getMessage() for r in caplog.records]
    assert sum("removed 1 Authentication-Results" in line for line in lines) == 1
    assert sum(line.startswith("sender checks") for line in lines) == 1
