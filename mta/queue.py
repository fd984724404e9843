"""The outbound queue: putting mail on it, workers claiming it, recording what happened.

The database is the queue's truth (QueuedMessage + blob + QueuedRecipient rows). Celery
tasks only say "look at domain D now"; a periodic sweep says the same for anything due,
so a task the broker loses delays mail by one sweep and loses nothing.

Implementation notes:
- A worker claims recipients with a lease (lease_owner, lease_until) in one short
  transaction, by a conditional UPDATE that only takes rows whose lease is free, so two
  workers never deliver to the same recipient; a worker that dies leaves leases that
  expire and are taken over.
- Outcomes are recorded only under the worker's own lease.
- No transaction is open during network I/O.
"""
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min, Q
from django.utils import timezone

from mailsuite.lib.addresses import AddressError, split_address
from mta.models import DeliveryAttempt, DestinationSlot, QueuedMessage, QueuedRecipient, QueueSweep

log = logging.getLogger(__name__)

# Seams for tests: the clock, and how workers are told that a domain has due mail.
now = timezone.now

State = QueuedRecipient.State
PENDING = (State.QUEUED, State.DEFERRED)
# Retry schedule (RFC 5321 §4.5.4.1: at least 30 minutes apart is usual; we start sooner
# because most temporary failures are greylisting that clears within minutes).
RETRY_DELAYS = [timedelta(minutes=m) for m in (5, 10, 20, 40, 80, 160)] + [timedelta(hours=4)]


def kick(domains):
    """Ask workers to look at these destination domains now (best effort)."""
    from mta import tasks

    for domain in domains:
        try:
            tasks.deliver_domain.delay(domain)
        except Exception:  # the broker is down: the sweep will find the mail
            log.warning("could not tell the queue workers about %s; the sweep will", domain, exc_info=True)
            return


def routing_domain(address):
    try:
        return split_address(address)[1]
    except AddressError:
        return address.rpartition("@")[2].lower()


def enqueue(
    incoming, *, mail_from, recipients, local_retries=(), smtputf8=False, received_from=None,
    envid="", ret="", notify=None, orcpt=None, srs_sender="",
):
    """Queue `incoming` (a mailstore IncomingMessage) for external `recipients` (addresses)
    and for local mailboxes whose delivery must be retried (`local_retries`: Recipient list).
    `notify`/`orcpt` map an address to its RFC 3461 parameters.

    Call inside the transaction that takes responsibility for the message, wrapped in
    forget_new_blobs_on_rollback() or incoming.atomic(). Returns the QueuedMessage.
    """
    assert transaction.get_connection().in_atomic_block, "enqueue() needs the caller's transaction"
    notify, orcpt = notify or {}, orcpt or {}
    at = now()
    queued = QueuedMessage.objects.create(
        blob=incoming.save_blob(),
        mail_from=mail_from,
        smtputf8=smtputf8,
        received_from=received_from,
        queue_id=incoming.queue_id,
        expires_at=at + timedelta(seconds=settings.MAILSUITE_QUEUE_LIFETIME),
        envid=envid,
        ret=ret,
        srs_sender=srs_sender if srs_sender != mail_from else "",
    )
    rows = [
        QueuedRecipient(
            message=queued, address=address, domain=routing_domain(address), next_attempt_at=at,
            notify=notify.get(address, ""), orcpt=orcpt.get(address, ""),
        )
        for address in recipients
    ]
    rows += [
        QueuedRecipient(message=queued, address=r.delivered_to, local_account=r.account, next_attempt_at=at)
        for r in local_retries
    ]
    QueuedRecipient.objects.bulk_create(rows)
    domains = sorted({row.domain for row in rows})
    transaction.on_commit(lambda: kick(domains))
    return queued


def due(at=None):
    """Recipients whose time has come and whom no worker holds."""
    at = at or now()
    return QueuedRecipient.objects.filter(state__in=PENDING, next_attempt_at__lte=at).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=at)
    )


def due_domains(limit=1000):
    return list(due().order_by().values_list("domain", flat=True).distinct()[:limit])


def new_owner():
    return uuid.uuid4().hex


def claim(domain, *, owner, limit=100):
    """Take a lease on up to `limit` due recipients of `domain`; returns them with their
    messages, oldest first."""
    at = now()
    until = at + timedelta(seconds=settings.MAILSUITE_QUEUE_LEASE_SECONDS)
    candidates = list(due(at).filter(domain=domain).order_by("next_attempt_at", "id").values_list("id", flat=True)[:limit])
    if not candidates:
        return []
    with transaction.atomic():
        # Conditional: a row another worker leased since we looked is not taken.
        (
            QueuedRecipient.objects.filter(id__in=candidates, state__in=PENDING)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=at))
            .update(lease_owner=owner, lease_until=until)
        )
    return list(
        QueuedRecipient.objects.select_related("message__blob", "local_account__domain")
        .filter(id__in=candidates, lease_owner=owner, lease_until=until)
        .order_by("message_id", "id")
    )


def retry_delay(attempts):
    return RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1] if attempts else RETRY_DELAYS[0]


