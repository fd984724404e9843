"""policy.store_verdicts(): one Verdict per (account, blob), a second batch for the same
copy keeps the first, JSON and time as the ORM reads them back."""
from types import SimpleNamespace as NS

import pytest
from django.utils import timezone

from antispam import policy
from antispam.models import Verdict
from mailstore.models import Blob


def batch(account, blob, *, score, rules):
    decision = NS(score=score, action="tag", rules=rules, results={"spf": "pass", "dkim": ["fail"]})
    job = NS(outcomes=[
        NS(message=NS(blob_id=blob.pk), recipient=NS(account=account)),
        NS(message=None, recipient=NS(account=account)),  # a copy that was not stored
    ])
    return [({account.pk: decision}, job), ({}, job)]


@pytest.mark.django_db
def test_verdicts_are_stored_once_per_copy(alice, bob):
    blob = Blob.objects.create(name="b1", size=1, sha256="0")
    before = timezone.now()
    rules = [("BAYES_SPAM", 2.5, "Bayes: 0.99 \u2014 words like \u201cwinner\u201d")]
    policy.store_verdicts(batch(alice, blob, score=2.5, rules=rules) + batch(bob, blob, score=1.0, rules=[]))
    policy.store_verdicts(batch(alice, blob, score=9.0, rules=[]))  # already there: kept as it was
    verdict = Verdict.objects.get(account=alice, blob=blob)
    assert (verdict.score, verdict.action) == (2.5, "tag")
    assert verdict.rules == [["BAYES_SPAM", 2.5, "Bayes: 0.99 \u2014 words like \u201cwinner\u201d"]]
    assert verdict.results == {"spf": "pass", "dkim": ["fail"]}
    assert before <= verdict.created <= timezone.now()
    assert Verdict.objects.get(account=bob, blob=blob).rules == []
    assert Verdict.objects.filter(rules__0__0="BAYES_SPAM").count() == 1  # real JSON, not a string
