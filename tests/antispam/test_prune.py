"""Daily housekeeping of the anti-spam tables (antispam.tasks.prune, scheduled by Celery
beat): dead greylist rows and training examples learned long ago go, the rest stays."""
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from antispam import actions, tasks
from mailstore.actions import Recipient, deliver
from mailstore.models import Message, TrainingExample
from mta.models import GreylistAllowedNetwork, GreylistTriplet
from tests.antispam.conftest import message


def test_the_prune_is_scheduled_daily_by_beat():
    from mailsuite.celery import app

    entries = [entry for entry in app.conf.beat_schedule.values() if entry["task"] == "antispam.tasks.prune"]
    assert [entry["schedule"] for entry in entries] == [86400.0]
    app.loader.import_default_modules()
    assert "antispam.tasks.prune" in app.tasks
    assert settings.CELERY_BEAT_SCHEDULE["spam-prune"]["task"] == "antispam.tasks.prune"


@pytest.mark.django_db
def test_it_deletes_dead_greylist_rows_and_old_learned_examples(alice):
    now = timezone.now()
    day = timedelta(days=1)
    for network, expires in (("192.0.2.0/24", now - day), ("198.51.100.0/24", now + day)):
        GreylistTriplet.objects.create(
            network=network, sender="s@sender.test", recipient="alice@example.test",
            first_seen=now - 3 * day, last_seen=now - 3 * day, expires_at=expires,
        )
    GreylistAllowedNetwork.objects.create(network="203.0.113.0/24", expires_at=now - day)
    GreylistAllowedNetwork.objects.create(network="192.0.2.0/24", expires_at=None)  # the operator's: forever
    GreylistAllowedNetwork.objects.create(network="198.51.100.0/24", expires_at=now + day)
    deliver(message(), [Recipient(alice, alice.address)], return_path="sam@sender.test")
    blob = Message.objects.get().blob
    old = now - timedelta(days=actions.LEARNED_KEPT_DAYS + 1)
    for learned, created, verdict in ((True, old, "spam"), (True, now, "spam"), (False, old, "ham")):
        TrainingExample.objects.create(account=alice, blob=blob, verdict=verdict, learned=learned, created=created)

    assert tasks.prune() == {"greylist": 2, "training examples": 1}

    assert list(GreylistTriplet.objects.values_list("network", flat=True)) == ["198.51.100.0/24"]
    assert sorted(GreylistAllowedNetwork.objects.values_list("network", flat=True)) == ["192.0.2.0/24", "198.51.100.0/24"]
    assert sorted(TrainingExample.objects.values_list("learned", "verdict")) == [(False, "ham"), (True, "spam")]
    assert tasks.prune() == {"greylist": 0, "training examples": 0}


@pytest.mark.django_db
def test_the_examples_go_in_bounded_batches(alice, monkeypatch):
    monkeypatch.setattr(actions, "PRUNE_BATCH", 2)
    deliver(message(), [Recipient(alice, alice.address)], return_path="sam@sender.test")
    blob = Message.objects.get().blob
    old = timezone.now() - timedelta(days=30)
    TrainingExample.objects.bulk_create(
        TrainingExample(account=alice, blob=blob, verdict="spam", learned=True, created=old) for _ in range(5)
    )
    assert actions.prune_training_examples() == 5
    assert not TrainingExample.objects.exists()
