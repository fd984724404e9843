"""Each recipient's verdict: the message's own evidence plus what is personal.

antispam.checks assesses a message once (authentication, block lists, content rules,
its Bayes tokens) into an Assessment. decide() then adds, for each local recipient:
- the Bayes verdict of the recipient's filter (or the site's, antispam.bayes);
- sender reputation: people the user wrote to or keeps as contacts, senders the user
  moved out of or into Junk, or a never-seen sender (said so, lightly scored); others at
  a domain the user wrote to count a little, except at SHARED_DOMAINS (freemail and
  other big providers, plus MAILSUITE_SPAM_SHARED_DOMAINS): writing to one person at
  gmail.com says nothing about the rest of its users;
- allow and block lists (the account's entries win over its domain's); an allow entry
  counts only when the sender is verified (DMARC pass, or SPF pass for that address),
  since a From field alone is anyone's to write;
and picks the action from the thresholds (account → domain → DEFAULTS): none, tag,
junk, reject. Reject is refused at SMTP time only when every local recipient rejects
and no other recipient waits for the message; otherwise those copies go to Junk.
Nothing is ever dropped silently.

decide() only reads the database: it runs in mta.inbound.prepare(), before the commit.
"""
from dataclasses import dataclass, field

from antispam import bayes, correspondents, lookups
from antispam.models import ListEntry

SPAM_POINTS = 10.0  # points that make 100 % for Sieve's spamtest (RFC 5235)
ACTIONS = ("none", "tag", "junk", "reject")


@dataclass(frozen=True)
class Thresholds:
    tag: float = 4.0
    junk: float = 6.0
    reject: float | None = 15.0  # None: never refuse


DEFAULTS = Thresholds()

# name: (points, explanation)
PERSONAL = {
    "ALLOWLISTED": (-20.0, "{pattern} is on {whose} allow list"),
    "ALLOWLISTED_UNVERIFIED": (0.0, "{pattern} is on {whose} allow list, but nothing proves the message comes from there"),
    "BLOCKLISTED": (20.0, "{pattern} is on {whose} block list"),
    "KNOWN_CORRESPONDENT": (-2.5, "you have corresponded with {address} before"),
    "KNOWN_DOMAIN": (-1.0, "you have corresponded with others at {domain}"),
    "MARKED_NOT_JUNK": (-3.0, "you marked mail from {address} as not junk before"),
    "MARKED_JUNK": (3.0, "you marked mail from {address} as junk before"),
    "NEVER_SEEN": (0.5, "you have never corresponded with this sender"),
}
# Big mail providers whose users share nothing but the provider: having written to someone
# there earns the rest of its users no credit (KNOWN_DOMAIN). Subdomains count too.
SHARED_DOMAINS = frozenset("""
    gmail.com googlemail.com outlook.com hotmail.com hotmail.co.uk hotmail.fr hotmail.de hotmail.it
    hotmail.es live.com live.co.uk live.fr msn.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de yahoo.it
    yahoo.es yahoo.co.jp ymail.com rocketmail.com aol.com icloud.com me.com mac.com proton.me
    protonmail.com pm.me gmx.com gmx.net gmx.de gmx.at gmx.ch web.de t-online.de freenet.de
    mail.com email.com zoho.com zohomail.com yandex.com yandex.ru ya.ru mail.ru bk.ru inbox.ru list.ru
    rambler.ru qq.com 163.com 126.com sina.com naver.com daum.net hanmail.net orange.fr wanadoo.fr
    free.fr laposte.net sfr.fr libero.it virgilio.it tiscali.it alice.it seznam.cz wp.pl o2.pl
    onet.pl interia.pl fastmail.com fastmail.fm tutanota.com tuta.io hushmail.com mailbox.org
    posteo.de posteo.net comcast.net verizon.net att.net sbcglobal.net btinternet.com sky.com
    bigpond.com shaw.ca rogers.com rediffmail.com uol.com.br bol.com.br terra.com.br
""".split())


def is_shared_domain(domain):
    """True for a freemail or big provider's domain (or a subdomain of one): SHARED_DOMAINS
    and the operator's MAILSUITE_SPAM_SHARED_DOMAINS."""
    from django.conf import settings

    extra = getattr(settings, "MAILSUITE_SPAM_SHARED_DOMAINS", ())
    labels = domain.lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):
        parent = ".".join(labels[i:])
        if parent in SHARED_DOMAINS or parent in extra:
            return True
    return False


