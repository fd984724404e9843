"""The learning filter: a Bayesian classifier over a message's words.

- Tokens: words of the subject ("s:" prefix) and the text (HTML reduced to what the
  reader sees), the hosts links point at ("u:"), the From domain ("f:"). Each counts
  once per message; at most MAX_TOKENS per message are learned, and the first
  MAX_SCORED_TOKENS of them scored (one query for those the process does not remember,
  see _KnownCounts: a message's verdict must cost little).
- Counts are kept per account and site-wide (antispam.models). A verdict uses the
  account's own counts once it has learned MIN_MESSAGES of each kind, else the
  site-wide ones, else there is no verdict.
- Probability: each token's spamminess with Robinson's correction for rare words
  (strength S, prior X), the most telling MAX_CLUES of them combined with Fisher's
  chi-square method into an indicator from 0 (ham) to 1 (spam). Robinson, "A
  Statistical Approach to the Spam Problem", Linux Journal 107 (2003).
- Learning: learn() adds a message's tokens to one side; learning the same message
  (by digest) again on the other side moves it. Trainers of one filter are serialised
  by locking its BayesCorpus row, so counts never lose an update.
"""
import hashlib
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Greatest

from antispam import lookups, rules
from antispam.models import BayesCorpus, BayesToken, Learned

MAX_TOKENS = 1500
MAX_SCORED_TOKENS = 500  # looked up per message; also the size of one IN list
MAX_KNOWN_TOKENS = 200_000  # token counts a process remembers (_KnownCounts)
MIN_MESSAGES = 10  # of each kind before a filter's verdict counts
MAX_CLUES = 150
S, X = 0.45, 0.5
MIN_DEVIATION = 0.1  # tokens closer to 0.5 than this say nothing

_WORD = re.compile(r"[^\W_][\w'$€£%-]{1,22}[^\W_]|[$€£]\d+", re.UNICODE)


def tokens_of_facts(found):
    """The message's tokens without repeats, the most telling places first: subject,
    From domain, link hosts, then the words of the text in order (at most MAX_TOKENS)."""
    ordered = ["s:" + word for word in _WORD.findall(found.subject.lower())]
    if found.from_domain:
        ordered.append("f:" + found.from_domain)
    ordered += ["u:" + host for _, _, host in found.links if host]
    text = found.text if found.has_plain else ""
    if found.has_html:
        text += "\n" + found.visible_html
    ordered += [word for word in _WORD.findall(text.lower()) if not word.isdigit()]
    return list(dict.fromkeys(token[:64] for token in ordered))[:MAX_TOKENS]


def tokens(raw):
    return tokens_of_facts(rules.facts(raw))


def digest(raw):
    return hashlib.sha256(raw).hexdigest()


# Scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    probability: float
    clues: tuple  # the most telling tokens, most telling first, as people read them
    scope: str  # "personal" or "site"


