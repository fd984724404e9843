"""RCPT policy decisions and the per-process cache of resolutions."""
import pytest

from accounts import actions
from mta.recipients import Client, ResolutionCache, check_recipient

OUTSIDER = Client(ip="192.0.2.7")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.django_db
def test_a_found_recipient_is_remembered_until_the_ttl_runs_out(alice):
    clock = Clock()
    cache = ResolutionCache(ttl=2.0, clock=clock)
    assert check_recipient("Alice@example.test", client=OUTSIDER, cache=cache).reply == "250 2.1.5 Ok"
    actions.set_account_active("alice@example.test", False)
    assert cache.get("alice@example.test").accounts.keys() == {alice.pk}
    clock.now += 2.5
    assert cache.get("alice@example.test") is None
    decision = check_recipient("alice@example.test", client=OUTSIDER, cache=cache)
    assert decision.reply == "550 5.2.1 <alice@example.test>: mailbox disabled"


@pytest.mark.django_db
def test_refusals_are_never_cached(domain):
    cache = ResolutionCache(ttl=60)
    assert check_recipient("nobody@example.test", client=OUTSIDER, cache=cache).reply.startswith("550 5.1.1")
    assert check_recipient("x@elsewhere.test", client=OUTSIDER, cache=cache).reply.startswith("554 5.7.1")
    assert cache.entries == {}


@pytest.mark.django_db
def test_relaying_is_decided_per_client_and_not_cached(domain):
    cache = ResolutionCache(ttl=60)
    trusted = Client(ip="10.0.0.1", trusted=True)
    decision = check_recipient("x@elsewhere.test", client=trusted, cache=cache)
    assert decision.reply == "250 2.1.5 Ok" and decision.resolution.external == ["x@elsewhere.test"]
    assert cache.entries == {}
    assert check_recipient("x@elsewhere.test", client=OUTSIDER, cache=cache).reply.startswith("554 5.7.1")


def test_a_zero_ttl_disables_the_cache():
    cache = ResolutionCache(ttl=0)
    cache.put("a@b.test", object())
    assert cache.get("a@b.test") is None
