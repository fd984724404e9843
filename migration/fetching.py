"""Fetching mail from external POP3/IMAP accounts (MRA) into local accounts.

Implementation notes:
- Every write is in migration.actions' style: the fetched message and its FetchedMessage
  row commit together per message, so a fetch stopped anywhere fetches nothing twice.
- A message for INBOX goes through the SMTP path's accept() (quota, Sieve, the spam
  checks as configured); another local folder is delivered into directly.
- No transaction is open while talking to the remote server.
- Bounded: at most FETCH_LIMIT messages per account per run, messages larger than
  MAILSUITE_MESSAGE_SIZE_LIMIT are left on the server; repeated failures back off
  (BACKOFF_BASE doubling, at most BACKOFF_MAX).
"""
import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from accounts.actions import audit as record_audit
from accounts.models import Account
from accounts.resolve import Resolution
from mailsuite.lib import secrets
from mailstore import actions as store
from migration.models import ExternalAccount, FetchedMessage
from migration.remote import DEFAULT_PORTS, TLS_MODES, IMAPClient, POP3Client, RemoteError, quote, sequence_set

log = logging.getLogger(__name__)

FETCH_LIMIT = 500
INTERVAL = timedelta(minutes=5)  # between successful fetches
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_MAX = timedelta(hours=6)


# What update_external_account() changes (and the audit log shows), besides the password.
EDITABLE = ("protocol", "host", "port", "tls", "verify_certificate", "username", "remote_folders", "local_folder",
            "keep", "enabled")


class ExternalAccountError(Exception):
    """A request about external accounts refused; the message is one line for the user and
    `field` the setting it is about (None when it is about the request as a whole)."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field


def check_settings(account, *, protocol, host, username, port, tls, local_folder):
    """The settings an external account may have, as stored: the port filled in (None is
    the protocol's usual one for the TLS mode) and the local folder's name normalised (a
    local_folder of None is not checked); else ExternalAccountError naming the setting."""
    if protocol not in ("pop3", "imap"):
        raise ExternalAccountError(f"unknown protocol {protocol!r}: pop3 or imap", "protocol")
    if tls not in TLS_MODES:
        raise ExternalAccountError(f"unknown TLS mode {tls!r}: implicit, starttls or none", "tls")
    if not host:
        raise ExternalAccountError("the host is required", "host")
    if not username:
        raise ExternalAccountError("the user name is required", "username")
    if port is not None and not 1 <= port <= 65535:
        raise ExternalAccountError(f"port {port} is not between 1 and 65535", "port")
    checked = {"port": port or DEFAULT_PORTS[(protocol, tls)]}
    if local_folder is not None:
        checked["local_folder"] = store.normalise_folder_name(local_folder)
        if not account.folders.filter(name=checked["local_folder"]).exists():
            raise ExternalAccountError(f"folder {checked['local_folder']} does not exist", "local_folder")
    return checked


def add_external_account(account, *, acting_user, protocol, host, username, password, port=None, tls="implicit",
                         verify_certificate=True, remote_folders="", local_folder="INBOX", keep=True, enabled=True):
    """A new external account of `account`, recorded in the audit log under acting_user (see
    audit), together. Refused with ExternalAccountError, adding nothing."""
    if not password:
        raise ExternalAccountError("the password is required", "password")
    checked = check_settings(account, protocol=protocol, host=host, username=username, port=port, tls=tls,
                             local_folder=local_folder)
    with transaction.atomic():
        external = ExternalAccount.objects.create(
            account=account, protocol=protocol, host=host, tls=tls, verify_certificate=verify_certificate,
            username=username, password=secrets.encrypt(password), remote_folders=remote_folders, keep=keep,
            enabled=enabled, **checked,
        )
        audit(acting_user, "external.add", external, after=audit_snapshot(external))
    return external


def update_external_account(external, *, acting_user, **changes):
    """Change an external account's settings (any of EDITABLE; a `password` that is empty
    or None keeps the stored one) and record the change in the audit log under acting_user,
    together. A port of None is the usual one for the (new) protocol and TLS mode.
    Refused with ExternalAccountError, changing nothing; a call that changes nothing
    writes nothing."""
    unknown = set(changes) - set(EDITABLE) - {"password"}
    if unknown:
        raise TypeError(f"not a setting of an external account: {', '.join(sorted(unknown))}")
    password = changes.pop("password", None)
    before = audit_snapshot(external)
    wanted = {**before, **changes}
    # The local folder is checked when it changes: one removed since does not stop other changes.
    wanted.update(check_settings(
        external.account, protocol=wanted["protocol"], host=wanted["host"], username=wanted["username"],
        port=wanted["port"], tls=wanted["tls"], local_folder=changes.get("local_folder"),
    ))
    changed = [name for name in EDITABLE if wanted[name] != before[name]]
    if not changed and not password:
        return external
    with transaction.atomic():
        for name in changed:
            setattr(external, name, wanted[name])
        if changed:
            external.save(update_fields=changed)
        if password:
            set_password(external, password)
        after = audit_snapshot(external) | ({"password": "changed"} if password else {})
        audit(acting_user, "external.change", external, before=before, after=after)
    return external


def set_password(external, password):
    """Give an external account a new password, stored encrypted. A saved account that was
    backing off after failures (a wrong password, most likely) is tried again by the next
    periodic run; an unsaved one gets the password when it is saved."""
    if not password:
        raise ExternalAccountError("the password must not be empty")
    external.password = secrets.encrypt(password)
    if external.pk is not None:
        external.next_attempt = None
        ExternalAccount.objects.filter(pk=external.pk).update(password=external.password, next_attempt=None)
    return external


def audit_snapshot(external):
    """An external account's settings for the audit log: never its password."""
    return {name: getattr(external, name) for name in EDITABLE}