def _chi2q(chi, freedom):
    """P(X >= chi) for a chi-square variable with `freedom` (even) degrees of freedom."""
    m = chi / 2.0
    total = term = math.exp(-m)
    for i in range(1, freedom // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def spamminess(spam, ham, n_spam, n_ham):
    """Robinson's f(w): the token's spam probability, pulled toward X when rare."""
    spam_ratio = spam / max(n_spam, 1)
    ham_ratio = ham / max(n_ham, 1)
    p = spam_ratio / (spam_ratio + ham_ratio) if spam_ratio + ham_ratio else X
    n = spam + ham
    return (S * X + n * p) / (S + n)


def combine(probabilities):
    """Fisher-Robinson chi-square combination: 0 ham … 1 spam."""
    if not probabilities:
        return 0.5
    n = len(probabilities)
    try:
        ln_ham = math.fsum(map(math.log, probabilities))
        ln_spam = math.fsum(map(math.log, [1.0 - p for p in probabilities]))
    except ValueError:  # a certain 0 or 1: spamminess() never says so, callers might
        ln_ham = math.fsum(math.log(max(p, 1e-200)) for p in probabilities)
        ln_spam = math.fsum(math.log(max(1.0 - p, 1e-200)) for p in probabilities)
    h = _chi2q(-2.0 * ln_ham, 2 * n)
    s = _chi2q(-2.0 * ln_spam, 2 * n)
    return (1.0 + h - s) / 2.0


def readable(token):
    return token.partition(":")[2] if token[:2] in ("s:", "u:", "f:") else token


def classify(message_tokens, counts, n_spam, n_ham, scope="site"):
    """A Verdict from tokens and {token: (spam, ham)} counts of a filter that learned
    n_spam and n_ham messages."""
    scored = []
    # spamminess() inlined: this loop runs for every token of every message.
    per_spam, per_ham = 1.0 / max(n_spam, 1), 1.0 / max(n_ham, 1)
    for token in message_tokens:
        found = counts.get(token)
        if found is None:
            continue
        spam, ham = found
        n = spam + ham
        if not n:
            continue
        spam_ratio, ham_ratio = spam * per_spam, ham * per_ham
        f = (S * X + n * spam_ratio / (spam_ratio + ham_ratio)) / (S + n)
        deviation = abs(f - 0.5)
        if deviation >= MIN_DEVIATION:
            scored.append((deviation, f, token))
    scored.sort(reverse=True)
    clues = scored[:MAX_CLUES]
    probability = combine([f for _, f, _ in clues])
    spammy = probability >= 0.5
    leaning = [(-f if spammy else f, t) for _, f, t in clues if (f > 0.5) == spammy]
    leaning.sort()
    telling = tuple(dict.fromkeys(readable(t) for _, t in leaning))[:5]
    return Verdict(round(probability, 4), telling, scope)


def _corpus(account_id):
    return lookups.corpus(account_id)


def _counts(account_id, message_tokens):
    """{token: (spam, ham)} of the filter of `account_id` (None: site-wide): plain SQL in
    lists of at most MAX_SCORED_TOKENS, over the unique (account, token) indexes."""
    table = BayesToken._meta.db_table
    owner, params = ("account_id IS NULL", []) if account_id is None else ("account_id = %s", [account_id])
    counts = {}
    with connection.cursor() as cursor:
        for start in range(0, len(message_tokens), MAX_SCORED_TOKENS):
            chunk = message_tokens[start : start + MAX_SCORED_TOKENS]
            cursor.execute(
                f"SELECT token, spam, ham FROM {table} WHERE {owner} AND token IN ({', '.join(['%s'] * len(chunk))})",
                params + chunk,
            )
            counts.update((token, (spam, ham)) for token, spam, ham in cursor.fetchall())
    return counts


class _KnownCounts:
    """Token counts this process read, per filter, kept while the filter's corpus sizes
    (antispam.lookups, re-read every couple of seconds) stay the same: anything learned
    changes those, so counts are never older than the sizes they are scored with. Most of
    a message's words were in earlier messages; only the others are asked for. Absent
    tokens are remembered as (0, 0). At most MAX_KNOWN_TOKENS in all (then all dropped)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.filters = {}  # account id or None → ((n_spam, n_ham), {token: (spam, ham)})
        self.size = 0

    def counts(self, owner, version, message_tokens):
        entry = self.filters.get(owner)
        known = entry[1] if entry is not None and entry[0] == version else {}
        missing = [token for token in message_tokens if token not in known]
        if not missing:
            return known
        found = _counts(owner, missing)
        with self.lock:
            entry = self.filters.get(owner)
            if entry is None or entry[0] != version or self.size + len(missing) > MAX_KNOWN_TOKENS:
                if self.size + len(missing) > MAX_KNOWN_TOKENS:
                    self.filters.clear()
                    self.size = 0
                entry = self.filters[owner] = (version, {})
            known = entry[1]
            for token in missing:
                if token not in known:
                    known[token] = found.get(token, (0, 0))
                    self.size += 1
        return known

    def clear(self):
        with self.lock:
            self.filters.clear()
            self.size = 0


_known = _KnownCounts()


def forget():
    """Drop the token counts this process remembers (after learning here; tests)."""
    _known.clear()


def verdict(account_id, message_tokens, *, memo=None):
    """The verdict of the account's filter (or the site's while the account's has learned
    too little), None when neither has. The first MAX_SCORED_TOKENS tokens count. `memo`,
    a dict kept for one message, saves asking again for the site's counts when several
    recipients are scored with them."""
    message_tokens = list(message_tokens[:MAX_SCORED_TOKENS])
    for scope, owner in (("personal", account_id), ("site", None)):
        if scope == "personal" and owner is None:
            continue
        n_spam, n_ham = _corpus(owner)
        if n_spam >= MIN_MESSAGES and n_ham >= MIN_MESSAGES:
            if memo is None:
                memo = {}
            if owner not in memo:
                counts = _known.counts(owner, (n_spam, n_ham), message_tokens)
                memo[owner] = classify(message_tokens, counts, n_spam, n_ham, scope)
            return memo[owner]
    return None


# Learning -----------------------------------------------------------------------------------


def learn(account_id, message_tokens, message_digest, *, spam):
    """Teach the filter of `account_id` (None: site-wide) that a message is spam or ham.
    Returns False when it had already learned exactly that."""
    return learn_batch(account_id, [(message_tokens, message_digest)], spam=spam) == 1


def learn_batch(account_id, messages, *, spam):
    """learn() for many (tokens, digest) pairs in one transaction; returns how many
    taught the filter something new."""
    verdict_name = Learned.SPAM if spam else Learned.HAM
    side, other = ("spam", "ham") if spam else ("ham", "spam")
    with transaction.atomic():
        corpus, _ = BayesCorpus.objects.get_or_create(account_id=account_id)
        corpus = BayesCorpus.objects.select_for_update().get(pk=corpus.pk)
        digests = list(dict.fromkeys(d for _, d in messages))
        previous = dict(
            Learned.objects.filter(account_id=account_id, digest__in=digests).values_list("digest", "verdict")
        )
        added, moved, seen = Counter(), Counter(), set()
        for message_tokens, message_digest in messages:
            if previous.get(message_digest) == verdict_name or message_digest in seen:
                continue
            seen.add(message_digest)
            added.update(set(message_tokens))
            if message_digest in previous:
                moved.update(set(message_tokens))
        if not seen:
            return 0
        existing = set(
            BayesToken.objects.filter(account_id=account_id, token__in=list(added)).values_list("token", flat=True)
        )
        BayesToken.objects.bulk_create(
            [BayesToken(account_id=account_id, token=t, **{side: n}) for t, n in added.items() if t not in existing],
            batch_size=500,
        )
        # One UPDATE per distinct (added, moved) pair: few, since most words occur once.
        groups = {}
        for token in existing:
            groups.setdefault((added[token], moved[token]), []).append(token)
        for (plus, minus), group in groups.items():
            updates = {side: F(side) + plus}
            if minus:
                updates[other] = Greatest(F(other) - minus, 0)
            for start in range(0, len(group), 500):
                BayesToken.objects.filter(account_id=account_id, token__in=group[start : start + 500]).update(**updates)
        changed = [d for d in seen if d in previous]
        Learned.objects.filter(account_id=account_id, digest__in=changed).update(verdict=verdict_name)
        Learned.objects.bulk_create(
            [Learned(account_id=account_id, digest=d, verdict=verdict_name) for d in seen if d not in previous],
            batch_size=500,
        )
        updates = {side: F(side) + len(seen)}
        if changed:
            updates[other] = Greatest(F(other) - len(changed), 0)
        BayesCorpus.objects.filter(pk=corpus.pk).update(**updates)
        # This process scores with the new counts at once (antispam.actions._changed).
        lookups.forget()
        forget()
        transaction.on_commit(lookups.forget)
        transaction.on_commit(forget)
    return len(seen)


def learn_message(raw, *, spam, account_id=None, site=True):
    """Learn message bytes for an account's filter and (by default) the site-wide one."""
    message_tokens, message_digest = tokens(raw), digest(raw)
    learned = False
    if account_id is not None:
        learned = learn(account_id, message_tokens, message_digest, spam=spam)
    if site or account_id is None:
        learned = learn(None, message_tokens, message_digest, spam=spam) or learned
    return learned
