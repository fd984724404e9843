"""check_incoming_off_loop(): the checks' DNS threads never touch the database; whether
the From domain is ours (FORGED_LOCAL_DOMAIN) is read in the database pool."""
import asyncio
import threading

import pytest

from accounts import resolve
from antispam import checks, lookups
from mailsuite.lib.aio import shutdown_db_executor
from tests.antispam.conftest import STRANGER_IP, message


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
    check(message())
    assert len(parses) == 1
