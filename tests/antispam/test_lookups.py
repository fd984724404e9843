"""What decide() reads per recipient (antispam.lookups): thresholds, allow/block lists and
corpus sizes kept per process for a couple of seconds. A change made in this process counts
from the next message; one made by another process (the webmail's, the admin's) within
lookups.TTL seconds."""
import pytest

from antispam import actions, lookups, policy
from antispam.models import ListEntry, SpamSettings
from tests.antispam.conftest import message, send, sign_rsa


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(lookups, "clock", clock)
    lookups.forget()
    yield clock
    lookups.forget()


def names(account, **assessment):
    decision = policy.decide(policy.Assessment(**assessment), [account])[account.pk]
    return [name for name, _, _ in decision.rules], decision


def test_a_list_change_made_here_counts_at_once(db, alice):
    sam = {"from_address": "sam@sender.test", "from_verified": True}
    assert "BLOCKLISTED" not in names(alice, **sam)[0]
    actions.add_list_entry("block", "sender.test", account=alice)
    assert names(alice, **sam)[0][0] == "BLOCKLISTED"
    entry = ListEntry.objects.get(account=alice)
    actions.remove_list_entry(entry.pk, account=alice)
    assert "BLOCKLISTED" not in names(alice, **sam)[0]


@pytest.mark.django_db(transaction=True)
def test_a_block_entry_added_by_another_process_refuses_within_seconds(smtp_server, alice, clock):
    assert send(smtp_server, sign_rsa(message()))[0] == 250
    # As the webmail in another process would: this process is not told.
    ListEntry.objects.create(account=alice, kind=ListEntry.BLOCK, pattern="sam@sender.test")
    clock.now += lookups.TTL
    assert send(smtp_server, sign_rsa(message()))[0] == 550


def test_thresholds_and_domain_entries_from_elsewhere_count_after_ttl(db, alice, domain, clock):
    assert names(alice, from_address="x@spam.test")[1].thresholds == policy.DEFAULTS
    SpamSettings.objects.create(domain=domain, tag_threshold=1.0, junk_threshold=2.0)
    SpamSettings.objects.create(account=alice, junk_threshold=3.0, never_reject=True)
    ListEntry.objects.create(domain=domain, kind=ListEntry.BLOCK, pattern="spam.test")
    clock.now += lookups.TTL / 2
    assert names(alice, from_address="x@spam.test")[1].thresholds == policy.DEFAULTS  # still remembered
    clock.now += lookups.TTL / 2
    rules, decision = names(alice, from_address="x@spam.test")
    assert decision.thresholds == policy.Thresholds(tag=1.0, junk=3.0, reject=None)
    assert rules[0] == "BLOCKLISTED"
    assert decision.rules[0][2] == "spam.test is on your domain's block list"


def test_the_account_list_wins_over_the_domain_list(db, alice, domain):
    actions.add_list_entry("block", "sender.test", domain=domain)
    actions.add_list_entry("allow", "sam@sender.test", account=alice)
    assert names(alice, from_address="sam@sender.test", from_verified=True)[0] == ["ALLOWLISTED"]
    assert names(alice, from_address="eve@sender.test", from_verified=True)[0][0] == "BLOCKLISTED"


def test_a_recipient_costs_few_queries_once_remembered(db, alice, bob, django_assert_max_num_queries):
    assessment = policy.Assessment(from_address="sam@sender.test", tokens=["agenda", "minutes"])
    policy.decide(assessment, [alice, bob])
    # Per recipient: the sender's mark; the corpus sizes, lists, thresholds and the
    # correspondents are remembered (no Bayes query: nothing learned yet).
    with django_assert_max_num_queries(2):
        policy.decide(assessment, [alice, bob])
