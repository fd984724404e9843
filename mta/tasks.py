"""Celery tasks of the outbound queue. They carry only a domain name: the work itself
is in the database, so a lost task delays mail by one sweep and loses nothing."""
import logging

from celery import shared_task

from mta import delivery, queue

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def deliver_domain(domain):
    delivery.deliver_domain(domain)


@shared_task(ignore_result=True)
def sweep():
    """Hand every destination with due mail to the workers (beat runs this periodically)."""
    domains = queue.due_domains()
    for domain in domains:
        deliver_domain.delay(domain)
    if domains:
        log.info("sweep: %d destinations with due mail", len(domains))
    queue.record_sweep()  # the heartbeat /readyz, the dashboard and /metrics watch


@shared_task(ignore_result=True)
def prune():
    """Daily housekeeping: old login audit rows, spent throttle rows, expunge tombstones
    older than MAILSUITE_EXPUNGED_DAYS (QRESYNC's memory), spent vacation-reply records,
    and the bytes of messages no mailbox or queue holds any more."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from accounts.actions import prune_abuse_records
    from mailstore.actions import prune_expunged, remove_unused_blobs
    from sieve.actions import prune_vacation_replies

    prune_abuse_records()
    prune_expunged(timezone.now() - timedelta(days=settings.MAILSUITE_EXPUNGED_DAYS))
    prune_vacation_replies()
    remove_unused_blobs()
