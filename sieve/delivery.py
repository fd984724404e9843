"""Running the recipients' Sieve scripts at delivery, and carrying out what they decide.

The hook has two callers, one per way a local copy is delivered:

- mta.inbound, for mail received over SMTP (synchronous: the client waits):
    filter_message()        in prepare(), before the commit transaction;
    Filtering.placements()  what place_messages() stores;
    Filtering.settle()      after place_messages(), inside the transaction: which
                            recipients were handled, failed, or rejected; a message
                            every recipient rejected is refused "550 5.7.1" at SMTP time
                            (RFC 5429 §2.1.1);
    Filtering.commit()      inside the transaction: redirects, vacation replies and the
                            rejection report go on the outbound queue.
- mta.delivery, for local deliveries from the queue (asynchronous): deliver(), where a
  reject becomes the queue's bounce (an RFC 3464 DSN by mta.dsn).

Implementation notes
--------------------
- A recipient's scripts: the operator's "before" global script, the account's active
  script, the "after" global script, run as one execution (a stop in one ends all;
  RFC 5228 §3.3). No script at all costs one query for the batch.
- A script that cannot be compiled or fails while running, or an action that cannot be
  carried out, never loses the message: the recipient gets it in INBOX, and the log
  says why (RFC 5228 §2.10.6). So do redirects refused for a loop, for the sending
  limits (accounts.limits: redirects and vacation replies count as mail the account
  sends) or because no target can be reached.
- Everything that writes bytes (the redirected copy with its Delivered-To, the vacation
  reply, the rejection report) or checks sending limits happens here, before the
  commit transaction; inside it there are only rows (enqueue, the vacation record).
- Redirect loops: a message that already carries "Delivered-To: <the account>" came
  back through a redirect and is kept instead (the copy we send carries that field;
  Postfix's local(8) uses the same test); a redirect to the account itself is dropped;
  at most interpreter.MAX_REDIRECTS per execution; MAILSUITE_MAX_HOPS ends any loop.
- Vacation replies follow sieve.vacation's rules, go from <> (RFC 3834 §3.3), and are
  sent once per sender and handle per :days: the VacationReply row is checked before
  and claimed inside the commit transaction, so concurrent deliveries send one.
- Spam scores (spamtest, RFC 5235): the caller passes `spam_percent` (0-100, None when
  the message was not scored; {account id: percent} when each recipient has its own).
  The anti-spam filter computes it where it scores the message; nothing is read from
  the message's own header fields, which a sender could forge.
"""
from __future__ import annotations

import logging
import types
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.errors import AccountsError, NotLocal, SendLimitExceeded
from accounts.limits import check_and_record_send
from accounts.resolve import resolve
from mailstore.actions import (
    FolderExists,
    IncomingMessage,
    InvalidFolderName,
    Job,
    MailstoreError,
    OverQuota,
    Placement,
    Recipient,
    create_folder,
    forget_new_blobs_on_rollback,
    normalise_folder_name,
    place_messages,
    trace_prefix,
    validate_folder_name,
)
from mailstore.models import Folder
from mailstore.storage import sync_names
from sieve import actions, vacation
from sieve.compiler import compile_script
from sieve.interpreter import Environment, FileInto, Redirect, Reject, SieveRuntimeError, Vacation, run_all
from sieve.message import MessageView
from sieve.models import GlobalScript, SieveScript
from sieve.parser import ParseError

log = logging.getLogger(__name__)

INBOX = "INBOX"
MAX_REASON = 400  # characters of a reject reason in an SMTP reply


@dataclass
class Outgoing:
    """A message a script makes us send, its bytes already stored."""

    incoming: IncomingMessage
    external: list
    local: list  # Recipients


@dataclass
class Decision:
    """What one local recipient's scripts decided."""

    recipient: Recipient
    envelope_to: str
    placements: list = field(default_factory=list)
    reject: str | None = None
    redirect: Outgoing | None = None
    vacation: Outgoing | None = None
    vacation_key: tuple | None = None  # (sender, handle, days)


