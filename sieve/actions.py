"""Every change to Sieve scripts goes through here: ManageSieve, the CLI, the admin, the
webmail (sieve.rules builds the text) and the tests.

Implementation notes:
- A script is checked (sieve.compiler) before it is stored; the stored text is always
  valid for the extensions of this server. A script that stops being valid (an
  extension removed) fails at delivery and the message goes to INBOX.
- "One active script per account" is a database constraint; set_active() clears the
  old one and sets the new one in one transaction, with the account row locked, so
  concurrent SETACTIVEs cannot leave two.
- Per-account limits (MAX_SCRIPTS, MAX_SCRIPT_OCTETS) are what HAVESPACE answers
  (RFC 5804 §2.3) and PUTSCRIPT enforces.
"""
import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account
from sieve.compiler import check_script_name, compile_script
from sieve.models import GlobalScript, SieveScript, VacationReply
from sieve.parser import ParseError

log = logging.getLogger(__name__)

MAX_SCRIPTS = 20  # per account
MAX_SCRIPT_OCTETS = 256 * 1024  # per script (UTF-8)


class SieveError(Exception):
    """A request about scripts that cannot be carried out; the message is one line for the user.
    `code` is the RFC 5804 §1.3 response code ManageSieve answers with."""

    code = None


class InvalidScript(SieveError):
    """The text is not a valid script; `error` is the ParseError with line and column."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class InvalidName(SieveError):
    pass


class NoSuchScript(SieveError):
    code = "NONEXISTENT"


class ScriptExists(SieveError):
    code = "ALREADYEXISTS"


class ScriptActive(SieveError):
    code = "ACTIVE"


class QuotaExceeded(SieveError):
    """`code` is QUOTA/MAXSCRIPTS or QUOTA/MAXSIZE (RFC 5804 §1.3)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def check_name(name):
    reason = check_script_name(name)
    if reason:
        raise InvalidName(reason)


def check_text(text):
    """The compiled Program, or InvalidScript with the line and column of the error."""
    try:
        return compile_script(text)
    except ParseError as error:
        raise InvalidScript(error) from None


def space_refusal(account, name, size):
    """None if `account` may store a script `name` of `size` octets, else QuotaExceeded."""
    if size > MAX_SCRIPT_OCTETS:
        return QuotaExceeded(f"a script is at most {MAX_SCRIPT_OCTETS} octets", "QUOTA/MAXSIZE")
    others = SieveScript.objects.filter(account=account).exclude(name=name).count()
    if others >= MAX_SCRIPTS:
        return QuotaExceeded(f"an account has at most {MAX_SCRIPTS} scripts", "QUOTA/MAXSCRIPTS")
    return None


def _lock_account(account):
    return Account.objects.select_for_update().get(pk=account.pk)


@transaction.atomic
def put_script(account, name, text, *, activate=False):
    """Store (create or replace) a valid script; with activate=True it becomes the active one.

    Raises InvalidName, InvalidScript, QuotaExceeded.
    """
    check_name(name)
    check_text(text)
    account = _lock_account(account)
    refusal = space_refusal(account, name, len(text.encode("utf-8")))
    if refusal:
        raise refusal
    script, created = SieveScript.objects.get_or_create(account=account, name=name, defaults={"text": text})
    if not created and script.text != text:
        script.text = text
        script.save(update_fields=["text", "updated"])
    if activate and not script.active:
        _activate(account, script)
    log.info("sieve script %s account=%s name=%r%s", "stored" if created else "replaced", account.address, name,
             " (active)" if script.active else "")
    return script


def _activate(account, script):
    SieveScript.objects.filter(account=account, active=True).exclude(pk=script.pk).update(active=False)
    SieveScript.objects.filter(pk=script.pk).update(active=True)
    script.active = True


@transaction.atomic
def set_active(account, name):
    """RFC 5804 §2.8 SETACTIVE: make `name` the active script; "" deactivates every script.

    Raises NoSuchScript.
    """
    account = _lock_account(account)
    if name == "":
        SieveScript.objects.filter(account=account, active=True).update(active=False)
        log.info("sieve scripts deactivated account=%s", account.address)
        return None
    script = SieveScript.objects.filter(account=account, name=name).first()
    if script is None:
        raise NoSuchScript(f'there is no script "{name}"')
    _activate(account, script)
    log.info("sieve script activated account=%s name=%r", account.address, name)
    return script


