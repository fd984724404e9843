"""Putting mail on the outbound queue.

Delivery attempts (MX lookup, SMTP client, retries, bounces) are built on these rows
by the queue workers; this module only records what must be sent, durably.
"""
from django.db import transaction

from mta.models import QueuedMessage, QueuedRecipient


def enqueue(incoming, *, mail_from, recipients, local_retries=(), smtputf8=False, received_from=None):
    """Queue `incoming` (a mailstore IncomingMessage) for external `recipients` (addresses)
    and for local mailboxes whose delivery must be retried (`local_retries`: Recipient list).

    Call inside the transaction that takes responsibility for the message, wrapped in
    forget_new_blobs_on_rollback() or incoming.atomic(). Returns the QueuedMessage.
    """
    assert transaction.get_connection().in_atomic_block, "enqueue() needs the caller's transaction"
    queued = QueuedMessage.objects.create(
        blob=incoming.save_blob(),
        mail_from=mail_from,
        smtputf8=smtputf8,
        received_from=received_from,
        queue_id=incoming.queue_id,
    )
    rows = [QueuedRecipient(message=queued, address=address) for address in recipients]
    rows += [QueuedRecipient(message=queued, address=r.delivered_to, local_account=r.account) for r in local_retries]
    QueuedRecipient.objects.bulk_create(rows)
    return queued