@dataclass
class Settled:
    handled: list  # Decisions whose copies are stored (or who asked for none), not rejected
    rejected: list  # Decisions that rejected the message
    failed: list  # (Recipient, error): no copy could be stored; to retry
    refusal: str | None = None  # the SMTP reply when every recipient rejected


class Filtering:
    """The decisions for one message's local recipients (see the module docstring)."""

    def __init__(self, decisions, *, mail_from, client_ip, report=None):
        self.decisions = decisions
        self.mail_from = mail_from
        self.client_ip = client_ip
        self.report = report  # Outgoing: the rejection report, when one may be needed

    def placements(self):
        return [p for d in self.decisions for p in d.placements]

    def generated(self):
        """The messages this filtering made, to make durable, forget on rollback, release."""
        made = [o.incoming for d in self.decisions for o in (d.redirect, d.vacation) if o is not None]
        return made + ([self.report.incoming] if self.report else [])

    def settle(self, outcomes):
        """Sort the recipients by what place_messages() did with their copies."""
        outcomes = iter(outcomes)
        handled, rejected, failed = [], [], []
        for decision in self.decisions:
            results = [next(outcomes) for _ in decision.placements]
            if decision.reject is not None:
                rejected.append(decision)
            elif results and not any(o.message is not None for o in results):
                failed.append((decision.recipient, results[0].error))
            else:
                for outcome in results:
                    if outcome.error is not None:
                        log.warning("sieve copy for %s into %s not stored: %s",
                                    decision.recipient.delivered_to, outcome.recipient.folder, outcome.error)
                handled.append(decision)
        refusal = None
        if rejected and not handled and not failed:
            refusal = f"550 5.7.1 {_reply_text(rejected[0].reject)}"
        return Settled(handled, rejected, failed, refusal)

    def commit(self, settled, *, accepted):
        """Queue what the handled recipients' scripts send; inside the caller's transaction.
        `accepted`: the message is accepted (so a rejection report is due)."""
        for decision in settled.handled:
            if decision.redirect is not None:
                _enqueue(decision.redirect, mail_from=self.mail_from, client_ip=self.client_ip, forwarded=True)
            if decision.vacation is not None:
                sender, handle, days = decision.vacation_key
                if actions.record_vacation_reply(decision.recipient.account.pk, sender, handle, days):
                    _enqueue(decision.vacation, mail_from="", client_ip=None)
                    log.info("vacation reply queued account=%s to=<%s>", decision.recipient.account.address, sender)
        if accepted and settled.rejected and self.report is not None:
            _enqueue(self.report, mail_from="", client_ip=None)

    def release(self):
        for incoming in self.generated():
            incoming.release()


def _enqueue(outgoing, *, mail_from, client_ip, forwarded=False):
    from mta import forwarding
    from mta.queue import enqueue

    enqueue(
        outgoing.incoming,
        mail_from=mail_from,
        recipients=outgoing.external,
        local_retries=outgoing.local,
        received_from=client_ip,
        srs_sender=forwarding.rewrite_sender(mail_from) if forwarded and outgoing.external else "",
    )


def _reply_text(reason):
    """A reject reason fit for one SMTP reply line: printable ASCII, bounded."""
    text = " ".join(reason.split())
    text = "".join(c if " " <= c <= "~" else "?" for c in text)[:MAX_REASON]
    return text or "Message rejected by the recipient's filter"


# --- Deciding ---------------------------------------------------------------------------------

_compiled = {}


def _program(text):
    program = _compiled.get(text)
    if program is None:
        program = compile_script(text)
        if len(_compiled) > 512:
            _compiled.clear()
        _compiled[text] = program
    return program


# One statement for both kinds: this runs for every message delivered, and the ORM's
# compiling of two queries cost several times their execution. Global rows have no account.
_SCRIPTS_SQL = (
    f"SELECT account_id, name, text FROM {SieveScript._meta.db_table} WHERE active AND account_id IN ({{ids}}) "
    f"UNION ALL SELECT NULL, position, text FROM {GlobalScript._meta.db_table} WHERE position <> ''"
)


