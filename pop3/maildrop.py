"""The maildrop behind a POP3 session: logins, the lock, the snapshot, deletions at QUIT.

Synchronous functions over the ORM; pop3.session runs them with run_sync, never on the
event loop.

Implementation notes
--------------------
- The maildrop is the account's INBOX. A session works on a snapshot taken when it
  logs in (message numbers 1..n in UID order, RFC 1939 §5): deliveries and IMAP changes
  meanwhile do not renumber it. A message IMAP expunges meanwhile is still readable
  until its bytes are swept; deleting it again at QUIT is a no-op.
- UIDL is "<INBOX UIDVALIDITY>.<UID>" (RFC 1939 §7: 1-70 characters 0x21-0x7E). It is
  the IMAP identity of the message, so it never changes while the message lives,
  is never reused (UIDs are not), and changes for every message only when INBOX is
  recreated — exactly when IMAP clients must forget their cache too.
- The exclusive-access lock (RFC 1939 §8) is a lease in the database (MaildropLock),
  so it holds across processes and machines. Taking it is one guarded UPDATE (the row
  is free, or its lease ran out) in a short write transaction; the row is created on
  an account's first POP3 login. The session renews it every LOCK_LEASE_SECONDS / 3 and
  gives it up at the end; a crashed session's lease simply expires. Node clocks must
  agree to well within a lease (NTP), as the login throttle already assumes.
- A login costs three short write transactions, the reason to keep each to a statement
  or two: the login audit (accounts.auth), taking the lease, and QUIT (giving the lease
  up, with the session's changes if there are any). When the password hash runs
  (Argon2id, in accounts.auth; skipped for a password verified moments ago) it costs
  more than all of them together: see bench/RESULTS.md, POP3.
- The session's changes happen only at QUIT (RFC 1939 §6), in one transaction that
  first gives up the lease, which must still be ours, then marks the messages RETR sent
  \\Seen (mailstore.actions.store_flags, as Dovecot does) and removes those marked
  deleted (mailstore.actions.expunge, the one way to delete mail). Anything else (a
  dropped connection, autologout, a lost lease) changes nothing.
- Sizes are the octets of the canonical form (pop3.responses.octets), exact with CRLF.
  A Blob's count is computed from its bytes once and kept in BlobOctets; the trace
  prefix's is computed from the bytes the snapshot holds anyway.
- Logins go through accounts.auth (the shared throttle and audit) with service "pop3".
  Neither passwords nor the APOP secret nor SASL payloads are logged.
"""
import hashlib
import hmac
import logging
import secrets as token_secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.auth import authenticate, check_login_allowed, login_account, record_login
from mailsuite.lib import secrets as stored_secrets
from mailstore.actions import expunge, store_flags
from mailstore.models import Folder, Message
from mailstore.storage import blob_storage
from pop3 import responses
from pop3.models import BlobOctets, MaildropLock

log = logging.getLogger(__name__)

SERVICE = "pop3"
MAILDROP = "INBOX"

# Seams (tests set them): the clock of the lock, and how long a lease lasts unrenewed.
now = timezone.now
LOCK_LEASE_SECONDS = 120


class MaildropError(Exception):
    """The maildrop cannot be opened or committed; `code` is the RFC 2449 §8 response code."""

    code = "SYS/TEMP"


class MaildropInUse(MaildropError):
    code = "IN-USE"  # RFC 2449 §8.1.2


class LoginTooSoon(MaildropError):
    code = "LOGIN-DELAY"  # RFC 2449 §8.1.1

    def __init__(self, delay):
        super().__init__(f"minimum time between logins is {delay} seconds")
        self.delay = delay


class LockLost(MaildropError):
    """Our lease expired and may belong to another session now."""


@dataclass(frozen=True)
class Login:
    account_id: int
    address: str


def _login(account):
    return Login(account.pk, account.address) if account is not None else None


# --- Logins ----------------------------------------------------------------------------


def password_login(username, password, *, remote_ip):
    """USER/PASS, AUTH PLAIN and AUTH LOGIN: a Login or None; raises LoginThrottled."""
    return _login(authenticate(username, password, service=SERVICE, remote_ip=remote_ip))


