"""What decide() reads about a recipient, with few queries and a short memory.

Every message asks, per local recipient, for the account's and its domain's thresholds
and allow/block lists, and for the size of the Bayes corpus it is scored against (and
once, whether its From domain is one of ours, for FORGED_LOCAL_DOMAIN). These
change rarely and by hand, so each process keeps what it read for TTL seconds (plain SQL:
for one-row lookups the ORM's query building costs more than the query): a change made
in the webmail or the admin reaches every SMTP process within TTL seconds, and the
process that made it at once (antispam.actions and antispam.bayes call forget()).
Sender marks are looked up per message (one indexed query), since a user's judgement
should count from the next message.

Thread safety: the SMTP server calls decide() from several database threads; entries are
replaced whole under a lock, never changed in place.
"""
import threading
import time
from dataclasses import dataclass

from mailsuite.lib import inline

TTL = 2.0  # seconds; a test seam, like clock
MAX_ENTRIES = 20000
clock = time.monotonic


class _Memo:
    """key → value for TTL seconds, at most MAX_ENTRIES (all dropped when full: the
    next minute refills what is in use)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = {}

    def get(self, key, load):
        now = clock()
        entry = self.entries.get(key)
        if entry is not None and now - entry[0] < TTL:
            return entry[1]
        inline.must_wait("the database")
        value = load(key)
        with self.lock:
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
            self.entries[key] = (now, value)
        return value

    def known(self, key, default=None):
        """The value remembered for `key` if still fresh, else `default` (never loads)."""
        entry = self.entries.get(key)
        if entry is not None and clock() - entry[0] < TTL:
            return entry[1]
        return default

    def clear(self):
        with self.lock:
            self.entries.clear()


@dataclass(frozen=True)
class Settings:
    """One SpamSettings row: None inherits."""

    tag: float | None = None
    junk: float | None = None
    reject: float | None = None
    never_reject: bool = False


@dataclass(frozen=True)
class Scope:
    """A domain's or an account's own settings and list entries."""

    settings: Settings | None
    entries: tuple  # (kind, pattern), as stored (lower case)


_scopes = _Memo()  # ("account" | "domain", id) → Scope
_corpora = _Memo()  # account id or None (site-wide) → (spam, ham)
_local_domains = _Memo()  # domain name → whether it is one of ours (or an alias of one)


def scope(kind, pk):
    """The Scope of account `pk` (kind "account") or domain `pk` (kind "domain")."""
    return _scopes.get((kind, pk), _load_scope)


def corpus(account_id):
    """(spam, ham) messages the filter of `account_id` (None: site-wide) learned."""
    return _corpora.get(account_id, _load_corpus)


def is_local_domain(domain):
    """Whether mail for `domain` is delivered here (accounts.resolve.local_domain)."""
    return _local_domains.get(domain, _load_is_local_domain)


def known_local_domain(domain):
    """is_local_domain(domain) if remembered, else None: no database read."""
    return _local_domains.known(domain)


def sender_mark(account_id, address):
    """(ham, spam): how often the user moved mail from `address` out of or into Junk."""
    from django.db import connection

    from antispam.models import SenderMark

    inline.must_wait("the database")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT ham, spam FROM {SenderMark._meta.db_table} WHERE account_id = %s AND address = %s",
            [account_id, address],
        )
        row = cursor.fetchone()
    return tuple(row) if row else (0, 0)


def forget():
    """Drop what this process remembers (after a change made here; tests)."""
    _scopes.clear()
    _corpora.clear()
    forget_local_domains()


def forget_local_domains():
    _local_domains.clear()


def _load_scope(key):
    from django.db import connection

    from antispam.models import ListEntry, SpamSettings

    kind, pk = key
    column = "account_id" if kind == "account" else "domain_id"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tag_threshold, junk_threshold, reject_threshold, never_reject "
            f"FROM {SpamSettings._meta.db_table} WHERE {column} = %s",
            [pk],
        )
        row = cursor.fetchone()
        # Ordered as the lists page shows them; the first match wins (policy._list_rules).
        cursor.execute(
            f"SELECT kind, pattern FROM {ListEntry._meta.db_table} WHERE {column} = %s ORDER BY kind, pattern", [pk],
        )
        entries = tuple(tuple(entry) for entry in cursor.fetchall())
    settings = Settings(row[0], row[1], row[2], bool(row[3])) if row else None
    return Scope(settings, entries)


def _load_corpus(account_id):
    from django.db import connection

    from antispam.models import BayesCorpus

    table = BayesCorpus._meta.db_table
    with connection.cursor() as cursor:
        if account_id is None:
            cursor.execute(f"SELECT spam, ham FROM {table} WHERE account_id IS NULL")
        else:
            cursor.execute(f"SELECT spam, ham FROM {table} WHERE account_id = %s", [account_id])
        row = cursor.fetchone()
    return tuple(row) if row else (0, 0)


def _load_is_local_domain(domain):
    from accounts.resolve import is_local_domain as is_local

    return is_local(domain)