def _scripts_for(account_ids):
    """{account id: (name, text)} of the active scripts, and the global (before, after) texts."""
    with connection.cursor() as cursor:
        placeholders = ", ".join(["%s"] * len(account_ids)) or "NULL"
        cursor.execute(_SCRIPTS_SQL.format(ids=placeholders), list(account_ids))
        rows = cursor.fetchall()
    active = {account_id: (name, text) for account_id, name, text in rows if account_id is not None}
    around = {position: text for account_id, position, text in rows if account_id is None}
    return active, around.get(GlobalScript.Position.BEFORE), around.get(GlobalScript.Position.AFTER)


def filter_message(
    incoming, raw, recipients, *, mail_from, envelope_to=None, client_ip=None, received_at=None,
    synchronous=True, others=False, spam_percent=None, dsn=None, now=None,
):
    """Run the scripts of `recipients` (mailstore Recipients) on a message.

    `envelope_to` maps an account id to the address RCPT TO named (for envelope "to"
    and subaddress tests); `others`: the message also has recipients elsewhere, so a
    rejection cannot refuse it at SMTP time; `dsn` holds the RFC 3461 parameters as
    mta.inbound.prepare() takes them. Returns a Filtering.
    """
    envelope_to = envelope_to or {}
    if not recipients:
        return Filtering([], mail_from=mail_from, client_ip=client_ip)
    active, before, after = _scripts_for(sorted({r.account.pk for r in recipients}))
    view = None
    decisions = []
    for recipient in recipients:
        rcpt = envelope_to.get(recipient.account.pk, recipient.delivered_to)
        script = active.get(recipient.account.pk)
        if script is None and before is None and after is None:
            decisions.append(_plain(recipient, rcpt, mail_from, received_at))
            continue
        view = view or MessageView(raw)
        decisions.append(
            _decide(recipient, rcpt, view, raw, script, before, after, mail_from=mail_from,
                    received_at=received_at, now=now or timezone.now(),
                    spam_percent=spam_percent.get(recipient.account.pk) if isinstance(spam_percent, dict) else spam_percent)
        )
    filtering = Filtering(decisions, mail_from=mail_from, client_ip=client_ip)
    rejected = [d for d in decisions if d.reject is not None]
    if synchronous and rejected and mail_from and (others or len(rejected) < len(decisions)):
        # Not every recipient refuses it, so SMTP cannot: the sender gets a report instead.
        filtering.report = _rejection_report(raw, rejected, mail_from=mail_from, dsn=dsn or {}, now=now)
    return filtering


def _plain(recipient, rcpt, mail_from, received_at, flags=()):
    placement = Placement(
        recipient.account, INBOX, trace_prefix(mail_from, recipient.delivered_to), flags=flags, internaldate=received_at
    )
    return Decision(recipient, rcpt, [placement])


def _decide(recipient, rcpt, view, raw, script, before, after, *, mail_from, received_at, spam_percent, now):
    account = recipient.account
    try:
        programs = []
        if before is not None:
            programs.append((_program(before), "before", "global"))
        if script is not None:
            programs.append((_program(script[1]), script[0], "personal"))
        if after is not None:
            programs.append((_program(after), "after", "global"))
        environment = Environment(
            message=view,
            mail_from=mail_from,
            rcpt_to=rcpt,
            now=now,
            spam_percent=spam_percent,
            subaddress_separator=settings.MAILSUITE_SUBADDRESS_SEPARATOR,
            mailbox_exists=lambda name: _folder_exists(account, name),
            load_script=lambda location, name: _load_script(account, location, name),
        )
        result = run_all(programs, environment)
    except (ParseError, SieveRuntimeError) as error:
        log.warning("sieve script failed account=%s: %s; delivering to INBOX", account.address, error)
        return _plain(recipient, rcpt, mail_from, received_at)
    except Exception:
        log.exception("sieve script crashed account=%s; delivering to INBOX", account.address)
        return _plain(recipient, rcpt, mail_from, received_at)
    try:
        return _carry_out(result, recipient, rcpt, view, raw, mail_from=mail_from, received_at=received_at, now=now)
    except Exception:
        log.exception("sieve actions failed account=%s; delivering to INBOX", account.address)
        return _plain(recipient, rcpt, mail_from, received_at)


