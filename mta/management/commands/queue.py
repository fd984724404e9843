"""manage.py queue list|show|retry|hold|release|bounce|flush|delete: the outbound queue.

`list` prints one line per recipient (queue id, age, state, attempts, next attempt,
sender → recipient, last error) in aligned columns and nothing else; `show` prints a
message with every recipient and every attempt. Changes go through mta.actions; a
QUEUE_ID that matches nothing, or a change that applies to no recipient, is an error
(exit status 1, one line on stderr).
"""
import re
from datetime import timedelta

from django.core.management.base import CommandError
from django.db.models import Q

from accounts.management.cli import SubcommandCommand
from mailsuite.lib.addresses import AddressError, normalize_domain
from mailsuite.lib.sizes import format_size
from mta import actions, queue
from mta.models import DeliveryAttempt, QueuedMessage, QueuedRecipient

State = QueuedRecipient.State
STATE_CHOICES = {
    "queued": (State.QUEUED,),
    "deferred": (State.DEFERRED,),
    "held": (State.HELD,),
    "delivered": (State.DELIVERED,),
    "bounced": (State.BOUNCED,),
    "pending": actions.PENDING,
    "active": actions.UNFINISHED,
    "all": tuple(State.values),
}
DEFAULT_BOUNCE_REASON = "delivery cancelled by the mail administrator"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration_argument(text):
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise CommandError(f"invalid duration {text!r}: write a number and a unit, e.g. 30m, 2h, 3d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def show_duration(delta):
    """Compact and sortable by eye: 45s, 12m, 3h05m, 2d04h."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        return f"{hours}h{minutes % 60:02}m"
    return f"{days}d{hours % 24:02}h"


def show_next_attempt(recipient, now):
    if recipient.state not in actions.PENDING:
        return "-"
    if recipient.lease_until and recipient.lease_until > now:
        return "trying"
    if recipient.next_attempt_at <= now:
        return "now"
    return "in " + show_duration(recipient.next_attempt_at - now)


def one_line(text, limit=None):
    line = " ".join(text.split())
    return line[: limit - 1] + "…" if limit and len(line) > limit else line


def show_time(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"


class Command(SubcommandCommand):
    help = "List, inspect, retry, hold, bounce and delete outbound mail."
    takes_as = True
    superadmin_only = "see or change the outbound queue"

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        listing = subcommands.add_parser(
            "list",
            help="one line per recipient: id, age, state, attempts, next attempt, sender → recipient, last error",
        )
        listing.add_argument(
            "--state", choices=sorted(STATE_CHOICES), default="active",
            help="pending = queued or deferred; active (the default) = also held; all = also finished",
        )
        listing.add_argument("--domain", help="only recipients in this domain")
        listing.add_argument("--sender", help="only mail from this address (@domain: from that domain; <> bounces)")
        listing.add_argument("--older-than", type=duration_argument, metavar="AGE", help="e.g. 30m, 2h, 3d")

        show = subcommands.add_parser("show", help="a message with its recipients and every delivery attempt")
        show.add_argument("queue_id", metavar="QUEUE_ID")

        for action, text in (
            ("retry", "make queued and deferred recipients due now"),
            ("hold", "stop delivering until release"),
            ("release", "put held recipients back on the queue, due now"),
        ):
            sub = subcommands.add_parser(action, help=text)
            which = sub.add_mutually_exclusive_group(required=True)
            which.add_argument("queue_ids", nargs="*", default=[], metavar="QUEUE_ID")
            which.add_argument("--all", dest="every", action="store_true", help="every message in the queue")
            sub.add_argument("--recipient", metavar="ADDRESS", help="only this recipient of the message(s)")

        bounce = subcommands.add_parser("bounce", help="give up now and send the sender a failure notice")
        bounce.add_argument("queue_ids", nargs="+", metavar="QUEUE_ID")
        bounce.add_argument("--recipient", metavar="ADDRESS", help="only this recipient of the message(s)")
        bounce.add_argument(
            "--reason", default=DEFAULT_BOUNCE_REASON, help=f"shown to the sender (default: {DEFAULT_BOUNCE_REASON})"
        )

        flush = subcommands.add_parser(
            "flush", help="try now, in this process, everything pending (deferred included) for DOMAIN or for all"
        )
        flush.add_argument("domain", nargs="?", metavar="DOMAIN")

        delete = subcommands.add_parser("delete", help="remove messages from the queue; nobody is told")
        delete.add_argument("queue_ids", nargs="+", metavar="QUEUE_ID")

    # Looking

    def handle_list(self, *, state, domain, sender, older_than, **options):
        now = queue.now()
        rows = (
            QueuedRecipient.objects.select_related("message")
            .filter(state__in=STATE_CHOICES[state])
            .order_by("message__created", "message_id", "pk")
        )
        if domain is not None:
            try:
                rows = rows.filter(domain=normalize_domain(domain))
            except AddressError as error:
                raise CommandError(f"--domain: {error}") from None
        if sender is not None:
            rows = rows.filter(_sender_filter(sender))
        if older_than is not None:
            rows = rows.filter(message__created__lte=now - older_than)
        self.write_table(
            [
                r.message.queue_id,
                show_duration(now - r.message.created),
                r.state,
                r.attempts,
                show_next_attempt(r, now),
                f"<{r.message.mail_from}> → <{r.address}>",
                one_line(r.last_error, 200),
            ]
            for r in rows.iterator(chunk_size=2000)
        )

    def handle_show(self, *, queue_id, **options):
        now = queue.now()
        messages = QueuedMessage.objects.select_related("blob").filter(pk__in=actions.find_messages([queue_id]))
        for message in messages.order_by("pk"):
            sender = f"<{message.mail_from}>"
            if message.srs_sender:
                sender += f" (sent as <{message.srs_sender}>)"
            self.write_table([
                ["queue id", message.queue_id],
                ["from", sender],
                ["size", format_size(message.blob.size)],
                ["received", f"{show_time(message.created)} from {message.received_from or 'this server'}"],
                ["age", show_duration(now - message.created)],
                ["expires", show_time(message.expires_at)],
            ])
            recipients = list(message.recipients.order_by("pk"))
            attempts = {}
            for attempt in DeliveryAttempt.objects.filter(recipient__message=message).order_by("started", "pk"):
                attempts.setdefault(attempt.recipient_id, []).append(attempt)
            for r in recipients:
                self.stdout.write("")
                details = [r.state, f"{r.attempts} attempt{'' if r.attempts == 1 else 's'}"]
                if r.state in actions.PENDING:
                    details.append(f"next {show_next_attempt(r, now)}")
                if r.status:
                    details.append(f"status {r.status}")
                self.stdout.write(f"<{r.address}>  " + "  ".join(details))
                if r.last_error:
                    self.stdout.write(f"  last error: {one_line(r.last_error)}")
                for line in _attempt_lines(attempts.get(r.pk, [])):
                    self.stdout.write("  " + line)

    # Changing

    def _targets(self, queue_ids, every, recipient):
        """The recipient ids a change to QUEUE_IDs (or --all) and --recipient is about."""
        if every:
            rows = QueuedRecipient.objects.filter(state__in=actions.UNFINISHED)
            if recipient is not None:
                rows = rows.filter(address__iexact=recipient.strip())
            ids = list(rows.order_by("pk").values_list("pk", flat=True))
        else:
            ids = actions.recipients_of(actions.find_messages(queue_ids), address=recipient)
        if recipient is not None and not ids:
            raise CommandError(f"<{recipient}> is not a recipient of {' '.join(queue_ids) or 'any queued message'}")
        return ids

    def _report(self, count, verb, *, every, nothing):
        if count:
            self.say(f"{verb} {count} recipient{'' if count == 1 else 's'}")
        elif every:
            self.say(f"nothing to {nothing}")
        else:
            raise CommandError(f"nothing to {nothing}: no recipient of those messages is in a state for it")

    def handle_retry(self, *, queue_ids, every, recipient, **options):
        count = actions.retry_now(self._targets(queue_ids, every, recipient), acting_user=self.acting_user)
        self._report(count, "retrying now", every=every, nothing="retry (held ones need release)")

    def handle_hold(self, *, queue_ids, every, recipient, **options):
        count = actions.hold(self._targets(queue_ids, every, recipient), acting_user=self.acting_user)
        self._report(count, "held", every=every, nothing="hold")

    def handle_release(self, *, queue_ids, every, recipient, **options):
        count = actions.release(self._targets(queue_ids, every, recipient), acting_user=self.acting_user)
        self._report(count, "released", every=every, nothing="release")

    def handle_bounce(self, *, queue_ids, recipient, reason, **options):
        count = actions.bounce(self._targets(queue_ids, False, recipient), reason, acting_user=self.acting_user)
        self._report(count, "bounced", every=False, nothing="bounce")

    def handle_flush(self, *, domain, **options):
        results = actions.flush(domain)
        if not any(result["tried"] for result in results.values()):
            self.say(f"nothing queued for {domain}" if domain else "nothing queued")
            return
        for name, result in results.items():
            outcomes = ", ".join(f"{result[o]} {o}" for o in ("delivered", "deferred", "bounced") if result[o])
            self.say(f"{name or 'local mailboxes'}: tried {result['tried']}" + (f" ({outcomes})" if outcomes else ""))

    def handle_delete(self, *, queue_ids, **options):
        count = actions.delete_messages(actions.find_messages(queue_ids), acting_user=self.acting_user)
        self.say(f"deleted {count} message{'' if count == 1 else 's'} from the queue")


def _sender_filter(sender):
    text = sender.strip()
    if text in ("", "<>"):
        return Q(message__mail_from="")
    if text.startswith("@"):
        return Q(message__mail_from__iendswith=text)
    return Q(message__mail_from__iexact=text.strip("<>"))


def _attempt_lines(attempts):
    for attempt in attempts:
        where = f" {attempt.host}" if attempt.host else ""
        yield f"{show_time(attempt.started)}  {attempt.outcome}{where}: {one_line(attempt.reply)}"