# Bayes probability → points (most spam-like first; the first bound reached applies).
BAYES_POINTS = ((0.99, 4.5), (0.95, 3.5), (0.8, 2.0), (0.6, 0.5), (0.4, 0.0), (0.2, -0.5), (0.05, -1.5), (0.0, -2.5))


class Refused(Exception):
    """Every local recipient's thresholds say reject: the SMTP reply is the message."""


@dataclass
class Assessment:
    """A message's own evidence, from antispam.checks (picklable: it travels to the
    commit service with the envelope)."""

    rules: list = field(default_factory=list)  # (name, points, explanation)
    results: dict = field(default_factory=dict)  # spf, helo, dkim, dmarc, arc
    tokens: list = field(default_factory=list)
    from_address: str = ""
    mail_from: str = ""
    from_verified: bool = False
    mail_from_verified: bool = False

    @property
    def spoofed(self):
        return self.results.get("dmarc") == "fail" or any(r[0] == "FORGED_LOCAL_DOMAIN" for r in self.rules)


@dataclass
class Decision:
    account_id: int
    rules: list
    thresholds: Thresholds
    action: str = "none"
    results: dict = field(default_factory=dict)  # the message's authentication results

    @property
    def score(self):
        return round(sum(points for _, points, _ in self.rules), 2)

    @property
    def spam_percent(self):
        return max(0, min(100, round(self.score * 100 / SPAM_POINTS)))

    @property
    def is_spam(self):
        return self.action != "none"

    def header_fields(self):
        """X-Spam-Score and X-Spam-Status for this recipient's copy."""
        status = "Yes" if self.is_spam else "No"
        tests = ",".join(dict.fromkeys(name for name, _, _ in self.rules)) or "none"
        return (
            f"X-Spam-Score: {self.score:.1f}\r\n"
            f"X-Spam-Status: {status}, score={self.score:.1f} required={self.thresholds.tag:.1f} tests={tests}\r\n"
        ).encode("ascii")


def _rule(name, **details):
    points, template = PERSONAL[name]
    return (name, points, template.format(**details))


def _domain_of(address):
    return address.rpartition("@")[2].lower() if "@" in address else ""


def thresholds(account):
    """The account's thresholds: its own, else its domain's, else DEFAULTS (per field)."""
    tag, junk, reject = DEFAULTS.tag, DEFAULTS.junk, DEFAULTS.reject
    for own in (lookups.scope("domain", account.domain_id).settings, lookups.scope("account", account.pk).settings):
        if own is None:
            continue
        tag = own.tag if own.tag is not None else tag
        junk = own.junk if own.junk is not None else junk
        reject = own.reject if own.reject is not None else reject
        if own.never_reject:
            reject = None
    return Thresholds(tag, junk, reject)


def matches(pattern, address):
    """An entry covers an address (exactly) or a domain and its subdomains."""
    if not address:
        return False
    if "@" in pattern:
        return address == pattern
    domain = _domain_of(address)
    return domain == pattern or domain.endswith("." + pattern)


def _list_rules(account, assessment):
    senders = [a for a in dict.fromkeys((assessment.from_address, assessment.mail_from)) if a]
    if not senders:
        return []
    for kind, pk, whose in (("account", account.pk, "your"), ("domain", account.domain_id, "your domain's")):
        for entry_kind, pattern in lookups.scope(kind, pk).entries:
            matched = [s for s in senders if matches(pattern, s)]
            if not matched:
                continue
            if entry_kind == ListEntry.BLOCK:
                return [_rule("BLOCKLISTED", pattern=pattern, whose=whose)]
            verified = not assessment.spoofed and (
                (assessment.from_address in matched and assessment.from_verified)
                or (assessment.mail_from in matched and assessment.mail_from_verified)
            )
            return [_rule("ALLOWLISTED" if verified else "ALLOWLISTED_UNVERIFIED", pattern=pattern, whose=whose)]
    return []


