"""The webmail's writes. Mail goes through mailstore.actions; what only the webmail
keeps (trusted senders) is written here. Each function names what the user did."""
from django.db import IntegrityError, transaction

from mailstore import actions as store
from mailstore.models import Folder, Message
from webmail.mailbox import JUNK, TRASH, special_folder
from webmail.models import TrustedSender

BULK_ACTIONS = ("read", "unread", "flag", "unflag", "move", "delete", "junk", "notjunk")


class ActionError(store.MailstoreError):
    """A request the webmail refuses; the message is one line for the user."""


def _target(account, use):
    folder = special_folder(account, use)
    if folder is None:
        raise ActionError(f"this account has no {use.lstrip(chr(92))} folder")
    return folder


def apply(account, folder, uids, action, *, target=None):
    """Carry out a list or reading-view action on the folder's messages with these UIDs.

    read/unread/flag/unflag set flags; move needs `target` (a Folder of the account);
    delete moves to Trash, or removes for good what is in Trash already; junk moves to
    Junk and notjunk back to INBOX (the mail store records both as training examples).
    Returns the folder the messages went to, if they moved.
    """
    if folder.account_id != account.pk:
        raise ActionError("not your folder")
    uids = sorted({int(uid) for uid in uids})
    if not uids:
        return None
    if action in ("read", "unread"):
        store.store_flags(folder, uids, mode="add" if action == "read" else "remove", flags=["\\Seen"])
    elif action in ("flag", "unflag"):
        store.store_flags(folder, uids, mode="add" if action == "flag" else "remove", flags=["\\Flagged"])
    elif action == "move":
        if target is None or target.account_id != account.pk:
            raise ActionError("choose a folder to move to")
        if target.pk != folder.pk:
            store.move_messages(folder, uids, target.name)
        return target
    elif action == "delete":
        trash = special_folder(account, TRASH)
        if trash is None or folder.pk == trash.pk:
            store.expunge(folder, uids)
            return None
        store.move_messages(folder, uids, trash.name)
        return trash
    elif action == "junk":
        junk = _target(account, JUNK)
        if folder.pk != junk.pk:
            store.move_messages(folder, uids, junk.name)
        return junk
    elif action == "notjunk":
        inbox = Folder.objects.get(account=account, name="INBOX")
        if folder.pk != inbox.pk:
            store.move_messages(folder, uids, inbox.name)
        return inbox
    else:
        raise ActionError(f"unknown action {action!r}")
    return None


def mark_read(folder, uid):
    """Opening a message marks it read (RFC 9051 §6.4.5: as a non-PEEK fetch does)."""
    store.store_flags(folder, [uid], mode="add", flags=["\\Seen"])


def empty_folder(account, folder):
    """Remove every message of a Trash or Junk folder for good."""
    if folder.account_id != account.pk or folder.special_use not in (TRASH, JUNK):
        raise ActionError("only Trash and Junk can be emptied")
    uids = list(Message.objects.filter(folder=folder).values_list("uid", flat=True))
    return store.expunge(folder, uids) if uids else []


def trust_sender(account, address):
    """Always load remote images in mail from `address`."""
    address = (address or "").strip().lower()
    if not address:
        raise ActionError("this message has no sender address")
    try:
        with transaction.atomic():
            TrustedSender.objects.get_or_create(account=account, address=address)
    except IntegrityError:  # created at the same moment by another request
        pass


def distrust_sender(account, address):
    TrustedSender.objects.filter(account=account, address=(address or "").strip().lower()).delete()


def preferences_of(account):
    """The account's webmail Preferences, unsaved defaults when it has none."""
    from webmail.models import Preferences

    return Preferences.objects.filter(account=account).first() or Preferences(account=account)


@transaction.atomic
def set_preferences(account, **values):
    """Change some of signature / remote_content."""
    from webmail.models import Preferences

    allowed = {"signature", "remote_content"}
    if set(values) - allowed:
        raise ActionError(f"unknown preferences: {sorted(set(values) - allowed)}")
    if "remote_content" in values and values["remote_content"] not in Preferences.RemoteContent.values:
        raise ActionError("unknown remote content policy")
    preferences, _created = Preferences.objects.get_or_create(account=account)
    for name, value in values.items():
        setattr(preferences, name, value)
    preferences.full_clean(exclude=["account"])
    preferences.save()
    return preferences