def record(recipient, *, owner, outcome, host="", reply="", status=""):
    """Write one attempt's outcome ("delivered", "deferred" or "bounced") under our lease.

    Returns the new state, or None if the lease was lost (another worker owns it now).
    """
    at = now()
    attempts = recipient.attempts + 1
    fields = {"attempts": attempts, "last_error": "" if outcome == "delivered" else reply[:2000],
              "status": status, "remote_mta": host[:255], "lease_owner": "", "lease_until": None}
    if outcome == "delivered":
        fields.update(state=State.DELIVERED, delivered_at=at)
    elif outcome == "bounced" or (recipient.message.expires_at and at >= recipient.message.expires_at):
        fields.update(state=State.BOUNCED)
        outcome = "bounced"
    else:
        fields.update(state=State.DEFERRED, next_attempt_at=at + retry_delay(attempts))
    with transaction.atomic():
        updated = QueuedRecipient.objects.filter(pk=recipient.pk, lease_owner=owner).update(**fields)
        if not updated:
            return None
        DeliveryAttempt.objects.create(recipient=recipient, started=at, host=host[:255], outcome=outcome, reply=reply[:2000])
    for name, value in fields.items():
        setattr(recipient, name, value)
    return recipient.state


def acquire_slot(domain, *, owner):
    """One of the destination's connection slots for `owner`, or None when all are taken."""
    at = now()
    until = at + timedelta(seconds=settings.MAILSUITE_QUEUE_LEASE_SECONDS)
    for slot in range(settings.MAILSUITE_QUEUE_DESTINATION_CONCURRENCY):
        try:
            with transaction.atomic():
                DestinationSlot.objects.get_or_create(domain=domain, slot=slot)
        except IntegrityError:
            pass  # another worker created it just now
        free = DestinationSlot.objects.filter(domain=domain, slot=slot).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=at)
        )
        if free.update(owner=owner, lease_until=until):
            return slot
    return None


def renew_slot(domain, slot, *, owner):
    until = now() + timedelta(seconds=settings.MAILSUITE_QUEUE_LEASE_SECONDS)
    DestinationSlot.objects.filter(domain=domain, slot=slot, owner=owner).update(lease_until=until)


def release_slot(domain, slot, *, owner):
    DestinationSlot.objects.filter(domain=domain, slot=slot, owner=owner).update(owner="", lease_until=None)


def release(recipients, *, owner):
    """Give back leases without an attempt (e.g. the destination's concurrency limit)."""
    QueuedRecipient.objects.filter(pk__in=[r.pk for r in recipients], lease_owner=owner).update(
        lease_owner="", lease_until=None
    )


# Sweep heartbeat ---------------------------------------------------------------------
# The sweep is the only thing that comes back to deferred mail, and it runs under Celery
# beat, which can die (or never start) while the worker keeps delivering new mail. Each
# sweep stamps one shared row; readiness, the dashboard and the metrics compare it with
# the clock. Stale means: older than SWEEP_STALE_INTERVALS sweep intervals, and never less
# than SWEEP_STALE_MINIMUM (a sweep task can wait behind slow deliveries in a busy worker).
SWEEP_STALE_INTERVALS = 5
SWEEP_STALE_MINIMUM = timedelta(minutes=5)


def record_sweep(at=None):
    """Stamp the heartbeat (the sweep task calls this each time it has run)."""
    at = at or now()
    if not QueueSweep.objects.filter(pk=1).update(last_run=at):
        QueueSweep.objects.update_or_create(pk=1, defaults={"last_run": at})


def last_sweep():
    """When any node's sweep last ran, or None if none ever did."""
    return QueueSweep.objects.filter(pk=1).values_list("last_run", flat=True).first()


def sweep_stale_after():
    return max(timedelta(seconds=SWEEP_STALE_INTERVALS * settings.MAILSUITE_QUEUE_SWEEP_SECONDS), SWEEP_STALE_MINIMUM)


@dataclass(frozen=True)
class SweepStatus:
    last_run: object  # aware datetime, or None: never
    age_seconds: float | None  # None: never
    problem: str = ""  # one line for operators; empty when the sweep is fine

    @property
    def ok(self):
        return not self.problem


def _utc(moment):
    return f"{moment.astimezone(dt_timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def sweep_status(at=None):
    """Is the periodic sweep running? Stale with a heartbeat means it stopped (a sweep ran
    here before, so one is expected); without one, a fresh install is fine until mail
    waits longer than the staleness limit with no sweep to come back to it."""
    at = at or now()
    limit = sweep_stale_after()
    every = settings.MAILSUITE_QUEUE_SWEEP_SECONDS
    hint = "deferred mail is not retried: check that Celery beat runs (runqueue without --no-beat on at least one node)"
    last = last_sweep()
    if last is not None:
        age = max(0.0, (at - last).total_seconds())
        if at - last <= limit:
            return SweepStatus(last, age)
        return SweepStatus(last, age, (
            f"queue sweep has not run since {_utc(last)} ({int(age)} s ago; it runs every {every} s): {hint}"
        ))
    oldest = QueuedRecipient.objects.filter(state__in=PENDING).aggregate(at=Min("message__created"))["at"]
    if oldest is not None and at - oldest > limit:
        return SweepStatus(None, None, f"queue sweep has never run, and mail has waited since {_utc(oldest)}: {hint}")
    return SweepStatus(None, None)
