"""Delivery attempts: claim a destination's due recipients, route, send, record, notify.

Run by the queue workers (mta.tasks) and callable directly (tests, `manage.py queue
flush`). One call works through everything due for one destination domain, reusing
its connection from message to message; recipients of one message and domain share
one SMTP transaction.
"""
import itertools
import logging
from datetime import timedelta

from django.conf import settings

from mailsuite.lib import logs
from mailstore.actions import IncomingMessage, OverQuota, Recipient, read_blob
from mta import dsn, forwarding, inbound, queue
from mta.client import Connection, DeliveryError
from mta.headers import count_fields
from mta.routing import RouteError, route_for
from ops import metrics
from sieve import delivery as sieve_delivery

log = logging.getLogger(__name__)


def deliver_domain(domain, *, owner=None, batch=100):
    """Attempt every due recipient of `domain` ("" = local retries); returns how many.

    A remote destination gets at most MAILSUITE_QUEUE_DESTINATION_CONCURRENCY workers
    at once; when all its slots are taken this returns 0 at once, since those workers
    go on until nothing is due.
    """
    owner = owner or queue.new_owner()
    slot = None
    if domain:
        slot = queue.acquire_slot(domain, owner=owner)
        if slot is None:
            return 0
    done = 0
    connection = None
    try:
        while claimed := queue.claim(domain, owner=owner, limit=batch):
            done += len(claimed)
            if domain == "":
                _deliver_local(claimed, owner)
            else:
                queue.renew_slot(domain, slot, owner=owner)
                connection = _deliver_remote(domain, claimed, owner, connection)
            notify(claimed)
    finally:
        if connection is not None:
            connection.close()
        if slot is not None:
            queue.release_slot(domain, slot, owner=owner)
    return done


def _deliver_remote(domain, claimed, owner, connection):
    try:
        route = route_for(domain)
    except RouteError as error:
        for recipient in claimed:
            _record(recipient, owner, "bounced" if error.permanent else "deferred", reply=str(error), status=error.status)
        return connection
    unreachable = None
    for _, group in itertools.groupby(claimed, key=lambda r: r.message_id):
        recipients = list(group)
        message = recipients[0].message
        raw = read_blob(message.blob)
        if count_fields(raw, "Received") > settings.MAILSUITE_MAX_HOPS:
            for recipient in recipients:
                _record(recipient, owner, "bounced", reply="too many hops: mail loop", status="5.4.6")
            continue
        if connection is None and unreachable is None:
            try:
                connection = Connection.open(route)
            except DeliveryError as error:
                unreachable = error  # no host answered: the rest of the batch waits too
        if unreachable is not None:
            for recipient in recipients:
                _record(recipient, owner, "bounced" if unreachable.permanent else "deferred",
                        reply=str(unreachable), status=unreachable.status)
            continue
        try:
            results = connection.send(
                mail_from=message.srs_sender or message.mail_from,
                recipients=[(r.address, r.notify, r.orcpt) for r in recipients],
                data=forwarding.outgoing_bytes(raw, srs_sender=message.srs_sender),
                smtputf8=message.smtputf8 or not all(r.address.isascii() for r in recipients),
                envid=message.envid,
                ret=message.ret,
            )
        except DeliveryError as error:
            for recipient in recipients:
                _record(recipient, owner, "bounced" if error.permanent else "deferred",
                        host=connection.host_label, reply=str(error), status=error.status)
            if not error.permanent:  # the connection may be broken: the next message gets a new one
                connection.close()
                connection = None
            continue
        for recipient in recipients:
            reply = results[recipient.address]
            _record(recipient, owner, reply.outcome, host=connection.host_label, reply=str(reply), status=reply.status)
            # RFC 3461 §6.2.2: a next hop with DSN reports success itself; without, we say "relayed".
            recipient.success_action = None if connection.supports_dsn else dsn.RELAYED
    return connection


def _deliver_local(claimed, owner):
    for recipient in claimed:
        message = recipient.message
        incoming = IncomingMessage.from_blob(message.blob)
        # Through the recipient's Sieve scripts; a reject there bounces (RFC 5429 §2.1).
        outcome = sieve_delivery.deliver(
            incoming, read_blob(message.blob), Recipient(recipient.local_account, recipient.address),
            return_path=message.mail_from,
        )
        if outcome.rejected is not None:
            _record(recipient, owner, "bounced", host="local", reply=f"550 5.7.1 {outcome.rejected}", status="5.7.1")
        elif outcome.error is None:
            _record(recipient, owner, "delivered", host="local", reply="delivered to the mailbox", status="2.0.0")
            recipient.success_action = dsn.DELIVERED
        else:
            status = "4.2.2" if isinstance(outcome.error, OverQuota) else "4.3.0"
            _record(recipient, owner, "deferred", host="local", reply=str(outcome.error), status=status)


def _record(recipient, owner, outcome, **details):
    state = queue.record(recipient, owner=owner, outcome=outcome, **details)
    if state is None:
        log.warning("lost the lease on %s (id %s) before recording", recipient.address, recipient.pk,
                    extra=logs.fields(queue_id=recipient.message.queue_id, to=recipient.address))
    else:
        log.info(
            "%s to=<%s> id=%s %s", state, recipient.address, recipient.message.queue_id, details.get("reply", ""),
            extra=logs.fields(
                queue_id=recipient.message.queue_id, protocol="local" if not recipient.domain else "smtp-out",
                peer=details.get("host") or None, to=recipient.address, status=details.get("status") or None,
            ),
        )
        metrics.delivery(str(state), local=not recipient.domain, status=details.get("status", ""))


def notify(recipients):
    """Send the DSNs these recipients' new states call for: a bounce for failures, a
    notice for mail delayed longer than MAILSUITE_QUEUE_DELAY_WARNING."""
    at = queue.now()
    warn_after = settings.MAILSUITE_QUEUE_DELAY_WARNING
    by_message = {}
    for r in recipients:
        if r.state == queue.State.BOUNCED and not r.bounce_notified:
            by_message.setdefault((r.message_id, dsn.FAILED), []).append(r)
        elif r.state == queue.State.DELIVERED and getattr(r, "success_action", None):
            by_message.setdefault((r.message_id, r.success_action), []).append(r)
        elif (
            r.state == queue.State.DEFERRED and warn_after and not r.delay_notified
            and at - r.message.created >= timedelta(seconds=warn_after)
        ):
            by_message.setdefault((r.message_id, dsn.DELAYED), []).append(r)
    for (_, action), group in by_message.items():
        message = group[0].message
        wanted = [r for r in group if dsn.wants(r, action)]
        if message.mail_from and wanted:
            report = dsn.build(message, wanted, action=action, original=read_blob(message.blob), now=at)
            reply = inbound.accept_internal(report, mail_from="", recipients=[message.mail_from])
            if not reply.startswith("250"):
                log.error("could not send a %s DSN for %s to <%s>: %s", action, message.queue_id, message.mail_from, reply)
                continue
        flag = {dsn.FAILED: "bounce_notified", dsn.DELAYED: "delay_notified"}.get(action)
        if flag:
            queue.QueuedRecipient.objects.filter(pk__in=[r.pk for r in group]).update(**{flag: True})