def apop_digest(timestamp, secret):
    """RFC 1939 §7: MD5 of the greeting's timestamp followed by the shared secret, in lower-case hex."""
    return hashlib.md5((timestamp + secret).encode("utf-8")).hexdigest()


def apop_login(name, digest, *, timestamp, remote_ip):
    """APOP: a Login or None; raises LoginThrottled. Counted like any password failure."""
    check_login_allowed(name, remote_ip, service=SERVICE)
    account = login_account(name)  # None for unknown, disabled and password-less accounts
    secret = None
    if account is not None and account.apop_secret:
        try:
            secret = stored_secrets.decrypt(account.apop_secret)
        except ValueError:
            log.error("unreadable APOP secret account=%s (was SECRET_KEY changed?)", account.address)
    # Unknown users and accounts without APOP cost the same digest as a real check.
    expected = apop_digest(timestamp, secret if secret else token_secrets.token_hex(16))
    success = bool(secret) and hmac.compare_digest(expected, digest)
    record_login(name, service=SERVICE, remote_ip=remote_ip, success=success, account=account)
    return _login(account) if success else None


def scram_login(exchange):
    """The Login after a successful SCRAM exchange (accounts.auth.ScramExchange)."""
    return _login(exchange.login())


def new_holder():
    """A name for one session's lease, unique across processes and machines."""
    return f"{settings.MAILSUITE_HOSTNAME}:{token_secrets.token_hex(8)}"[:100]


def _take_lock(account_id, holder, at, login_delay):
    """Give the lease to `holder` if the row exists and is free (and LOGIN-DELAY allows); True if it did."""
    free = Q(holder="") | Q(expires__lte=at)
    if login_delay:
        free &= Q(last_login__isnull=True) | Q(last_login__lte=at - timedelta(seconds=login_delay))
    taken = MaildropLock.objects.filter(free, account_id=account_id).update(
        holder=holder, expires=at + timedelta(seconds=LOCK_LEASE_SECONDS), last_login=at
    )
    return bool(taken)


@transaction.atomic
def acquire_lock(account_id, holder, *, login_delay=0):
    """Take the account's maildrop for `holder`; raises MaildropInUse or LoginTooSoon.

    One UPDATE when the account's row exists. The UPDATE's condition is checked with the
    row locked (SQLite: the whole write transaction; PostgreSQL: the row, re-checked after
    a concurrent writer commits), so two sessions can never both get the lease.
    """
    at = now()
    if _take_lock(account_id, holder, at, login_delay):
        return
    # The first POP3 login of this account: create the row, free. ignore_conflicts: when
    # two first logins race, one insert wins and both UPDATEs then see the same row.
    MaildropLock.objects.bulk_create([MaildropLock(account_id=account_id, expires=at)], ignore_conflicts=True)
    if _take_lock(account_id, holder, at, login_delay):
        return
    lock = MaildropLock.objects.get(account_id=account_id)
    if lock.holder and lock.expires > at:
        raise MaildropInUse("maildrop is locked by another session")
    raise LoginTooSoon(login_delay)


@transaction.atomic
def renew_lock(account_id, holder):
    """Extend our lease; False if it is no longer ours."""
    at = now()
    return bool(
        MaildropLock.objects.filter(account_id=account_id, holder=holder, expires__gt=at).update(
            expires=at + timedelta(seconds=LOCK_LEASE_SECONDS)
        )
    )


@transaction.atomic
def release_lock(account_id, holder):
    """Give the maildrop up (nothing happens if the lease is no longer ours)."""
    MaildropLock.objects.filter(account_id=account_id, holder=holder).update(holder="", expires=now())


# --- The snapshot ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One message of the snapshot."""

    uid: int
    octets: int
    blob_name: str
    prefix: bytes
    seen: bool  # when the session began: RETR of an unseen message marks it \Seen at QUIT
    # Prefix and stored bytes are canonical already (CRLF everywhere, a complete last line)
    # and the prefix ends a line: RETR sends them as they are, without a copy.
    canonical: bool = False


