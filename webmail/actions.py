"""The webmail's writes. Mail goes through mailstore.actions; what only the webmail
keeps (trusted senders, preferences, the address book) is written here. Each function
names what the user did."""
import email.utils
import re

from django.db import IntegrityError, transaction
from django.db.models.functions import Substr

from mailstore import actions as store
from mailstore.models import Folder, Message
from webmail.mailbox import DRAFTS, JUNK, SENT, TRASH, conversation_folders, special_folder
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


# What the conversation page does to a whole conversation (apply_to_conversation).
CONVERSATION_ACTIONS = ("read", "unread", "move", "delete", "junk", "notjunk")


def apply_to_conversation(account, folder, thread_key, action, *, target=None):
    """Carry out an action of the conversation page on the conversation `thread_key` as
    seen from `folder`. Read and unread take its messages in every folder the page shows
    (conversation_folders: a reply in Sent too), all or none; move, delete, junk and not
    spam take its messages in `folder`, as a conversation row's bulk action in the list
    does (what is in Sent stays there). Returns the folder they went to, if they moved."""
    if folder.account_id != account.pk:
        raise ActionError("not your folder")
    if action not in CONVERSATION_ACTIONS:
        raise ActionError(f"unknown action {action!r}")
    if action not in ("read", "unread"):
        uids = Message.objects.filter(folder=folder, thread_key=thread_key).values_list("uid", flat=True)[:10_000]
        return apply(account, folder, list(uids), action, target=target)
    by_folder = {}
    found = Message.objects.filter(folder_id__in=conversation_folders(account, folder), thread_key=thread_key)
    for folder_id, uid in found.values_list("folder_id", "uid")[:10_000]:
        by_folder.setdefault(folder_id, []).append(uid)
    folders = Folder.objects.filter(account=account).in_bulk(list(by_folder))
    with transaction.atomic():  # folder by folder in id order, the mail store's lock order
        for folder_id in sorted(by_folder):
            store.store_flags(folders[folder_id], by_folder[folder_id], mode="add" if action == "read" else "remove", flags=["\\Seen"])
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
    """Change some of signature / remote_content / conversations."""
    from webmail.models import Preferences

    allowed = {"signature", "remote_content", "conversations"}
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


# The address book -----------------------------------------------------------------------------

MAX_CONTACTS = 10000


def _contact_key(address):
    address = (address or "").strip()
    if "@" not in address or len(address) > 320 or any(ch in address for ch in " <>,;\r\n"):
        raise ActionError(f"{address!r} is not an email address")
    return address, address.lower()


@transaction.atomic
def save_contact(account, address, name="", *, contact_id=None):
    """Add a contact, or change one (contact_id); returns it."""
    from webmail.models import Contact

    address, key = _contact_key(address)
    name = (name or "").strip()[:200]
    clash = Contact.objects.filter(account=account, key=key)
    if contact_id is not None:
        contact = Contact.objects.filter(account=account, pk=contact_id).first()
        if contact is None:
            raise ActionError("no such contact")
        if clash.exclude(pk=contact.pk).exists():
            raise ActionError(f"{address} is in the address book already")
        contact.address, contact.key, contact.name, contact.collected = address, key, name, False
        contact.save()
        return contact
    if clash.exists():
        raise ActionError(f"{address} is in the address book already")
    if Contact.objects.filter(account=account).count() >= MAX_CONTACTS:
        raise ActionError("the address book is full")
    return Contact.objects.create(account=account, address=address, key=key, name=name)


@transaction.atomic
def delete_contact(account, contact_id):
    from webmail.models import Contact

    Contact.objects.filter(account=account, pk=contact_id).delete()


@transaction.atomic
def import_contacts(account, cards):
    """Add the (name, [addresses]) of parsed vCards; existing addresses get the card's
    name if they had none. Returns how many were added."""
    from webmail.models import Contact

    existing = {c.key: c for c in Contact.objects.filter(account=account)}
    added = []
    for name, addresses in cards:
        for address in addresses:
            try:
                address, key = _contact_key(address)
            except ActionError:
                continue
            if key in existing:
                if name and not existing[key].name:
                    existing[key].name = name[:200]
                    existing[key].save(update_fields=["name", "updated"])
                continue
            if len(existing) >= MAX_CONTACTS:
                break
            contact = Contact(account=account, address=address, key=key, name=(name or "")[:200])
            existing[key] = contact
            added.append(contact)
    Contact.objects.bulk_create(added, ignore_conflicts=True)
    return len(added)


def record_correspondents(account, pairs):
    """Collect the (name, address) people the user wrote to; never overwrites an entry."""
    from webmail.models import Contact

    rows = []
    for name, address in pairs:
        try:
            address, key = _contact_key(address)
        except ActionError:
            continue
        rows.append(Contact(account=account, address=address, key=key, name=(name or "")[:200], collected=True))
    if rows and Contact.objects.filter(account=account).count() < MAX_CONTACTS:
        Contact.objects.bulk_create(rows, ignore_conflicts=True)