def _folder_exists(account, name):
    return Folder.objects.filter(account=account, name=normalise_folder_name(name)).exists()


def _load_script(account, location, name):
    if location == "global":
        return GlobalScript.objects.filter(name=name).values_list("text", flat=True).first()
    return SieveScript.objects.filter(account=account, name=name).values_list("text", flat=True).first()


def _carry_out(result, recipient, rcpt, view, raw, *, mail_from, received_at, now):
    account = recipient.account
    decision = Decision(recipient, rcpt)
    [reject] = result.of(Reject) or [None]
    if reject is not None:
        decision.reject = reject.reason
        log.info("sieve reject account=%s from=<%s>", account.address, mail_from)
        return decision
    deliveries = result.deliveries(INBOX)
    redirects = result.of(Redirect)
    keep_anyway = False
    if redirects:
        decision.redirect, refusal = _redirect(account, recipient, view, raw, redirects, mail_from=mail_from)
        if refusal:
            log.warning("sieve redirect not done account=%s: %s; keeping the message", account.address, refusal)
            keep_anyway = True
    [plan] = result.of(Vacation) or [None]
    if plan is not None:
        _vacation(decision, plan, account, rcpt, view, mail_from=mail_from, now=now)
    if keep_anyway and not any(folder == INBOX for folder, _ in deliveries):
        deliveries.append((INBOX, result.flags))
    creates = {a.mailbox for a in result.of(FileInto) if a.create}
    prefix = trace_prefix(mail_from, recipient.delivered_to)
    for folder, flags in _usable_folders(account, deliveries, creates):
        decision.placements.append(Placement(account, folder, prefix, flags=flags, internaldate=received_at))
    return decision


def _usable_folders(account, deliveries, creates):
    """The deliveries with each folder that does not exist (and may not be created) replaced
    by INBOX (RFC 5228 §4.1 leaves the choice; RFC 5490 §3.2 :create makes it)."""
    wanted = {}
    for folder, flags in deliveries:
        name = folder
        try:
            validate_folder_name(folder)
            name = normalise_folder_name(folder)
        except InvalidFolderName as error:
            log.warning("sieve fileinto %r account=%s: %s; using INBOX", folder, account.address, error)
            name = INBOX
        wanted.setdefault(name, []).append((folder, flags))
    existing = set(Folder.objects.filter(account=account, name__in=list(wanted)).values_list("name", flat=True))
    usable = {}
    for name, asked in wanted.items():
        if name not in existing:
            if any(folder in creates for folder, _ in asked):
                try:
                    create_folder(account, name)
                except FolderExists:
                    pass
                except MailstoreError as error:
                    log.warning("sieve could not create %r account=%s: %s; using INBOX", name, account.address, error)
                    name = INBOX
            else:
                log.info("sieve fileinto %r account=%s: no such folder; using INBOX", name, account.address)
                name = INBOX
        flags = usable.setdefault(name, ())
        for _, more in asked:
            folded = {f.lower() for f in flags}
            flags += tuple(f for f in more if f.lower() not in folded)
        usable[name] = flags
    return list(usable.items())


def _route(address, *, skip_account=None):
    """(external addresses, local Recipients) that `address` reaches; skips `skip_account`."""
    try:
        resolution = resolve(address)
    except NotLocal:
        return [address], []
    except (AccountsError, ValueError) as error:
        log.warning("sieve cannot send to %s: %s", address, error)
        return [], []
    local = [Recipient(a, address) for a in resolution.accounts.values() if a.pk != skip_account]
    return list(resolution.external), local


def _redirect(account, recipient, view, raw, redirects, *, mail_from):
    """(Outgoing or None, why not or None) for the script's redirects (RFC 5228 §4.2)."""
    own = account.address.lower()
    if any(value.strip().strip("<>").lower() == own for value in view.values("delivered-to")):
        return None, "the message was delivered here before (a redirect loop)"
    external, local = [], []
    for redirect in redirects:
        more_external, more_local = _route(redirect.address, skip_account=account.pk)
        external += [a for a in more_external if a not in external]
        local += [r for r in more_local if all(r.account.pk != l.account.pk for l in local)]
    if not external and not local:
        return None, "no redirect target can be reached"
    try:
        check_and_record_send(account, len(external) + len(local))
    except SendLimitExceeded as error:
        return None, str(error)
    copy = IncomingMessage(f"Delivered-To: {account.address}\r\n".encode("utf-8") + raw)
    log.info("sieve redirect account=%s to=%s", account.address, ",".join([*external, *(r.delivered_to for r in local)]))
    return Outgoing(copy, external, local), None