@dataclass(frozen=True)
class _MailAccountActor:
    """A mail account changing its own external accounts in the webmail: it is no Django
    user, so the audit entry names its address and links no user."""

    address: str
    pk = None

    def get_username(self):
        return self.address[:150]  # AuditEntry.actor_name's length


def audit(acting_user, action, external, **changes):
    """Record a change to an external account (external.add/change/remove) under
    acting_user: a Django user, the mail account itself (the webmail), or None (the system)."""
    if isinstance(acting_user, Account):
        acting_user = _MailAccountActor(acting_user.address)
    record_audit(acting_user, action, f"{external.username}@{external.host} for {external.account.address}",
                 domain=external.account.domain, **changes)


def test_connection(external):
    """Log in to the external account and look around, without fetching: a one-line
    description of what is there, or RemoteError (ValueError if the stored password
    cannot be decrypted)."""
    password = secrets.decrypt(external.password)
    if external.protocol == "pop3":
        with POP3Client(external.host, external.port, tls=external.tls, user=external.username, password=password,
                        verify=external.verify_certificate) as client:
            listing = client.listing()
        return ngettext("logged in: %(count)d message on the server", "logged in: %(count)d messages on the server",
                        len(listing)) % {"count": len(listing)}
    with IMAPClient(external.host, external.port, tls=external.tls, user=external.username, password=password,
                    verify=external.verify_certificate) as client:
        folders = client.folders()
    wanted = [line.strip() for line in external.remote_folders.splitlines() if line.strip()] or ["INBOX"]
    names = {f.name for f in folders}
    missing = [name for name in wanted if name != "*" and name not in names]
    if missing:
        raise RemoteError(gettext("logged in, but there is no folder %(folder)r on %(host)s") % {"folder": missing[0], "host": external.host})
    return ngettext("logged in: %(count)d folder on the server", "logged in: %(count)d folders on the server",
                    len(folders)) % {"count": len(folders)}


def remove_external_account(external, *, acting_user):
    """Remove an external account (its FetchedMessage rows go with it), recorded in the audit
    log under acting_user, together."""
    with transaction.atomic():
        audit(acting_user, "external.remove", external, before=audit_snapshot(external))
        external.delete()


def _deliver(external, raw):
    """Store one fetched message for the external account's owner (in the caller's transaction)."""
    from mta import inbound

    account = external.account
    if external.local_folder == "INBOX":
        match = re.search(rb"^Return-Path:\s*<([^>\r\n]*)>", raw[:8192], re.M | re.I)
        mail_from = match[1].decode("utf-8", "replace") if match else ""
        resolution = Resolution(address=account.address, accounts={account.pk: account})
        reply = inbound.accept([{"raw": raw, "mail_from": mail_from, "resolutions": [resolution], "client_ip": None}])[0]
        if not reply.startswith("250"):
            raise RemoteError(f"local delivery refused: {reply}")
        return
    outcome = store.deliver(raw, [store.Recipient(account, account.address, external.local_folder)], return_path="")[0]
    if outcome.error:
        raise outcome.error


