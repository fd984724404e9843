"""The operator's dashboard: numbers from the database and the metrics, and the warnings
worth acting on (a certificate about to expire, DNS that is wrong, a queue that grows or
holds old mail or whose periodic sweep stopped, this server's IP on a block list).

summary() is plain data, for the admin page and for an API endpoint alike. Queue numbers
come from the database, so every node shows the same queue; counters since start come from
ops.metrics (all of runmail's processes on this node).
"""
import datetime
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Min
from django.utils import timezone

from mta import queue as mta_queue
from mta.models import DeliveryAttempt, QueuedRecipient
from ops import dnsdoctor, metrics

CERTIFICATE_WARNING_DAYS = 14
QUEUE_OLD_SECONDS = 3600  # mail waiting longer than this deserves a look
QUEUE_GROWING_MINIMUM = 50  # below this many waiting recipients, growth is noise
DNS_CACHE_SECONDS = 24 * 3600  # how long a domain's last DNS check is shown here
_DNS_CACHE_KEY = "ops:dns:{}"

now = timezone.now  # seam for tests


@dataclass(frozen=True)
class Warning:
    topic: str  # "certificate", "dns", "queue", "blocklist"
    text: str


def certificate_expiry(path):
    """(not-after datetime, None) of the PEM certificate at `path`, or (None, why not)."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as error:
        return None, f"cannot read the certificate {path}: {error}"
    return certificate.not_valid_after_utc, None


def certificate_warnings(path, at):
    expires, problem = certificate_expiry(path)
    if problem:
        return [Warning("certificate", problem)]
    left = expires - at
    if left <= datetime.timedelta(0):
        return [Warning("certificate", f"the TLS certificate expired on {expires:%Y-%m-%d %H:%M} UTC")]
    if left <= datetime.timedelta(days=CERTIFICATE_WARNING_DAYS):
        return [Warning("certificate", f"the TLS certificate expires in {left.days} days ({expires:%Y-%m-%d}): renew it")]
    return []


def queue_numbers(at):
    State = QueuedRecipient.State
    pending = (State.QUEUED, State.DEFERRED, State.HELD)
    by_state = dict(
        QueuedRecipient.objects.filter(state__in=pending).values_list("state").annotate(n=Count("id"))
    )
    oldest = QueuedRecipient.objects.filter(state__in=(State.QUEUED, State.DEFERRED)).aggregate(
        at=Min("message__created"))["at"]
    hour_ago, day_ago = at - datetime.timedelta(hours=1), at - datetime.timedelta(days=1)
    outcomes = dict(
        DeliveryAttempt.objects.filter(started__gte=day_ago).values_list("outcome").annotate(n=Count("id"))
    )
    return {
        "waiting": {state: by_state.get(state, 0) for state in pending},
        "oldest_seconds": max(0, int((at - oldest).total_seconds())) if oldest else 0,
        "entered_last_hour": QueuedRecipient.objects.filter(message__created__gte=hour_ago).count(),
        "left_last_hour": DeliveryAttempt.objects.filter(
            started__gte=hour_ago, outcome__in=("delivered", "bounced")).count(),
        "attempts_last_day": {k: outcomes.get(k, 0) for k in ("delivered", "deferred", "bounced")},
        "sweep": mta_queue.sweep_status(at),
    }


def queue_warnings(queue):
    warnings = []
    if not queue["sweep"].ok:
        warnings.append(Warning("queue", queue["sweep"].problem))
    waiting = queue["waiting"]["queued"] + queue["waiting"]["deferred"]
    if queue["oldest_seconds"] > QUEUE_OLD_SECONDS:
        hours = queue["oldest_seconds"] / 3600
        warnings.append(Warning("queue", f"the oldest message has waited {hours:.1f} hours for delivery"))
    if waiting >= QUEUE_GROWING_MINIMUM and queue["entered_last_hour"] > queue["left_last_hour"]:
        warnings.append(Warning(
            "queue",
            f"the queue is growing: {waiting} recipients waiting, {queue['entered_last_hour']} entered and "
            f"{queue['left_last_hour']} left in the last hour",
        ))
    return warnings


def remember_dns_report(report, at=None):
    """Keep a domain's DNS check for the dashboard (the DNS page and CLI call this)."""
    cache.set(_DNS_CACHE_KEY.format(report.domain), {
        "domain": report.domain, "checked": at or now(),
        "problems": [f"{f.what}: {f.status}" for f in report.records if not f.ok],
    }, DNS_CACHE_SECONDS)


def remembered_dns(domain_names):
    found = cache.get_many([_DNS_CACHE_KEY.format(name) for name in domain_names])
    return sorted(found.values(), key=lambda item: item["domain"])


def counters():
    """Counters since start (this node), as {name: {label: value}}."""
    wanted = {
        "mailsuite_messages_received_total": "source",
        "mailsuite_deliveries_total": "outcome",
        "mailsuite_connections_total": "protocol",
        "mailsuite_auth_failures_total": "protocol",
        "mailsuite_spam_verdicts_total": "verdict",
    }
    numbers = {name: {} for name in wanted}
    for family in metrics.registry().collect():
        for sample in family.samples:
            if sample.name in wanted:
                key = sample.labels.get(wanted[sample.name], "")
                numbers[sample.name][key] = numbers[sample.name].get(key, 0) + sample.value
    return {name.removesuffix("_total").removeprefix("mailsuite_"): dict(sorted(v.items())) for name, v in numbers.items()}


def summary(*, domain_names=()):
    """Everything the dashboard shows: numbers and warnings, as plain data."""
    at = now()
    queue = queue_numbers(at)
    warnings = certificate_warnings(settings.MAILSUITE_TLS_CERT, at) + queue_warnings(queue)
    server = []
    try:
        server = dnsdoctor.server_findings()
    except dnsdoctor.InvalidInput as error:
        warnings.append(Warning("dns", str(error)))
    for finding in server:
        if not finding.ok:
            topic = "blocklist" if finding.what.startswith("block list") else "dns"
            warnings.append(Warning(topic, f"{finding.what}: {finding.status}. {finding.fix}"))
    checked = remembered_dns(domain_names)
    for item in checked:
        if item["problems"]:
            warnings.append(Warning("dns", f"{item['domain']}: {', '.join(item['problems'])}"))
    return {
        "at": at, "queue": queue, "counters": counters(), "server_dns": server,
        "domains_checked": checked, "warnings": warnings,
    }
