"""Taking responsibility for a message received over SMTP.

Two steps, so that many sessions share one database commit:
- prepare() parses the message, writes its bytes durably and runs the local recipients'
  Sieve scripts (sieve.delivery); it writes no database rows. accept() runs it for a
  batch's messages one after the other, their files fsynced together before the commit.
- commit() stores a batch of prepared messages in one transaction (group commit) and
  returns each one's SMTP reply. A 250 is returned only when every recipient's copy is
  committed to a mailbox or to the outbound queue, so an answered message is never
  lost. If the batch fails, each message is retried alone, so one bad message cannot
  take the others down with it.
"""
import logging
from dataclasses import dataclass, field

from django.db import DatabaseError, transaction

from mailstore.actions import (
    IncomingMessage,
    Job,
    OverQuota,
    Recipient,
    forget_new_blobs_on_rollback,
    place_messages,
)
from antispam import policy as spam_policy
from mailsuite.lib import logs
from mailstore.storage import sync_names, synced_together
from mta import forwarding
from mta.queue import enqueue
from ops import metrics
from sieve import delivery as sieve_delivery

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A message whose bytes are stored, waiting for commit() to give it a home."""

    incoming: IncomingMessage
    mail_from: str
    mailboxes: list
    external: list
    client_ip: str
    smtputf8: bool = False
    forwarded: bool = False  # some external recipients stand for local addresses (redirects, aliases)
    dsn: dict = field(default_factory=dict)  # RFC 3461 parameters: envid, ret, notify, orcpt
    reply: str = ""
    counts: dict = field(default_factory=dict)
    filtering: object = None  # sieve.delivery.Filtering: where each mailbox's copies go
    decisions: dict = field(default_factory=dict)  # account id → antispam.policy.Decision


def prepare(
    raw, *, mail_from, resolutions, client_ip, smtputf8=False, blob_name=None, dsn=None, spam_percent=None,
    junk=False, spam=None,
):
    """Parse and durably store `raw` for the recipients' resolutions; no database writes.

    `dsn` holds RFC 3461 parameters: {"envid", "ret", "notify": {rcpt: …}, "orcpt": {rcpt: …}},
    the per-recipient ones keyed by the address as given in RCPT TO. `spam_percent` (0-100)
    is the anti-spam verdict Sieve's spamtest sees; `junk` files the copies a script leaves
    in INBOX into each recipient's Junk folder instead (DMARC quarantine). `spam` is the
    antispam.policy.Assessment of a message from the MX: each local recipient gets its
    own verdict from it (X-Spam-* fields on its copy, Junk, Sieve's spamtest), and when
    every one of them rejects and nobody else is waiting, prepare() raises policy.Refused.
    """
    mailboxes, external, envelope_to = {}, [], {}
    dsn = dsn or {}
    notify, orcpt = {}, {}
    for resolution in resolutions:
        for account in resolution.accounts.values():
            mailboxes.setdefault(account.pk, Recipient(account, account.address))
            envelope_to.setdefault(account.pk, resolution.address)
        for address in resolution.external:
            if address not in external:
                external.append(address)
                # A relayed address keeps its own DSN parameters; forwarding targets inherit them.
                notify[address] = dsn.get("notify", {}).get(resolution.address, "")
                orcpt[address] = dsn.get("orcpt", {}).get(resolution.address, "")
    decisions = {}
    if spam is not None and mailboxes:
        decisions = spam_policy.decide(spam, [r.account for r in mailboxes.values()], junk=junk)
        if not external and all(d.action == "reject" for d in decisions.values()):
            raise spam_policy.Refused(spam_policy.refusal(decisions))
        spam_percent = {pk: d.spam_percent for pk, d in decisions.items()}
    incoming = IncomingMessage(raw, name=blob_name)
    try:
        # Sieve: folders, flags, rejects, redirects, vacation replies.
        filtering = sieve_delivery.filter_message(
            incoming, raw, list(mailboxes.values()), mail_from=mail_from, envelope_to=envelope_to,
            client_ip=client_ip, others=bool(external), dsn=dsn, spam_percent=spam_percent,
        )
        if junk:
            file_into_junk(filtering.placements())
        apply_verdicts(filtering.placements(), decisions)
    except BaseException:
        incoming.release()
        raise
    return Pending(
        incoming=incoming,
        mail_from=mail_from,
        mailboxes=list(mailboxes.values()),
        external=external,
        client_ip=client_ip,
        smtputf8=smtputf8,
        forwarded=any(r.external and not r.relayed for r in resolutions),
        dsn={"envid": dsn.get("envid", ""), "ret": dsn.get("ret", ""), "notify": notify, "orcpt": orcpt},
        filtering=filtering,
        decisions=decisions,
    )


def apply_verdicts(placements, decisions):
    """Each copy gets its recipient's X-Spam-Score/X-Spam-Status; spam beyond the junk
    threshold (or a reject that could not be refused) goes to Junk."""
    if not decisions:
        return
    for placement in placements:
        decision = decisions.get(placement.account.pk)
        if decision is not None:
            placement.prefix += decision.header_fields()
    file_into_junk([p for p in placements if decisions.get(p.account.pk) and decisions[p.account.pk].action in ("junk", "reject")])


def file_into_junk(placements):
    """Move the INBOX copies among `placements` to their account's \\Junk folder, where it has one."""
    from mailstore.models import Folder

    inbox = [p for p in placements if p.folder == sieve_delivery.INBOX]
    if not inbox:
        return
    junk = dict(
        Folder.objects.filter(account_id__in={p.account.pk for p in inbox}, special_use="\\Junk")
        .order_by("name").values_list("account_id", "name")
    )
    for placement in inbox:
        placement.folder = junk.get(placement.account.pk, placement.folder)


def commit(batch):
    """Store a batch of prepared messages; returns their SMTP replies in order."""
    _store_or_split(batch)
    for pending in batch:
        pending.incoming.release()
        pending.filtering.release()
        if pending.reply.startswith("250"):
            metrics.message_received(internal=pending.client_ip is None)
            log.info(
                "accepted id=%s from=<%s> delivered=%d queued=%d size=%d",
                pending.incoming.queue_id, pending.mail_from, pending.counts["delivered"],
                pending.counts["queued"], pending.incoming.stored.size,
                extra=logs.fields(queue_id=pending.incoming.queue_id, peer=pending.client_ip),
            )
    return [pending.reply for pending in batch]


def _store_or_split(batch):
    generated = [incoming for p in batch for incoming in p.filtering.generated()]
    sync_names([p.incoming.stored.name for p in batch] + [i.stored.name for i in generated])
    try:
        with forget_new_blobs_on_rollback([p.incoming for p in batch] + generated), transaction.atomic():
            _store(batch)
    except DatabaseError:
        if len(batch) == 1:
            log.exception("storing message %s failed", batch[0].incoming.queue_id)
            batch[0].reply = "451 4.3.0 Local error in processing; try again later"
            return
        log.warning("group commit of %d messages failed; storing them one by one", len(batch), exc_info=True)
        for pending in batch:
            _store_or_split([pending])


def _store(batch):
    jobs = [Job(p.incoming, p.filtering.placements()) for p in batch]
    place_messages(jobs)
    spam_policy.store_verdicts([(p.decisions, job) for p, job in zip(batch, jobs)])
    for pending, job in zip(batch, jobs):
        settled = pending.filtering.settle(job.outcomes)
        delivered, failed = len(settled.handled), settled.failed
        if not delivered and not pending.external:
            if settled.refusal:  # every recipient's script rejected it (RFC 5429 §2.1.1)
                pending.reply = settled.refusal
                continue
            quota = all(isinstance(error, OverQuota) for _, error in failed)
            pending.reply = "452 4.2.2 Mailbox full" if quota else "451 4.3.0 Local delivery failed; try again later"
            continue
        for recipient, error in failed:
            log.warning("delivery to %s deferred: %s", recipient.delivered_to, error)
        # Once one copy is stored the message is ours: the rest go to the queue for retry.
        retry = [recipient for recipient, _ in failed]
        if pending.external or retry:
            enqueue(
                pending.incoming,
                mail_from=pending.mail_from,
                recipients=pending.external,
                local_retries=retry,
                smtputf8=pending.smtputf8,
                received_from=pending.client_ip,
                # SRS, so SPF passes where a forwarded copy arrives.
                srs_sender=forwarding.rewrite_sender(pending.mail_from) if pending.forwarded else "",
                **pending.dsn,
            )
        pending.filtering.commit(settled, accepted=True)
        pending.counts = {"delivered": delivered, "queued": len(pending.external) + len(retry)}
        pending.reply = f"250 2.0.0 Ok: queued as {pending.incoming.queue_id}"


def _prepare_or_none(request):
    try:
        return prepare(**request)
    except spam_policy.Refused as refused:
        log.info("refused as spam: from=<%s> ip=%s: %s", request.get("mail_from"), request.get("client_ip"), refused)
        return str(refused)
    except Exception:
        log.exception("could not store the bytes of a message from %s", request.get("client_ip"))
        return None


def accept(requests):
    """prepare() and commit() a batch of messages given as prepare()'s keyword arguments.

    The messages are prepared one after the other and their files fsynced together just
    before the commit (mailstore.storage.synced_together): one wait for the disk per
    batch, and no threads taking turns at the interpreter. A message whose bytes cannot
    be stored (disk full) is refused for now without holding up the others.
    """
    with synced_together():
        prepared = [_prepare_or_none(request) for request in requests]
        replies = iter(commit([p for p in prepared if isinstance(p, Pending)]))
    return [
        next(replies) if isinstance(p, Pending) else p or "451 4.3.0 Local error in processing; try again later"
        for p in prepared
    ]


def accept_message(raw, **kwargs):
    """prepare() and commit() one message; returns its SMTP reply."""
    return accept([{"raw": raw, **kwargs}])[0]


def accept_internal(raw, *, mail_from, recipients):
    """Take a message this server wrote itself (a DSN, a vacation reply) for `recipients`:
    local ones are delivered, others queued. Returns the reply like accept()."""
    from accounts.errors import AccountsError, NotLocal
    from accounts.resolve import Resolution, resolve

    resolutions = []
    for address in recipients:
        try:
            resolutions.append(resolve(address))
        except NotLocal:
            resolutions.append(Resolution(address=address, external=[address]))
        except AccountsError as error:
            log.warning("cannot send a generated message to %s: %s", address, error)
    if not resolutions:
        return "550 5.1.1 no deliverable recipient"
    return accept([{"raw": raw, "mail_from": mail_from, "resolutions": resolutions, "client_ip": None}])[0]
