"""Seams for the abuse-limit tests: a clock the test moves, and pinned limits."""
from datetime import UTC, datetime, timedelta

import pytest


class Clock:
    """Stands in for timezone.now; `advance(minutes=5)` moves it on."""

    def __init__(self, start):
        self.time = start

    def __call__(self):
        return self.time

    def advance(self, **delta):
        self.time += timedelta(**delta)

    def set(self, time):
        self.time = time


@pytest.fixture
def clock(monkeypatch):
    from accounts import limits, throttle

    clock = Clock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    monkeypatch.setattr(throttle, "now", clock)
    monkeypatch.setattr(limits, "now", clock)
    return clock


@pytest.fixture(autouse=True)
def abuse_limits(settings):
    """The documented defaults, whatever the environment says."""
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = 5
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_ACCOUNT = 10
    settings.MAILSUITE_LOGIN_FAILURE_WINDOW = 600
    settings.MAILSUITE_LOGIN_BLOCK_INITIAL = 60
    settings.MAILSUITE_LOGIN_BLOCK_MAX = 3600
    settings.MAILSUITE_LOGIN_IPV6_PREFIX = 64
    settings.MAILSUITE_LOGIN_EVENT_DAYS = 30
    settings.MAILSUITE_SEND_MESSAGES_PER_HOUR = 500
    settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY = 2000
    return settings
