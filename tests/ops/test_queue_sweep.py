"""The queue sweep's heartbeat: the sweep stamps it, /readyz, the dashboard and /metrics
watch it, so a beat that died (while the worker kept delivering new mail) is seen."""
import datetime
import re
import signal
import time

import pytest
from django.test import Client

from accounts.resolve import Resolution
from mta import inbound, queue, tasks
from mta.models import QueueSweep
from ops import dashboard, metrics


def queue_mail():
    resolution = Resolution(address="friend@faraway.test", external=["friend@faraway.test"])
    assert inbound.accept_message(
        b"Subject: out\r\n\r\nhi\r\n", mail_from="alice@example.test", resolutions=[resolution], client_ip="127.0.0.1",
    ).startswith("250 ")


def readyz():
    response = Client().get("/readyz", {"service": "queue"})
    return response.status_code, response.json()["checks"]["queue-sweep"]


def an_hour_ago():
    return queue.now() - datetime.timedelta(hours=1)


def test_the_sweep_stamps_the_shared_heartbeat(db):
    assert queue.last_sweep() is None
    before = queue.now()

    tasks.sweep()
    first = queue.last_sweep()
    tasks.sweep()

    assert before <= first <= queue.last_sweep() <= queue.now()
    assert QueueSweep.objects.count() == 1


def test_a_fresh_install_without_waiting_mail_is_ready_before_its_first_sweep(db):
    assert Client().get("/readyz", {"service": "queue"}).status_code == 200
    assert readyz()[1] == {"ok": True, "detail": "not run yet; no mail waiting for it"}
    assert not [w for w in dashboard.summary()["warnings"] if "sweep" in w.text]


def test_readyz_fails_while_the_sweep_is_stale_and_recovers_when_it_runs(db, settings):
    settings.MAILSUITE_QUEUE_SWEEP_SECONDS = 30
    stamped = an_hour_ago().replace(microsecond=0)
    queue.record_sweep(at=stamped)

    status, check = readyz()
    everything = Client().get("/readyz").json()["checks"]
    only_imap = Client().get("/readyz", {"service": "imap"}).json()["checks"]

    assert status == 503 and check["ok"] is False
    assert re.fullmatch(
        f"queue sweep has not run since {stamped.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC "
        r"\(360[01] s ago; it runs every 30 s\): deferred mail is not retried: check that Celery beat runs "
        r"\(runqueue without --no-beat on at least one node\)",
        check["detail"],
    )
    assert everything["queue-sweep"]["ok"] is False  # a plain /readyz checks the sweep too
    assert "queue-sweep" not in only_imap  # an IMAP-only node's balancer need not care

    tasks.sweep()

    status, check = readyz()
    assert status == 200 and check["ok"] is True and check["detail"].startswith("last run ")


def test_a_sweep_late_by_less_than_the_limit_is_fine(db, settings):
    settings.MAILSUITE_QUEUE_SWEEP_SECONDS = 120  # stale after 5 intervals: 10 minutes
    queue.record_sweep(at=queue.now() - datetime.timedelta(minutes=9))
    assert readyz()[0] == 200
    queue.record_sweep(at=queue.now() - datetime.timedelta(minutes=11))
    assert readyz()[0] == 503


def test_waiting_mail_and_no_sweep_ever_is_not_ready_once_past_the_limit(alice, monkeypatch):
    queue_mail()
    assert readyz()[0] == 200  # just queued: the first sweep is not due yet
    later = queue.now() + datetime.timedelta(hours=1)
    monkeypatch.setattr(queue, "now", lambda: later)

    status, check = readyz()

    assert status == 503
    assert check["detail"].startswith("queue sweep has never run, and mail has waited since ")


def test_the_dashboard_warns_of_a_stale_sweep_until_it_runs(admin_client, db):
    stamped = an_hour_ago().replace(microsecond=0)
    queue.record_sweep(at=stamped)

    page = admin_client.get("/admin/ops/")
    found = [(w.topic, w.text) for w in page.context["summary"]["warnings"]]

    assert ("queue", next(text for _, text in found if "sweep" in text)) in found
    assert any(text.startswith(f"queue sweep has not run since {stamped.astimezone(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC")
               for _, text in found)
    assert "queue sweep has not run since" in page.content.decode()

    tasks.sweep()

    page = admin_client.get("/admin/ops/")
    assert not [w for w in page.context["summary"]["warnings"] if "sweep" in w.text]
    assert page.context["summary"]["queue"]["sweep"].age_seconds < 60


def sweep_age():
    for family in metrics.QueueCollector().collect():
        if family.name == "mailsuite_queue_sweep_age_seconds":
            return family.samples[0].value
    raise AssertionError("no mailsuite_queue_sweep_age_seconds gauge")


def test_metrics_expose_the_age_of_the_last_sweep(db):
    assert sweep_age() == float("inf")  # never ran
    assert "mailsuite_queue_sweep_age_seconds +Inf" in Client().get("/metrics").content.decode()

    queue.record_sweep(at=an_hour_ago())
    assert 3600 <= sweep_age() < 3660

    tasks.sweep()
    assert 0 <= sweep_age() < 60


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_running_queue_worker_with_beat_keeps_readyz_green(settings):
    """The real thing: runqueue's embedded beat sends the sweep, its worker runs it."""
    from tests.e2e.helpers import child_env, manage

    queue.record_sweep(at=an_hour_ago())
    assert readyz()[0] == 503
    env = child_env(settings.DATA_DIR, MAILSUITE_QUEUE_SWEEP_SECONDS=1)
    process = manage("runqueue", "--concurrency", "2", env=env)
    try:
        deadline = time.monotonic() + 60
        while readyz()[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except Exception:
            process.kill()
            process.wait()
    assert readyz()[0] == 200