@transaction.atomic
def delete_script(account, name):
    """RFC 5804 §2.10 DELETESCRIPT: the active script cannot be deleted (deactivate it first).

    Raises NoSuchScript, ScriptActive.
    """
    account = _lock_account(account)
    script = SieveScript.objects.filter(account=account, name=name).first()
    if script is None:
        raise NoSuchScript(f'there is no script "{name}"')
    if script.active:
        raise ScriptActive("the active script cannot be deleted")
    script.delete()
    log.info("sieve script deleted account=%s name=%r", account.address, name)


@transaction.atomic
def rename_script(account, old_name, new_name):
    """RFC 5804 §2.11.1 RENAMESCRIPT: the script keeps its text and whether it is active.

    Raises InvalidName, NoSuchScript, ScriptExists.
    """
    check_name(new_name)
    account = _lock_account(account)
    script = SieveScript.objects.filter(account=account, name=old_name).first()
    if script is None:
        raise NoSuchScript(f'there is no script "{old_name}"')
    if old_name == new_name:
        return script
    if SieveScript.objects.filter(account=account, name=new_name).exists():
        raise ScriptExists(f'a script "{new_name}" already exists')
    script.name = new_name
    script.save(update_fields=["name", "updated"])
    log.info("sieve script renamed account=%s %r -> %r", account.address, old_name, new_name)
    return script


def get_script(account, name):
    script = SieveScript.objects.filter(account=account, name=name).first()
    if script is None:
        raise NoSuchScript(f'there is no script "{name}"')
    return script


def active_script(account):
    """The account's active SieveScript, or None."""
    return SieveScript.objects.filter(account=account, active=True).first()


# --- The operator's global scripts ---------------------------------------------------------


@transaction.atomic
def set_global_script(name, text, *, position=""):
    """Store a global script: run "before" or "after" every user script, or "" (only
    reachable by include :global). Another script at that position loses it.

    Raises InvalidName, InvalidScript.
    """
    check_name(name)
    check_text(text)
    if position not in GlobalScript.Position.values:
        raise SieveError(f"position must be before, after or empty, not {position!r}")
    if position:
        GlobalScript.objects.filter(position=position).exclude(name=name).update(position="")
    script, _ = GlobalScript.objects.update_or_create(name=name, defaults={"text": text, "position": position})
    log.info("global sieve script stored name=%r position=%s", name, position or "include-only")
    return script


@transaction.atomic
def delete_global_script(name):
    if not GlobalScript.objects.filter(name=name).delete()[0]:
        raise NoSuchScript(f'there is no global script "{name}"')


# --- Vacation bookkeeping --------------------------------------------------------------------


def vacation_recently_sent(account_id, sender, handle, days, now=None):
    """Has the account answered `sender` with this vacation within `days`? (a read, no lock)"""
    now = now or timezone.now()
    return VacationReply.objects.filter(
        account_id=account_id, sender=sender.lower(), handle=handle, sent_at__gt=now - timedelta(days=days)
    ).exists()


def record_vacation_reply(account_id, sender, handle, days, now=None):
    """In the caller's transaction: note a reply to `sender` now, unless one was sent
    within `days`. Returns True when the caller should send it.

    The row is locked (or created) first, so of two deliveries racing for the same
    sender only one sends (RFC 5230 §4.2).
    """
    assert transaction.get_connection().in_atomic_block, "record_vacation_reply() needs the caller's transaction"
    now = now or timezone.now()
    sender = sender.lower()[:320]
    rows = VacationReply.objects.select_for_update()
    row = rows.filter(account_id=account_id, sender=sender, handle=handle).first()
    if row is None:
        try:
            with transaction.atomic():
                VacationReply.objects.create(account_id=account_id, sender=sender, handle=handle, sent_at=now)
            return True
        except IntegrityError:
            row = rows.get(account_id=account_id, sender=sender, handle=handle)
    if row.sent_at > now - timedelta(days=days):
        return False
    VacationReply.objects.filter(pk=row.pk).update(sent_at=now)
    return True


def prune_vacation_replies(older_than_days=365):
    """Forget replies older than any :days a script may ask for (a periodic task's job)."""
    before = timezone.now() - timedelta(days=older_than_days)
    return VacationReply.objects.filter(sent_at__lt=before).delete()[0]
