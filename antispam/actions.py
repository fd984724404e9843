"""The one write path of the content filter: thresholds, allow/block lists, learning.

Views (webmail, admin), the `spam` command and the Celery task call these; each is
atomic. Learning from users' judgements: mailstore records a TrainingExample when a
message moves into or out of Junk (IMAP or webmail); learn_examples() teaches the
account's filter and the site-wide one, and notes the sender for reputation. Every
move learns at once once it commits (learn_moved(), called by mailstore, bounded); the
periodic task (antispam.tasks.learn) learns what that left within a minute.
"""
import logging
import re

from django.db import transaction
from django.db.models import F

from antispam import bayes, lookups
from antispam.models import ListEntry, SenderMark, SpamSettings
from mailsuite.lib.addresses import AddressError, split_address

log = logging.getLogger(__name__)

LEARN_BATCH = 200
MOVED_AT_ONCE = 50  # examples learn_moved() learns while the mover waits
LEARNED_KEPT_DAYS = 7  # a learned TrainingExample is kept this long (to look into), then pruned
PRUNE_BATCH = 5000


class SpamSettingsError(ValueError):
    """A threshold or list entry that cannot be saved; the message says why."""


def _scope(domain, account):
    if (domain is None) == (account is None):
        raise SpamSettingsError("give a domain or an account, not both")
    return {"domain": domain} if domain is not None else {"account": account}


@transaction.atomic
def set_thresholds(*, domain=None, account=None, tag=None, junk=None, reject=None, never_reject=False):
    """Thresholds for a domain or an account; None inherits (account → domain → server)."""
    scope = _scope(domain, account)
    for name, value in (("tag", tag), ("junk", junk), ("reject", reject)):
        if value is not None and not -100 <= value <= 1000:
            raise SpamSettingsError(f"the {name} threshold must be between -100 and 1000")
    if tag is not None and junk is not None and junk < tag:
        raise SpamSettingsError("the Junk threshold cannot be below the tag threshold")
    if reject is not None and junk is not None and reject < junk:
        raise SpamSettingsError("the reject threshold cannot be below the Junk threshold")
    row, _ = SpamSettings.objects.update_or_create(
        **scope,
        defaults={"tag_threshold": tag, "junk_threshold": junk, "reject_threshold": reject, "never_reject": never_reject},
    )
    _changed()
    return row


_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def normalise_pattern(pattern):
    """A list entry as stored: a lower-case address or domain (IDNA A-labels)."""
    pattern = pattern.strip().lower().removeprefix("@").rstrip(".")
    if "@" in pattern:
        try:
            localpart, domain = split_address(pattern)
        except AddressError:
            raise SpamSettingsError(f"{pattern!r} is not an e-mail address") from None
        return f"{localpart}@{domain}".lower()
    try:
        pattern = pattern.encode("idna").decode("ascii")
    except UnicodeError:
        raise SpamSettingsError(f"{pattern!r} is not a domain name") from None
    if not _DOMAIN.match(pattern):
        raise SpamSettingsError(f"{pattern!r} is not a domain name or an address")
    return pattern


@transaction.atomic
def add_list_entry(kind, pattern, *, domain=None, account=None):
    """Put an address or domain on the allow or block list of a domain or account; an
    entry already there moves to the list named."""
    if kind not in (ListEntry.ALLOW, ListEntry.BLOCK):
        raise SpamSettingsError("a list entry is allow or block")
    scope = _scope(domain, account)
    entry, _ = ListEntry.objects.update_or_create(**scope, pattern=normalise_pattern(pattern), defaults={"kind": kind})
    _changed()
    return entry


@transaction.atomic
def remove_list_entry(entry_id, *, domain=None, account=None):
    """Remove an entry of this domain's or account's lists; False when there is none."""
    deleted, _ = ListEntry.objects.filter(pk=entry_id, **_scope(domain, account)).delete()
    _changed()
    return bool(deleted)


def _changed():
    """Thresholds or lists changed: this process uses them from the next message on
    (other processes within antispam.lookups.TTL seconds). Forgotten now, for reads later
    in this transaction, and after the commit, for what other threads read meanwhile."""
    lookups.forget()
    transaction.on_commit(lookups.forget)