def _reputation_rules(account, assessment):
    address = assessment.from_address
    if not address:
        return []
    mark = lookups.sender_mark(account.pk, address)
    if mark[1] > mark[0]:
        return [_rule("MARKED_JUNK", address=address)]
    if assessment.spoofed:
        return []  # someone else's name: what the user thinks of its owner says nothing here
    if mark[0] > mark[1]:
        return [_rule("MARKED_NOT_JUNK", address=address)]
    known, known_domain = correspondence(account, address)
    if known:
        return [_rule("KNOWN_CORRESPONDENT", address=address)]
    if known_domain and not is_shared_domain(_domain_of(address)):
        return [_rule("KNOWN_DOMAIN", domain=_domain_of(address))]
    return [_rule("NEVER_SEEN")]


def correspondence(account, address):
    """(the user wrote to or keeps `address` as a contact, the same for its domain):
    exact addresses from the Sent folders and the address book (antispam.correspondents)."""
    return correspondents.known(account.pk, address.lower())


def _bayes_rules(account, assessment, memo):
    if not assessment.tokens:
        return []
    verdict = bayes.verdict(account.pk, assessment.tokens, memo=memo)
    if verdict is None:
        return []
    points = next(p for bound, p in BAYES_POINTS if verdict.probability >= bound)
    if not points:
        return []
    words = ", ".join(f"\u201c{w}\u201d" for w in verdict.clues[:4])
    whose = "your filter" if verdict.scope == "personal" else "the server's filter"
    kind = "spam" if verdict.probability >= 0.5 else "your usual mail"
    explanation = f"Bayes: {verdict.probability:.2f} \u2014 words like {words} look like {kind} to {whose}"
    return [("BAYES_SPAM" if points > 0 else "BAYES_HAM", points, explanation)]


def decide(assessment, accounts, *, junk=False):
    """{account id: Decision} for the local recipients `accounts`; `junk` (DMARC
    quarantine) files the message into Junk whatever the score."""
    decisions, bayes_memo = {}, {}
    for account in accounts:
        rules = [tuple(r) for r in assessment.rules]
        listed = _list_rules(account, assessment)
        rules += listed
        if not any(name == "ALLOWLISTED" for name, _, _ in listed):
            rules += _bayes_rules(account, assessment, bayes_memo) + _reputation_rules(account, assessment)
        decision = Decision(account.pk, rules, thresholds(account), results=assessment.results)
        decision.action = _action(decision.score, decision.thresholds, junk=junk)
        decisions[account.pk] = decision
    return decisions


def _action(score, limits, *, junk=False):
    if limits.reject is not None and score >= limits.reject:
        return "reject"
    if junk or score >= limits.junk:
        return "junk"
    if score >= limits.tag:
        return "tag"
    return "none"


def refusal(decisions):
    score = max(d.score for d in decisions.values())
    return f"550 5.7.1 Message refused as spam (score {score:.1f}); if it is not, reach the recipient another way"


def store_verdicts(batch):
    """Verdict rows for the copies place_messages() stored: `batch` holds (decisions,
    mailstore Job) pairs. Runs in the caller's (the commit's) transaction."""
    rows = {}
    for decisions, job in batch:
        if not decisions:
            continue
        for outcome in job.outcomes:
            if outcome.message is None:
                continue
            account_id = outcome.recipient.account.pk
            decision = decisions.get(account_id)
            if decision is not None:
                rows[(account_id, outcome.message.blob_id)] = (
                    decision.score, decision.action, [list(rule) for rule in decision.rules], decision.results,
                )
    if rows:
        _insert_verdicts(rows)


def _insert_verdicts(rows):
    """INSERT the Verdict rows {(account id, blob id): (score, action, rules, results)},
    keeping a row already there (as bulk_create(ignore_conflicts=True) would). Plain SQL:
    every delivery batch writes some, and the ORM's statement building cost more than the
    statement."""
    import json

    from django.db import connection
    from django.utils import timezone

    from antispam.models import Verdict

    created = connection.ops.adapt_datetimefield_value(timezone.now())
    json_value = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    values, params = [], []
    for (account_id, blob_id), (score, action, rules, results) in rows.items():
        values.append(f"(%s, %s, %s, %s, {json_value}, {json_value}, %s)")
        params += [account_id, blob_id, score, action, json.dumps(rules), json.dumps(results), created]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Verdict._meta.db_table} (account_id, blob_id, score, action, rules, results, created) "
            f"VALUES {', '.join(values)} ON CONFLICT DO NOTHING",
            params,
        )