def _vacation(decision, plan, account, rcpt, view, *, mail_from, now):
    own = [account.address, rcpt]
    why_not = vacation.refusal(view, mail_from=mail_from, own_addresses=own, vacation_addresses=plan.addresses)
    if why_not:
        log.info("sieve vacation not sent account=%s from=<%s>: %s", account.address, mail_from, why_not)
        return
    days = vacation.clamp_days(plan.days)
    if actions.vacation_recently_sent(account.pk, mail_from, plan.handle, days, now):
        return
    external, local = _route(mail_from)
    if not external and not local:
        return
    try:
        check_and_record_send(account, 1)
    except SendLimitExceeded as error:
        log.warning("sieve vacation not sent account=%s: %s", account.address, error)
        return
    reply = vacation.build_reply(
        view, plan, to=mail_from, from_address=account.address, hostname=settings.MAILSUITE_HOSTNAME, now=now
    )
    decision.vacation = Outgoing(IncomingMessage(reply), external, local)
    decision.vacation_key = (mail_from, plan.handle, days)


def _rejection_report(raw, rejected, *, mail_from, dsn, now):
    """RFC 5429 §2.1.1: when SMTP cannot refuse the message, a DSN (RFC 3464, by mta.dsn)
    tells the sender which recipients rejected it; None if none of them wants one."""
    from mta import dsn as dsn_module
    from mta.models import QueuedMessage

    now = now or timezone.now()
    notify, orcpt = dsn.get("notify", {}), dsn.get("orcpt", {})
    failed = []
    for decision in rejected:
        address = decision.envelope_to
        entry = types.SimpleNamespace(
            address=address, notify=notify.get(address, ""), orcpt=orcpt.get(address, ""),
            last_error=f"550 5.7.1 {_reply_text(decision.reject)}", status="5.7.1", remote_mta="",
        )
        if dsn_module.wants(entry, dsn_module.FAILED):
            failed.append(entry)
    if not failed:
        return None
    queued = types.SimpleNamespace(
        mail_from=mail_from, envid=dsn.get("envid", ""), ret=dsn.get("ret", ""), created=now,
        expires_at=None, Return=QueuedMessage.Return,
    )
    report = dsn_module.build(queued, failed, action=dsn_module.FAILED, original=raw, now=now)
    external, local = _route(mail_from)
    if not external and not local:
        return None
    return Outgoing(IncomingMessage(report), external, local)


# --- The queue's local deliveries -------------------------------------------------------------


@dataclass
class LocalOutcome:
    error: MailstoreError | None = None  # the copy could not be stored: retry
    rejected: str | None = None  # the script rejected the message: bounce with this reason


def deliver(incoming, raw, recipient, *, return_path):
    """Deliver a queued message to one local recipient through its scripts; the caller
    keeps `incoming` (and releases it). A reject is returned for the queue to bounce."""
    filtering = filter_message(
        incoming, raw, [recipient], mail_from=return_path,
        envelope_to={recipient.account.pk: recipient.delivered_to}, synchronous=False,
    )
    made = filtering.generated()
    try:
        sync_names([i.stored.name for i in made])
        job = Job(incoming, filtering.placements())
        with forget_new_blobs_on_rollback(made), incoming.atomic():
            place_messages([job])
            settled = filtering.settle(job.outcomes)
            if not settled.failed:  # else nothing was stored, and the effects wait for the retry
                filtering.commit(settled, accepted=True)
    finally:
        filtering.release()
    if settled.failed:
        return LocalOutcome(error=settled.failed[0][1] or OverQuota("delivery failed"))
    if settled.rejected:
        return LocalOutcome(rejected=_reply_text(settled.rejected[0].reject))
    return LocalOutcome()