def learn_examples(account_id=None, limit=LEARN_BATCH):
    """Learn the TrainingExamples not learned yet, oldest first (of one account, or all);
    returns how many were learned. Each account's examples are learned together: one
    transaction, one learn_batch() per filter and side."""
    from mailstore.actions import read_blob
    from mailstore.models import TrainingExample

    pending = TrainingExample.objects.filter(learned=False).select_related("blob").order_by("created", "pk")
    if account_id is not None:
        pending = pending.filter(account_id=account_id)
    by_account = {}
    for example in pending[:limit]:
        try:
            raw = read_blob(example.blob)
        except OSError:
            log.warning("training example %s: cannot read blob %s; skipped", example.pk, example.blob.name)
            raw = None
        by_account.setdefault(example.account_id, []).append((example, raw))
    done = sum(_learn_account(owner, examples) for owner, examples in by_account.items())
    if done:
        log.info("spam filter learned %d training example(s)", done)
    return done


def _learn_account(account_id, examples):
    """Learn one account's (TrainingExample, raw or None) pairs, oldest first."""
    from mailstore.models import TrainingExample

    with transaction.atomic():
        # Claimed inside the transaction, so two learners never learn one example twice.
        claimed = set(
            TrainingExample.objects.select_for_update()
            .filter(pk__in=[example.pk for example, _ in examples], learned=False)
            .values_list("pk", flat=True)
        )
        if not claimed:
            return 0
        TrainingExample.objects.filter(pk__in=claimed).update(learned=True)
        lessons = {}  # digest → (tokens, spam): a message judged twice teaches its last verdict
        for example, raw in examples:
            if example.pk not in claimed or raw is None:
                continue
            spam = example.verdict == TrainingExample.SPAM
            digest = bayes.digest(raw)
            lessons.pop(digest, None)
            lessons[digest] = (bayes.tokens(raw), spam)
            _mark_sender(account_id, raw, spam=spam)
        for spam in (True, False):
            batch = [(tokens, digest) for digest, (tokens, is_spam) in lessons.items() if is_spam == spam]
            if batch:
                bayes.learn_batch(account_id, batch, spam=spam)
                bayes.learn_batch(None, batch, spam=spam)
    return len(claimed)


def prune_training_examples(now=None):
    """Delete the TrainingExamples learned more than LEARNED_KEPT_DAYS ago (their lesson is
    in the Bayes counts and the Learned digests); returns how many went. Unlearned ones stay
    whatever their age. In batches, so no transaction holds many rows at once."""
    from datetime import timedelta

    from django.utils import timezone

    from mailstore.models import TrainingExample

    before = (now or timezone.now()) - timedelta(days=LEARNED_KEPT_DAYS)
    deleted = 0
    while True:
        batch = list(
            TrainingExample.objects.filter(learned=True, created__lt=before).values_list("pk", flat=True)[:PRUNE_BATCH]
        )
        if not batch:
            return deleted
        with transaction.atomic():
            deleted += TrainingExample.objects.filter(pk__in=batch, learned=True).delete()[0]


def learn_moved(account_id):
    """Learn at once what the user just moved into or out of Junk (mailstore calls this
    after the move commits): at most MOVED_AT_ONCE examples, so that a big move does not
    hold up the IMAP reply; the periodic task (antispam.tasks.learn) takes the rest. A
    failure here never fails the move: it is logged and left to the task."""
    try:
        learn_examples(account_id, limit=MOVED_AT_ONCE)
    except Exception:
        log.exception("learning the moves of account %s at once failed; the periodic task will", account_id)


def _mark_sender(account_id, raw, *, spam):
    from antispam.rules import facts

    senders = facts(raw).from_addresses
    if len(senders) != 1:
        return
    side = "spam" if spam else "ham"
    mark, created = SenderMark.objects.get_or_create(account_id=account_id, address=senders[0][:320], defaults={side: 1})
    if not created:
        SenderMark.objects.filter(pk=mark.pk).update(**{side: F(side) + 1})
