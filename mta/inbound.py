"""Taking responsibility for a message received over SMTP.

accept_message() runs after DATA, off the event loop. It returns the SMTP reply;
a 250 is returned only after every recipient's copy is committed to a mailbox or
to the outbound queue, so an answered message is never lost.
"""
import logging

from mailstore.actions import IncomingMessage, OverQuota, Recipient, deliver
from mta.queue import enqueue

log = logging.getLogger(__name__)


def accept_message(raw, *, mail_from, resolutions, client_ip, smtputf8=False, blob_name=None):
    mailboxes = {}
    external = []
    for resolution in resolutions:
        for account in resolution.accounts.values():
            mailboxes.setdefault(account.pk, Recipient(account, account.address))
        external += [address for address in resolution.external if address not in external]

    incoming = IncomingMessage(raw, name=blob_name)
    try:
        outcomes = deliver(incoming, list(mailboxes.values()), return_path=mail_from)
        delivered = [o for o in outcomes if o.message is not None]
        failed = [o for o in outcomes if o.error is not None]
        for outcome in failed:
            log.warning("delivery to %s deferred: %s", outcome.recipient.delivered_to, outcome.error)
        if not delivered and not external:
            if all(isinstance(o.error, OverQuota) for o in failed):
                return "452 4.2.2 Mailbox full"
            return "451 4.3.0 Local delivery failed; try again later"
        # Once one copy is committed the message is ours: the rest go to the queue for retry.
        retry = [o.recipient for o in failed]
        if external or retry:
            enqueue(
                incoming,
                mail_from=mail_from,
                recipients=external,
                local_retries=retry,
                smtputf8=smtputf8,
                received_from=client_ip,
            )
    finally:
        incoming.release()
    log.info(
        "accepted id=%s from=<%s> delivered=%d queued=%d size=%d",
        incoming.queue_id, mail_from, len(delivered), len(external) + len(retry), len(raw),
    )
    return f"250 2.0.0 Ok: queued as {incoming.queue_id}"