def _store(external, remote_id, raw):
    """Deliver and remember one message, together: a failure leaves it to fetch again."""
    with transaction.atomic():
        _deliver(external, raw)
        FetchedMessage.objects.create(external=external, remote_id=remote_id[:1100])


def _fetch_pop3(external, password):
    count = 0
    with POP3Client(external.host, external.port, tls=external.tls, user=external.username, password=password,
                    verify=external.verify_certificate) as client:
        listing = client.listing()
        known = set(FetchedMessage.objects.filter(external=external, remote_id__in=[uid for _, uid, _ in listing])
                    .values_list("remote_id", flat=True))
        for number, uid, size in listing:
            if uid in known:
                if not external.keep:
                    client.delete(number)
                continue
            if size > settings.MAILSUITE_MESSAGE_SIZE_LIMIT or count >= FETCH_LIMIT:
                continue
            raw = client.retrieve(number)
            _store(external, uid, raw)
            count += 1
            if not external.keep:
                client.delete(number)
    return count


def _fetch_imap(external, password):
    count = 0
    with IMAPClient(external.host, external.port, tls=external.tls, user=external.username, password=password,
                    verify=external.verify_certificate) as client:
        wanted = [line.strip() for line in external.remote_folders.splitlines() if line.strip()] or ["INBOX"]
        folders = [f for f in client.folders() if "*" in wanted or f.name in wanted]
        for folder in folders:
            uidvalidity, _ = client.examine(folder)
            if not external.keep:
                client.call(f"SELECT {folder.name}", client.conn.select, quote(folder.encoded))
            # Unit separators between the parts: PostgreSQL text cannot hold NUL.
            prefix = f"{folder.name}\x1f{uidvalidity}\x1f"
            known = {int(r.rsplit("\x1f", 1)[1]) for r in FetchedMessage.objects.filter(
                external=external, remote_id__startswith=prefix).values_list("remote_id", flat=True)}
            todo = [uid for uid in client.uids() if uid not in known][: FETCH_LIMIT - count]
            for start in range(0, len(todo), 50):
                sizes = client.fetch(todo[start : start + 50], "UID RFC822.SIZE")
                small = [m.uid for m in sizes if m.size <= settings.MAILSUITE_MESSAGE_SIZE_LIMIT]
                for message in client.fetch(small, "UID BODY.PEEK[]"):
                    if message.raw is None:
                        continue
                    _store(external, f"{prefix}{message.uid}", message.raw)
                    count += 1
                if not external.keep and small:
                    client.call("UID STORE", client.conn.uid, "STORE", sequence_set(small), "+FLAGS.SILENT", "(\\Deleted)")
            if not external.keep and todo:
                client.call("EXPUNGE", client.conn.expunge)
    return count


def fetch_external(external):
    """Fetch what is new on one external account; record success or the error and the
    next attempt (backoff on repeated failures). Returns the number of messages fetched."""
    now = timezone.now()
    try:
        password = secrets.decrypt(external.password)
        fetch = _fetch_pop3 if external.protocol == "pop3" else _fetch_imap
        count = fetch(external, password)
    except (RemoteError, ValueError, store.MailstoreError) as error:
        failures = external.failures + 1
        delay = min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX)
        ExternalAccount.objects.filter(pk=external.pk).update(
            last_attempt=now, last_error=str(error)[:1000], failures=failures, next_attempt=now + delay,
        )
        log.warning("fetching %s@%s failed (%d in a row): %s", external.username, external.host, failures, error)
        external.refresh_from_db()
        return 0
    ExternalAccount.objects.filter(pk=external.pk).update(
        last_attempt=now, last_success=now, last_error="", failures=0, next_attempt=now + INTERVAL,
    )
    external.refresh_from_db()
    return count


def fetch_due(now=None):
    """Fetch every enabled external account whose next attempt is due (the periodic task)."""
    now = now or timezone.now()
    due = (
        ExternalAccount.objects.filter(enabled=True)
        .filter(Q(next_attempt__isnull=True) | Q(next_attempt__lte=now))
        .select_related("account", "account__domain")
        .order_by("next_attempt")[:200]
    )
    return {external.pk: fetch_external(external) for external in due}
