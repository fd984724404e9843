"""Per-account sending limits: messages per hour and recipients per day.

The SMTP submission server calls check_and_record_send() at the end of DATA, before
the message is queued; a refusal there is 451 4.7.1 and the operator gets an alert.

Implementation notes:
- Limits: the account's own value, else its domain's, else the server's
  (MAILSUITE_SEND_MESSAGES_PER_HOUR, MAILSUITE_SEND_RECIPIENTS_PER_DAY). 0 is no limit.
- Windows are sliding and counted in slices: messages in 5-minute slices, recipients
  in 1-hour slices, kept in the account's one SendUsage row. Every slice that overlaps
  the last hour (day) counts, so no 60 minutes (24 hours) ever hold more than the
  limit; the price is that a sender at the limit may wait up to one slice longer than
  strictly needed. Fixed buckets would allow twice the limit across a boundary.
- Check and record are one transaction holding the SendUsage row's lock (SELECT ...
  FOR UPDATE on PostgreSQL; SQLite transactions here are exclusive), so concurrent
  sends of one account are counted one after the other and none is lost. The lock is
  not the Account row's, which deliveries update for the quota.
- A refusal writes or extends the alert of that account and limit; an alert covers
  one window (an hour, a day) from its first refusal, so a client retrying a refused
  message does not make a new alert each time.
"""
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.errors import SendLimitExceeded
from accounts.models import SendLimitAlert, SendUsage

log = logging.getLogger(__name__)

# The clock: tests replace it (accounts.limits.now = ...).
now = timezone.now


@dataclass(frozen=True)
class Window:
    name: str  # the limit's name, as on Account, Domain and SendLimitAlert
    field: str  # SendUsage's JSON field holding this window's slices
    length: int  # seconds
    slice: int  # seconds


MESSAGES = Window(SendLimitAlert.MESSAGES_PER_HOUR, "messages", 3600, 300)
RECIPIENTS = Window(SendLimitAlert.RECIPIENTS_PER_DAY, "recipients", 86400, 3600)


@dataclass(frozen=True)
class SendLimits:
    messages_per_hour: int  # 0: no limit
    recipients_per_day: int  # 0: no limit


def limits_for(account):
    """The limits that apply to `account` (its domain must be loaded or loadable)."""

    def pick(name, server_default):
        for source in (account, account.domain):
            value = getattr(source, name)
            if value is not None:
                return value
        return server_default

    return SendLimits(
        messages_per_hour=pick("messages_per_hour", settings.MAILSUITE_SEND_MESSAGES_PER_HOUR),
        recipients_per_day=pick("recipients_per_day", settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY),
    )


def _current(slices, window, at):
    """`slices` without those that no longer overlap the window ending at `at`."""
    oldest = at.timestamp() - window.length - window.slice
    return {start: count for start, count in slices.items() if int(start) > oldest}


def _slice_start(window, at):
    seconds = int(at.timestamp())
    return str(seconds - seconds % window.slice)


@dataclass(frozen=True)
class Usage:
    messages_last_hour: int
    recipients_last_day: int


def usage_for(account, at=None):
    """How much `account` has sent in its current windows (no lock; for display)."""
    at = at or now()
    usage = SendUsage.objects.filter(account_id=account.pk).first()
    if usage is None:
        return Usage(0, 0)
    return Usage(
        sum(_current(usage.messages, MESSAGES, at).values()),
        sum(_current(usage.recipients, RECIPIENTS, at).values()),
    )


def _locked_usage(account_id):
    """The account's SendUsage row, locked, with the account and domain read fresh."""
    rows = SendUsage.objects.select_related("account__domain").select_for_update(of=("self",))
    usage = rows.filter(account_id=account_id).first()
    if usage is None:
        SendUsage.objects.bulk_create([SendUsage(account_id=account_id)], ignore_conflicts=True)
        usage = rows.get(account_id=account_id)
    return usage


def check_and_record_send(account, recipient_count):
    """Count one message to `recipient_count` recipients against the account's limits.

    Raises SendLimitExceeded (and records an alert) if either limit would be exceeded;
    the message is then not counted. Runs in its own transaction: call it outside
    any transaction that has locked other rows, and before queueing the message.
    """
    if recipient_count < 0:
        raise ValueError("recipient_count cannot be negative")
    at = now()
    with transaction.atomic():
        usage = _locked_usage(account.pk)
        rules = limits_for(usage.account)
        messages = _current(usage.messages, MESSAGES, at)
        recipients = _current(usage.recipients, RECIPIENTS, at)
        refusal = _refusal(rules, sum(messages.values()), sum(recipients.values()), recipient_count)
        if refusal is None:
            _add(messages, MESSAGES, at, 1)
            _add(recipients, RECIPIENTS, at, recipient_count)
            usage.messages, usage.recipients, usage.last_sent = messages, recipients, at
            usage.save(update_fields=["messages", "recipients", "last_sent"])
        else:
            _alert(usage.account, refusal, at)
    if refusal is not None:
        raise refusal


def _refusal(rules, messages_sent, recipients_sent, recipient_count):
    if rules.messages_per_hour and messages_sent + 1 > rules.messages_per_hour:
        return SendLimitExceeded(MESSAGES.name, rules.messages_per_hour, messages_sent)
    if rules.recipients_per_day and recipients_sent + recipient_count > rules.recipients_per_day:
        return SendLimitExceeded(RECIPIENTS.name, rules.recipients_per_day, recipients_sent)
    return None


def _add(slices, window, at, count):
    if count:
        start = _slice_start(window, at)
        slices[start] = slices.get(start, 0) + count


def _alert(account, refusal, at):
    window = MESSAGES if refusal.limit_name == MESSAGES.name else RECIPIENTS
    extended = SendLimitAlert.objects.filter(
        account=account, limit_name=refusal.limit_name, created__gt=at - timedelta(seconds=window.length)
    ).update(refused=F("refused") + 1, last_refused=at)
    if not extended:
        SendLimitAlert.objects.create(
            account=account, limit_name=refusal.limit_name, limit=refusal.limit, created=at, last_refused=at
        )
        log.warning(
            "sending limit reached account=%s limit=%s max=%s used=%s",
            account.address, refusal.limit_name, refusal.limit, refusal.used,
        )
