"""A folder through the content filter, changing nothing: the dry run of `manage.py spam
check` and of the admin's "run this folder through the filter" page.

Each message is assessed again as the filter would now: the content rules and the Bayes
tokens of its bytes (antispam.checks.assess_content), with the authentication results
recorded when it was delivered (its Verdict, if any: SPF, DKIM and DMARC cannot be asked
again later), then the account's filter, lists, reputation and thresholds
(antispam.policy.decide). Nothing is written: no Verdict row, no training, no move, no
flag; decide() and the Bayes scorer only read.

Bounded: a page is at most MAX_PAGE messages, newest first (by UID), so one request costs
at most that many blob reads and verdicts whatever the folder's size.
"""
from dataclasses import dataclass

from antispam import checks, policy

JUNK = "\\Junk"  # RFC 6154 special-use attribute
PAGE_SIZE = 50
MAX_PAGE = 200
TOP_REASONS = 3


@dataclass(frozen=True)
class Row:
    uid: int
    subject: str
    sender: str
    score: float
    action: str  # none, tag, junk or reject: what the filter would do now
    recorded: str  # the action recorded at delivery ("" when none was)
    placement: str  # where the message is compared with where the verdict would put it
    reasons: tuple  # (points, explanation) of the rules weighing most, heaviest first


@dataclass(frozen=True)
class Page:
    rows: list
    offset: int
    limit: int
    total: int  # messages in the folder

    @property
    def has_next(self):
        return self.offset + len(self.rows) < self.total

    @property
    def has_previous(self):
        return self.offset > 0

    def counts(self):
        """{action: how many messages of this page would get it}."""
        found = {}
        for row in self.rows:
            found[row.action] = found.get(row.action, 0) + 1
        return found


def placement(folder, action):
    """Where the message is, and what the verdict would change about that, in words."""
    in_junk = folder.special_use == JUNK
    if action in ("junk", "reject"):
        if in_junk:
            return f"in {folder.name}, where the filter would put it"
        return f"in {folder.name}; the filter would file it into Junk now"
    if in_junk:
        return f"in {folder.name}; the filter would not put it there now"
    return f"in {folder.name}"


def top_reasons(rules, n=TOP_REASONS):
    """The rules that weigh most (either way), heaviest first, as (points, explanation)."""
    weighty = sorted((r for r in rules if r[1]), key=lambda r: -abs(r[1]))
    return tuple((points, explanation) for _, points, explanation in weighty[:n])


def run(folder, *, offset=0, limit=PAGE_SIZE):
    """The Page of `folder`'s messages from `offset` (0: the newest), at most `limit`."""
    from mailstore.actions import read_blob

    from antispam.models import Verdict

    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    account = folder.account
    total = folder.message_count  # kept by the mail store: no COUNT over a big folder
    messages = list(
        folder.messages.select_related("blob").order_by("-uid")[offset : offset + limit]
    )
    recorded = {
        blob_id: (action, results)
        for blob_id, action, results in Verdict.objects.filter(
            account=account, blob_id__in=[m.blob_id for m in messages]
        ).values_list("blob_id", "action", "results")
    }
    rows = []
    for message in messages:
        action_then, results = recorded.get(message.blob_id, ("", None))
        try:
            raw = bytes(message.prefix) + read_blob(message.blob)
        except OSError:
            rows.append(Row(message.uid, message.subject, message.from_address, 0.0, "unreadable", action_then,
                            f"in {folder.name}", ((0.0, "the message's bytes could not be read"),)))
            continue
        assessment = checks.assess_content(raw, results=results)
        decision = policy.decide(assessment, [account])[account.pk]
        rows.append(Row(
            uid=message.uid, subject=message.subject, sender=message.from_address, score=decision.score,
            action=decision.action, recorded=action_then, placement=placement(folder, decision.action),
            reasons=top_reasons(decision.rules),
        ))
    return Page(rows, offset, limit, total)