@dataclass(frozen=True)
class Maildrop:
    folder_id: int
    uidvalidity: int
    entries: tuple  # of Entry; message number n is entries[n - 1]

    def unique_id(self, entry):
        return f"{self.uidvalidity}.{entry.uid}"  # RFC 1939 §7 UIDL


def _read_blob(name):
    with blob_storage().open(name, "rb") as f:
        return f.read()


def open_maildrop(account_id):
    """The snapshot of the account's INBOX: one query (two if INBOX is empty), plus one
    read per never-counted Blob."""
    rows = list(
        Message.objects.filter(folder__account_id=account_id, folder__name=MAILDROP)
        .order_by("uid")
        .values_list(
            "folder_id", "folder__uidvalidity", "uid", "prefix", "seen",
            "blob_id", "blob__name", "blob__size", "blob__pop3_octets__octets",
        )
    )
    if rows:
        folder_id, uidvalidity = rows[0][:2]
    else:
        folder = Folder.objects.filter(account_id=account_id, name=MAILDROP).values_list("pk", "uidvalidity").first()
        if folder is None:
            raise MaildropError("the mailbox has no INBOX")
        folder_id, uidvalidity = folder
    counted = {}
    for *_, blob_id, name, size, known in rows:
        if known is None and size and blob_id not in counted:
            counted[blob_id] = responses.octets(_read_blob(name))
    if counted:
        BlobOctets.objects.bulk_create(
            [BlobOctets(blob_id=blob_id, octets=value) for blob_id, value in counted.items()], ignore_conflicts=True
        )
    entries = []
    for _, _, uid, prefix, seen, blob_id, name, size, known in rows:
        prefix = bytes(prefix)
        if not size:
            total = responses.octets(prefix)
        elif not prefix or prefix.endswith(b"\n"):
            total = responses.line_end_octets(prefix) + (known if known is not None else counted[blob_id])
        else:  # a prefix that ends mid-line: count the joined bytes (never made by our MDA)
            total = responses.octets(prefix + _read_blob(name))
        # octets() adds to the length exactly what canonical() would add: equal means nothing to add.
        canonical = total == len(prefix) + size and (not prefix or prefix.endswith(b"\n"))
        entries.append(Entry(uid=uid, octets=total, blob_name=name, prefix=prefix, seen=seen, canonical=canonical))
    return Maildrop(folder_id=folder_id, uidvalidity=uidvalidity, entries=tuple(entries))


def lock_and_open(account_id, holder, *, login_delay=0):
    """acquire_lock, then open_maildrop; the lock is given up again if opening fails."""
    acquire_lock(account_id, holder, login_delay=login_delay)
    try:
        return open_maildrop(account_id)
    except BaseException:
        release_lock(account_id, holder)
        raise


def read_message_parts(entry):
    """The message in canonical form (pop3.responses.canonical) as pieces that each start
    a line: the prefix and the stored bytes as they are when both are canonical already
    (what SMTP delivers), else the one joined and mended piece. No database access.

    Raises FileNotFoundError if its bytes were swept after another client removed it.
    """
    data = _read_blob(entry.blob_name)
    if entry.canonical:
        return (entry.prefix, data) if entry.prefix else (data,)
    return (responses.canonical(entry.prefix + data if entry.prefix else data),)


# --- QUIT ------------------------------------------------------------------------------


@transaction.atomic
def commit_update(account_id, holder, folder_id, *, deleted=(), seen=()):
    """The UPDATE state (RFC 1939 §6): give up the lock, mark the UIDs in `seen` \\Seen and
    remove those in `deleted`, all or nothing.

    Raises LockLost, changing nothing, if the lease is no longer ours. Returns the UIDs
    removed (those another client removed meanwhile are not among them).
    """
    at = now()
    # Giving the lease up first locks its row (PostgreSQL) until we commit: nobody can
    # take the maildrop between this check and our changes.
    if not MaildropLock.objects.filter(account_id=account_id, holder=holder, expires__gt=at).update(
        holder="", expires=at
    ):
        raise LockLost("the maildrop lock expired")
    folder = Folder(pk=folder_id, account_id=account_id)
    if seen:
        store_flags(folder, list(seen), mode="add", flags=["\\Seen"])
    return expunge(folder, list(deleted)) if deleted else []
