"""Prometheus metrics: what each process counts, and what /metrics collects at scrape time.

Counted where it happens (one call at each central place): messages received (mta.inbound),
delivery outcomes per recipient with their enhanced status code as the reason
(mta.delivery), connections accepted per protocol (each server's accept), failed logins per
protocol (accounts.auth), spam verdicts (antispam.checks), HTTP request latencies (ops
middleware). Read from the database when scraped: the outbound queue's depth per state and
the age of its oldest pending message and of the last periodic sweep, so every node
reports the one shared queue.

Implementation notes:
- runmail runs each daemon in its own process (SMTP in several). With
  PROMETHEUS_MULTIPROC_DIR set in their environment (runmail sets it to DATA_DIR/metrics,
  emptied at start: prometheus_client's multi-process mode), each process writes its
  counters to files there and /metrics, served by the web process, adds them all up.
  Without it, /metrics shows the web process's own counters only. The variable must be set
  before prometheus_client is first imported, so only a parent can set it.
- Label values come from small fixed sets (protocols, outcomes, status codes, URL pattern
  names), never from addresses, paths or IPs: each value is a time series.
- Counting never stands in the way of mail: nothing here touches the database except the
  scrape-time collector.
"""
import os
import re
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client.core import GaugeMetricFamily

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")

MESSAGES_RECEIVED = Counter(
    "mailsuite_messages_received", "Messages this server took responsibility for", ["source"]
)
DELIVERIES = Counter(
    "mailsuite_deliveries",
    "Delivery attempts from the queue, per recipient: outcome (delivered, deferred, bounced), "
    "destination (local, remote) and reason (the enhanced status code)",
    ["outcome", "destination", "reason"],
)
CONNECTIONS = Counter("mailsuite_connections", "Client connections accepted", ["protocol"])
AUTH_FAILURES = Counter("mailsuite_auth_failures", "Failed logins", ["protocol", "reason"])
SPAM_VERDICTS = Counter(
    "mailsuite_spam_verdicts", "Sender checks of received mail: ham, junk or rejected", ["verdict"]
)
HTTP_REQUESTS = Histogram(
    "mailsuite_http_request_duration_seconds",
    "Web requests (webmail, admin, API) by method, URL pattern name and status class",
    ["method", "view", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def message_received(*, internal=False):
    MESSAGES_RECEIVED.labels("internal" if internal else "smtp").inc()


def delivery(outcome, *, local, status=""):
    reason = status if _STATUS_CODE.fullmatch(status or "") else "none"
    DELIVERIES.labels(outcome, "local" if local else "remote", reason).inc()


def connection(protocol):
    CONNECTIONS.labels(protocol).inc()


def auth_failure(protocol, reason):
    AUTH_FAILURES.labels(str(protocol or "unknown")[:16], reason).inc()


def spam_verdict(outcome):
    """Count an antispam.checks.Outcome."""
    verdict = "rejected" if outcome.refusal else "junk" if outcome.junk else "ham"
    SPAM_VERDICTS.labels(verdict).inc()


def http_request(method, view, status, seconds):
    method = method if method in _HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(method, view, f"{status // 100}xx").observe(seconds)


# Multi-process mode ----------------------------------------------------------------------


def prepare_multiprocess_dir(data_dir):
    """An empty DATA_DIR/metrics for a new run (files of a previous run would be added to
    this one's counts); returns its path for PROMETHEUS_MULTIPROC_DIR."""
    path = Path(data_dir) / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def process_exited(pid):
    """Tell prometheus_client a child is gone (its live gauges stop counting)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


# Scrape ------------------------------------------------------------------------------


class QueueCollector:
    """The outbound queue as it is now, read from the database at each scrape."""

    def collect(self):
        from django.db.models import Count, Min
        from django.utils import timezone

        from mta.models import QueuedRecipient

        State = QueuedRecipient.State
        pending = (State.QUEUED, State.DEFERRED, State.HELD)
        counts = dict(
            QueuedRecipient.objects.filter(state__in=pending).values_list("state").annotate(n=Count("id"))
        )
        depth = GaugeMetricFamily(
            "mailsuite_queue_recipients", "Recipients waiting in the outbound queue", labels=["state"]
        )
        for state in pending:
            depth.add_metric([state], counts.get(state, 0))
        yield depth
        oldest = QueuedRecipient.objects.filter(state__in=(State.QUEUED, State.DEFERRED)).aggregate(
            at=Min("message__created")
        )["at"]
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "mailsuite_queue_oldest_seconds",
            "Age of the oldest message with a recipient still to deliver (0: none)",
            value=max(0.0, age),
        )
        from mta import queue

        sweep = queue.sweep_status()
        yield GaugeMetricFamily(
            "mailsuite_queue_sweep_age_seconds",
            "Seconds since the outbound queue's periodic sweep last ran on any node (+Inf: never)",
            value=float("inf") if sweep.age_seconds is None else sweep.age_seconds,
        )


class _Scrape:
    def __init__(self, *sources):
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def registry():
    """The counters to expose: every process's (multi-process mode) or this one's."""
    if os.environ.get(MULTIPROC_ENV):
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return combined
    return PROCESS_REGISTRY


def exposition():
    """The text exposition format of everything /metrics shows."""
    return generate_latest(_Scrape(registry(), QueueCollector()))


def sample(name, **labels):
    """The summed value of the samples called `name` matching `labels` (the dashboard's numbers)."""
    total = 0.0
    for family in registry().collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
