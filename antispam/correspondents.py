"""Who a user corresponds with: the addresses the user wrote to and keeps as contacts.

The reputation rules (antispam.policy) ask, for every message and local recipient, whether
the sender is a known correspondent or at a domain the user wrote to. Answering from the
Sent folder with a substring search costs time in proportion to the folder, and matches
wrongly (`bob@x.test` inside `jimbob@x.test`). Instead each process keeps, per account, a
Snapshot of exact lower-case addresses and their domains:

- from the Sent folder(s): the To, Cc and Bcc addresses of the newest SENT_MESSAGES
  messages, read from the ENVELOPE stored with each message at delivery or APPEND (the
  mailstore parsed the addresses once; nothing is parsed again here). So mail sent from
  the webmail, or over SMTP submission and filed by the client with IMAP APPEND, counts
  the same. The snapshot remembers each Sent folder's HIGHESTMODSEQ: when it grew, only
  the messages changed since are read (the folder, modseq index); a recreated folder
  (new UIDVALIDITY) is read again in full.
- from the address book (webmail Contact): the newest CONTACTS keys, read again when the
  account's contacts changed (their count or newest update time).

Checking whether the snapshot is current takes two indexed queries, made at most once
every CHECK_SECONDS per account: a message sent or a contact added counts within a couple
of seconds in every process (at once in the process that made the change, see forget()).
Expunged Sent mail stays counted until the snapshot is rebuilt (more than MAX_ADDRESSES
collected, or the account dropped from the cache): the user did write to those people.
At most MAX_ACCOUNTS snapshots are kept (least recently used dropped first), each of
about MAX_ADDRESSES + CONTACTS addresses at most (a few hundred for most users).
"""
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

SENT = "\\Sent"  # RFC 6154 special-use attribute
SENT_MESSAGES = 1000
CONTACTS = 2000
MAX_ADDRESSES = 5000
MAX_ACCOUNTS = 500
CHECK_SECONDS = 2.0  # a test seam, like clock
clock = time.monotonic

# The envelope's placeholder host for "To: bob" (mailstore.mime.MISSING_HOST): no address.
_MISSING_HOST = ".MISSING-HOST-NAME."


@dataclass
class Snapshot:
    checked_at: float = 0.0
    sent: dict = field(default_factory=dict)  # folder id → (uidvalidity, highestmodseq) read
    sent_addresses: set = field(default_factory=set)
    contacts_version: tuple = ()
    contact_addresses: frozenset = frozenset()
    domains: frozenset = frozenset()


_lock = threading.Lock()
_snapshots = OrderedDict()  # account id → Snapshot


def known(account_id, address):
    """(the user wrote to or keeps `address` as a contact, the same for its domain);
    `address` is lower-case."""
    snapshot = _current(account_id)
    if address in snapshot.sent_addresses or address in snapshot.contact_addresses:
        return True, True
    domain = address.rpartition("@")[2] if "@" in address else ""
    return False, bool(domain) and domain in snapshot.domains


def forget(account_id=None):
    """Drop one account's snapshot (or all): the next question reads the database."""
    with _lock:
        if account_id is None:
            _snapshots.clear()
        else:
            _snapshots.pop(account_id, None)


def _current(account_id):
    now = clock()
    with _lock:
        snapshot = _snapshots.get(account_id)
        if snapshot is not None:
            _snapshots.move_to_end(account_id)
            if now - snapshot.checked_at < CHECK_SECONDS:
                return snapshot
    fresh = _refreshed(account_id, snapshot)
    fresh.checked_at = now
    with _lock:
        _snapshots[account_id] = fresh
        _snapshots.move_to_end(account_id)
        while len(_snapshots) > MAX_ACCOUNTS:
            _snapshots.popitem(last=False)
    return fresh


def _refreshed(account_id, old):
    """A snapshot that is current: `old` where nothing changed, else updated."""
    from django.db import connection

    from mailstore.models import Folder
    from webmail.models import Contact

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, uidvalidity, highestmodseq FROM {Folder._meta.db_table} WHERE account_id = %s AND special_use = %s",
            [account_id, SENT],
        )
        sent = {pk: (uidvalidity, modseq) for pk, uidvalidity, modseq in cursor.fetchall()}
        cursor.execute(f"SELECT COUNT(*), MAX(updated) FROM {Contact._meta.db_table} WHERE account_id = %s", [account_id])
        contacts_version = tuple(cursor.fetchone())
    snapshot = Snapshot() if old is None else Snapshot(
        sent=dict(old.sent), sent_addresses=old.sent_addresses, contacts_version=old.contacts_version,
        contact_addresses=old.contact_addresses, domains=old.domains,
    )
    changed = False
    if sent != snapshot.sent:
        snapshot.sent_addresses = _sent_addresses(snapshot, sent)
        snapshot.sent = sent
        changed = True
    if contacts_version != snapshot.contacts_version or old is None:
        keys = Contact.objects.filter(account_id=account_id).order_by("-updated").values_list("key", flat=True)[:CONTACTS]
        snapshot.contact_addresses = frozenset(key.lower() for key in keys)
        snapshot.contacts_version = contacts_version
        changed = True
    if changed:
        snapshot.domains = frozenset(
            a.rpartition("@")[2] for a in (*snapshot.sent_addresses, *snapshot.contact_addresses) if "@" in a
        )
    return snapshot


def _sent_addresses(snapshot, sent):
    """The addresses of the Sent folders `sent` ({id: (uidvalidity, modseq)}), reading
    only what changed since `snapshot` where it can."""
    from mailstore.models import Message

    addresses = set(snapshot.sent_addresses)
    full = len(addresses) > MAX_ADDRESSES or any(
        pk not in sent or sent[pk][0] != uidvalidity for pk, (uidvalidity, _) in snapshot.sent.items()
    )
    if full:
        addresses = set()
    for pk, (uidvalidity, modseq) in sent.items():
        previous = None if full else snapshot.sent.get(pk)
        if previous is not None and previous[0] == uidvalidity:
            if previous[1] == modseq:
                continue
            # Messages changed or added since (the folder, modseq index); a flood of
            # changes is read like a new folder: the newest messages only.
            rows = list(
                Message.objects.filter(folder_id=pk, modseq__gt=previous[1])
                .order_by("-modseq")
                .values_list("blob__envelope", "to_display", "cc_display")[: SENT_MESSAGES + 1]
            )
            if len(rows) <= SENT_MESSAGES:
                addresses.update(_recipients(rows))
                continue
        rows = (
            Message.objects.filter(folder_id=pk)
            .order_by("-uid")
            .values_list("blob__envelope", "to_display", "cc_display")[:SENT_MESSAGES]
        )
        addresses.update(_recipients(rows))
    return addresses


def _recipients(rows):
    """Lower-case To, Cc and Bcc addresses of (envelope, to_display, cc_display) rows."""
    for envelope, to_display, cc_display in rows:
        if isinstance(envelope, str):
            envelope = json.loads(envelope)
        if envelope:
            # RFC 9051 §7.5.2: ENVELOPE fields 5-7 are To, Cc, Bcc, each a list of
            # [name, adl, mailbox, host]; a NIL host marks a group's start or end.
            for addresses in envelope[5:8]:
                for _name, _adl, mailbox, host in addresses or ():
                    if mailbox and host and host != _MISSING_HOST:
                        yield f"{mailbox}@{host}".lower()
        else:  # a row stored before envelopes were kept: parse the display fields
            import email.utils

            for _, address in email.utils.getaddresses([to_display or "", cc_display or ""]):
                if "@" in address:
                    yield address.lower()