def collect_senders(account, limit=2000):
    """Add the senders of the account's most recent received mail (not Sent, Drafts,
    Junk or Trash) as collected contacts; returns how many were new."""
    from mailstore.models import Message
    from webmail.models import Contact

    before = Contact.objects.filter(account=account).count()
    skipped = ["\\Sent", "\\Drafts", "\\Junk", "\\Trash"]
    senders = (
        Message.objects.filter(folder__account=account).exclude(folder__special_use__in=skipped)
        .exclude(from_address="").order_by("-pk").values_list("from_address", flat=True)[:limit]
    )
    record_correspondents(account, [("", address) for address in dict.fromkeys(senders)])
    return Contact.objects.filter(account=account).count() - before


# Collecting correspondents automatically ------------------------------------------------------
#
# The address book learns, without the user asking, the people the user deals with:
# - the recipients of mail the user sends (from the webmail at once, record_correspondents;
#   from any client through what lands in the Sent folder, below);
# - the senders of mail the user has read (the \Seen flag, set by the webmail or any IMAP
#   client), which includes everyone the user replied to.
# Not: mail in Junk, Trash or Drafts, mail never opened (a spammer who reached INBOX is not
# a correspondent), machines (no-reply and bounce addresses, mailing lists, automatic
# replies), nor the user's own addresses. Collected entries never overwrite what the user
# typed. The work is done lazily when the address book or autocomplete is used, and reads
# only what changed since the last time: each folder's messages whose MODSEQ passed the
# folder's mark (ContactHarvest), at most HARVEST_BATCH of them, newest first.

HARVEST_BATCH = 500  # messages one harvest reads per folder
_MACHINE_LOCALPART = re.compile(
    r"(?:no-?reply|do-?not-?reply|donotreply|mailer-daemon|postmaster|bounces?|notifications?)(?:[+._-].*)?", re.I
)
# Header fields (RFC 2369 List-*, RFC 3834 Auto-Submitted, the common Precedence) that
# mark a message sent by a machine or a list.
_MACHINE_FIELD = re.compile(
    r"^(?:list-id:|list-unsubscribe:|auto-submitted:(?!\s*no\b)|precedence:\s*(?:bulk|list|junk)\b)", re.I | re.M
)
_HEADER_PEEK = 16 << 10  # characters of the decoded header checked for those fields


def _is_machine(address, header=""):
    localpart = address.rpartition("@")[0]
    return bool(_MACHINE_LOCALPART.fullmatch(localpart)) or bool(_MACHINE_FIELD.search(header or ""))


def harvest_contacts(account):
    """Collect the correspondents of mail read or sent since the last harvest (see above);
    returns how many (name, address) pairs were offered to the address book."""
    from mailstore.models import Folder, Message
    from webmail.compose import identities_of
    from webmail.models import ContactHarvest

    folders = list(Folder.objects.filter(account=account).values_list("pk", "special_use", "highestmodseq"))
    state = ContactHarvest.objects.filter(account=account).first()
    marks = dict(state.marks) if state is not None else {}
    due = [(pk, use, top) for pk, use, top in folders if use not in (JUNK, TRASH, DRAFTS) and marks.get(str(pk), 0) < top]
    if not due:
        return 0
    pairs = []
    for pk, use, top in due:
        changed = Message.objects.filter(folder_id=pk, modseq__gt=marks.get(str(pk), 0)).order_by("-modseq", "-uid")
        if use == SENT:
            for to, cc in changed.values_list("to_display", "cc_display")[:HARVEST_BATCH]:
                pairs += email.utils.getaddresses([to, cc])
        else:
            rows = changed.filter(seen=True).annotate(header=Substr("blob__header_text", 1, _HEADER_PEEK))
            for name, address, header in rows.values_list("from_display", "from_address", "header")[:HARVEST_BATCH]:
                if address and not _is_machine(address, header):
                    display_name = email.utils.parseaddr(name)[0] if "<" in name else ""
                    pairs.append((display_name, address))
        marks[str(pk)] = top
    own = {address.lower() for address in identities_of(account)}
    pairs = [(name, address) for name, address in pairs if address.lower() not in own and not _is_machine(address)]
    record_correspondents(account, _unique(pairs))
    live = {str(pk) for pk, _use, _top in folders}
    marks = {key: value for key, value in marks.items() if key in live}
    try:
        with transaction.atomic():
            ContactHarvest.objects.update_or_create(account=account, defaults={"marks": marks})
    except IntegrityError:  # another request harvested at the same moment: its marks do
        pass
    return len(pairs)


def _unique(pairs):
    """The (name, address) pairs once per address (any case), a named one preferred."""
    chosen = {}
    for name, address in pairs:
        key = address.lower()
        if key not in chosen or (name and not chosen[key][0]):
            chosen[key] = (name, address)
    return list(chosen.values())
