"""Greylisting (RFC 6647) at RCPT TO, for local domains that turn it on (mta.models.InboundPolicy).

A message is known by its triplet: the client's network (its /24 for IPv4, its /64 for IPv6,
since big senders retry from another address of the same pool), the envelope sender and
the recipient. The first time a triplet is seen the recipient is refused with a temporary
`451 4.7.1` (RFC 6647 §2.1; RFC 5321 §4.2.5: a well-behaved client queues and retries);
a retry after MAILSUITE_GREYLIST_DELAY seconds and within MAILSUITE_GREYLIST_RETRY_WINDOW
passes, and the client's network is then allowed without greylisting for
MAILSUITE_GREYLIST_ALLOW_DAYS days (RFC 6647 §4.4 recommends such auto-allowing, so a
legitimate sender is delayed once, not once per correspondent).

Skipped (the caller, mta.smtpd, sees to the first two): authenticated clients and
MAILSUITE_TRUSTED_NETWORKS; relayed recipients; clients in
MAILSUITE_GREYLIST_SKIP_NETWORKS; networks allowed (auto or by the operator); and known
good senders when the client is allowed by the sender's SPF record (so the forged
address of a correspondent does not open the door; RFC 6647 §4.5 lists such exceptions):
an address our users have had mail delivered to (the outbound queue), one in the
recipient's address book, or one on the recipient's or its domain's allow list
(antispam.models.ListEntry). Only indexed lookups: spam brings many new triplets.

Implementation notes:
- evaluate() runs in the database writers' pool (mailsuite.lib.aio.run_write): every
  outcome is one short transaction, no DNS inside it. The SPF check of a known good
  sender is DNS and runs in between, in the checks' own pool (antispam.checks.off_loop).
- This module is the only writer of the greylist tables (it is the SMTP hot path's own
  state, like the login throttle's); operator changes to allowed networks go through
  allow_network()/disallow_network().
- The tables stay bounded: every row carries expires_at, and each new triplet deletes
  a batch of dead rows (CLEANUP_BATCH), so the cleanup keeps pace with what is added;
  prune() clears everything dead at once (daily housekeeping).
- `clock` is a module attribute: tests move time forward without sleeping.
- A passed triplet or allowed network is refreshed at most once a day, not per message.
"""
import ipaddress
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import InvalidInput
from mta.models import GreylistAllowedNetwork, GreylistTriplet, QueuedRecipient

log = logging.getLogger(__name__)

clock = timezone.now  # a test seam
CLEANUP_BATCH = 200
REFRESH_EVERY = timedelta(days=1)


class GreylistError(InvalidInput):
    """An operator's input the greylist cannot take (e.g. not a network)."""


@dataclass(frozen=True)
class Outcome:
    action: str  # "pass", "defer", or "verify-sender" (a known sender: check SPF, then ask again)
    reason: str
    reply: str | None = None

    @property
    def passed(self):
        return self.action == "pass"


PASS_SKIPPED = Outcome("pass", "skipped network")
VERIFY_SENDER = Outcome("verify-sender", "known sender, SPF to check")


def client_network(ip):
    """The network a client is greylisted by: "192.0.2.0/24" or "2001:db8:1:2::/64"; None if not an IP."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _skipped(ip):
    address = ipaddress.ip_address(ip)
    return any(address in network for network in settings.MAILSUITE_GREYLIST_SKIP_NETWORKS)


def _days(n):
    return timedelta(days=n)


def evaluate(client_ip, sender, recipient, *, accounts=(), sender_verified=None):
    """Greylist RCPT TO:<recipient> from `client_ip` with MAIL FROM:<sender> ("" for bounces).

    accounts: the recipient's mailboxes, as (account id, domain id) pairs, for their address
    books and allow lists. sender_verified: None on the first call; the caller answers
    VERIFY_SENDER by checking the sender's SPF and calling again with True or False."""
    network = client_network(client_ip)
    if network is None or _skipped(client_ip):
        return PASS_SKIPPED
    sender = sender.lower()
    recipient = recipient.lower()
    now = clock()
    allow_for = _days(settings.MAILSUITE_GREYLIST_ALLOW_DAYS)
    with transaction.atomic():
        allowed = (
            GreylistAllowedNetwork.objects.filter(network=network)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .first()
        )
        if allowed is not None:
            if allowed.expires_at is not None and allowed.expires_at < now + allow_for - REFRESH_EVERY:
                GreylistAllowedNetwork.objects.filter(pk=allowed.pk).update(expires_at=now + allow_for)
            return Outcome("pass", "allowed network")
        triplet = GreylistTriplet.objects.filter(network=network, sender=sender, recipient=recipient).first()
        if triplet is not None and triplet.expires_at > now and triplet.passed_at is not None:
            _allow(network, now, allow_for, reason="passed greylisting")
            return Outcome("pass", "passed before")
    if sender_verified is None and sender and is_known_sender(sender, accounts):
        return VERIFY_SENDER
    if sender_verified:
        return Outcome("pass", "known sender")
    return _record(network, sender, recipient, now, allow_for)


def _record(network, sender, recipient, now, allow_for):
    delay = timedelta(seconds=settings.MAILSUITE_GREYLIST_DELAY)
    window = timedelta(seconds=settings.MAILSUITE_GREYLIST_RETRY_WINDOW)
    try:
        with transaction.atomic():
            triplet = (
                GreylistTriplet.objects.select_for_update()
                .filter(network=network, sender=sender, recipient=recipient)
                .first()
            )
            if triplet is None or triplet.expires_at <= now:
                if triplet is not None:
                    triplet.delete()
                GreylistTriplet.objects.create(
                    network=network, sender=sender, recipient=recipient,
                    first_seen=now, last_seen=now, expires_at=now + window,
                )
                _cleanup(now)
                log.info("greylist: new network=%s sender=<%s> recipient=<%s>", network, sender, recipient)
                return _defer(recipient, delay)
            if triplet.passed_at is not None:
                return Outcome("pass", "passed before")
            if now - triplet.first_seen < delay:
                GreylistTriplet.objects.filter(pk=triplet.pk).update(last_seen=now, attempts=triplet.attempts + 1)
                return _defer(recipient, triplet.first_seen + delay - now)
            GreylistTriplet.objects.filter(pk=triplet.pk).update(
                last_seen=now, attempts=triplet.attempts + 1, passed_at=now, expires_at=now + allow_for,
            )
            _allow(network, now, allow_for, reason="passed greylisting")
            log.info(
                "greylist: passed network=%s sender=<%s> recipient=<%s> after %ds",
                network, sender, recipient, (now - triplet.first_seen).total_seconds(),
            )
            return Outcome("pass", "retried in time")
    except IntegrityError:
        # Another session inserted this triplet a moment ago: it has been greylisted now.
        return _defer(recipient, delay)


def _defer(recipient, wait):
    seconds = max(1, int(wait.total_seconds() + 0.999))
    return Outcome(
        "defer", "greylisted",
        f"451 4.7.1 <{recipient}>: greylisted, please try again in {seconds} seconds",
    )


def _allow(network, now, allow_for, *, reason):
    """Auto-allow `network` until now + allow_for (extending, never shortening, an existing entry)."""
    row = GreylistAllowedNetwork.objects.filter(network=network).first()
    if row is None:
        try:
            with transaction.atomic():
                GreylistAllowedNetwork.objects.create(network=network, expires_at=now + allow_for, reason=reason)
        except IntegrityError:
            pass  # allowed by a concurrent session
    elif row.expires_at is not None and row.expires_at < now + allow_for - REFRESH_EVERY:
        GreylistAllowedNetwork.objects.filter(pk=row.pk).update(expires_at=now + allow_for)


def _cleanup(now):
    for model in (GreylistTriplet, GreylistAllowedNetwork):
        dead = list(model.objects.filter(expires_at__lte=now).values_list("pk", flat=True)[:CLEANUP_BATCH])
        if dead:
            model.objects.filter(pk__in=dead).delete()


def prune(now=None):
    """Delete every dead triplet and expired auto-allowed network; returns how many rows went."""
    now = now or clock()
    with transaction.atomic():
        triplets, _ = GreylistTriplet.objects.filter(expires_at__lte=now).delete()
        networks, _ = GreylistAllowedNetwork.objects.filter(expires_at__lte=now).delete()
    return triplets + networks


def is_known_sender(sender, accounts=()):
    """True if `sender` is someone our users write to, or one the recipient knows (its
    address book) or allowed (its own or its domain's allow list). `accounts`: (account id,
    domain id) pairs of the recipient's mailboxes."""
    from antispam.models import ListEntry
    from webmail.models import Contact

    if QueuedRecipient.objects.filter(address=sender, state=QueuedRecipient.State.DELIVERED).exists():
        return True
    if not accounts:
        return False
    account_ids = {account for account, _ in accounts}
    domain_ids = {domain for _, domain in accounts}
    if Contact.objects.filter(account_id__in=account_ids, key=sender).exists():
        return True
    # An allow-list entry names the address or its domain (which covers its subdomains).
    labels = sender.rpartition("@")[2].split(".")
    patterns = [sender] + [".".join(labels[i:]) for i in range(len(labels) - 1)]
    return ListEntry.objects.filter(kind=ListEntry.ALLOW, pattern__in=patterns).filter(
        Q(account_id__in=account_ids) | Q(domain_id__in=domain_ids)
    ).exists()


def sender_spf_passes(client_ip, sender, helo):
    """SPF (RFC 7208) of the sender's domain allows `client_ip` (DNS: not in a transaction)."""
    from antispam import spf_check

    result = spf_check.check_mail_from(client_ip, sender, helo, receiver=settings.MAILSUITE_HOSTNAME)
    return result.result == "pass"


# Operator changes (the admin) -------------------------------------------------------------


def _network_text(text):
    """A /24 or /64 as written, or the one an address (the client seen in the logs) is in."""
    if "/" not in text and (network := client_network(text.strip())):
        return network
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise GreylistError(f"{text!r} is not an IP address or network") from None
    prefix = 24 if network.version == 4 else 64
    if network.prefixlen != prefix:
        # Lookups match the client's /24 or /64 exactly; wider ranges go into
        # MAILSUITE_GREYLIST_SKIP_NETWORKS, narrower ones would never match.
        raise GreylistError(
            f"{text}: greylisting allows whole /{prefix} networks; for other ranges use MAILSUITE_GREYLIST_SKIP_NETWORKS"
        )
    return str(network)


def allow_network(text, *, reason="", days=None):
    """Allow a /24 or /64 network without greylisting, for `days` days or (None) until removed."""
    network = _network_text(text)
    expires = clock() + _days(days) if days else None
    with transaction.atomic():
        row, _ = GreylistAllowedNetwork.objects.update_or_create(
            network=network, defaults={"expires_at": expires, "reason": reason[:200]},
        )
    return row


def disallow_network(text):
    network = _network_text(text)
    with transaction.atomic():
        GreylistAllowedNetwork.objects.filter(network=network).delete()
