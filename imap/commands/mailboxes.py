"""Authenticated-state commands (RFC 9051 §6.3): selecting, managing and listing
mailboxes, STATUS, APPEND and QUOTA. All writes go through mailstore.actions."""
import asyncio
import re

from django.conf import settings
from django.db.models import Count, Q, Sum

from accounts.models import Account
from imap import mailbox as view
from imap.responses import flag_list, mailbox as mailbox_name, paren, sequence_set
from imap.session import Bad, No, State
from mailsuite.lib.aio import run_sync, run_write
from mailstore import actions
from mailstore.models import HIERARCHY_DELIMITER, Folder

DELIMITER = HIERARCHY_DELIMITER
PERMANENT_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\*")
# RFC 6154 §2: the special uses a folder can be created with; \All and \Flagged would be
# virtual folders, which we do not have.
CREATABLE_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")


def _name(name):
    return actions.normalise_folder_name(name)


# Raw SQL: SELECT and STATUS look a folder up by name, and building the ORM's query took
# several times as long as running it.
_BY_NAME = f"SELECT * FROM {Folder._meta.db_table} WHERE account_id = %s AND name = %s"


def _find(account_id, name):
    return next(iter(Folder.objects.raw(_BY_NAME, [account_id, _name(name)])), None)


async def _folder_or_no(session, name):
    folder = await run_sync(_find, session.account.pk, name)
    if folder is None:
        raise No("No such mailbox", "NONEXISTENT")
    return folder


# --- SELECT / EXAMINE ------------------------------------------------------------------


def _open(account_id, name, qresync):
    folder = _find(account_id, name)
    if folder is None:
        return None, None, None
    opened = view.load(folder.pk, folder)
    folder, _, _, modseqs, _, _ = opened
    vanished = changed = None
    if qresync and qresync.uidvalidity == folder.uidvalidity:
        known = qresync.known_uids.resolve(folder.uidnext) if qresync.known_uids else None
        known_uids = [u for r in known for u in r] if known is not None else None
        vanished = actions.vanished_since(folder, qresync.modseq, known_uids)
        changed = sorted(uid for uid, modseq in modseqs.items() if modseq > qresync.modseq)
    return opened, vanished, changed


async def select(session, command):  # RFC 9051 §6.3.2 SELECT, §6.3.3 EXAMINE; RFC 7162 §3.2.5
    if command.qresync and not session.qresync:
        raise Bad("QRESYNC parameter without ENABLE QRESYNC")
    if session.selected is not None:
        session.selected = None
        session.state = State.AUTHENTICATED
        if session.rev2 or session.condstore:  # RFC 7162 §3.2.11, RFC 9051 §7.1
            session.send(b"* OK [CLOSED] Previous mailbox closed\r\n")
    (opened, vanished, changed), select_opened = await session.open_folder(
        _open, session.account.pk, command.mailbox, command.qresync
    )
    if opened is None:
        raise No("No such mailbox", "NONEXISTENT")
    if command.condstore or command.qresync:
        session.condstore = True
    mailbox = view.SelectedMailbox(opened, readonly=command.readonly)
    flags = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", *sorted(mailbox.keywords))
    session.send(b"* %d EXISTS\r\n" % mailbox.exists)
    if not session.rev2:
        session.send(b"* 0 RECENT\r\n")  # RFC 3501 §6.3.1; we keep no \Recent
    session.send(b"* FLAGS " + flag_list(flags) + b"\r\n")
    if command.readonly:
        session.send(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n")
    else:
        session.send(b"* OK [PERMANENTFLAGS " + flag_list(PERMANENT_FLAGS) + b"] Flags permitted\r\n")
    first_unseen = None if session.rev2 else mailbox.first_unseen  # a walk of the messages: rev1 only
    if first_unseen:
        session.send(b"* OK [UNSEEN %d] First unseen\r\n" % first_unseen)
    session.send(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % mailbox.uidvalidity)
    session.send(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % mailbox.uidnext)
    session.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % mailbox.highestmodseq)  # RFC 7162 §3.1.2.1
    session.send(b"* OK [MAILBOXID (%s)] Ok\r\n" % mailbox_id(mailbox.folder_id).encode())  # RFC 8474 §4.2
    if session.rev2:
        session.send(b"* LIST () \"/\" " + mailbox_name(mailbox.name, utf8=True) + b"\r\n")
    if vanished:
        session.send(b"* VANISHED (EARLIER) " + sequence_set(vanished) + b"\r\n")
    for uid in changed or ():
        session.send(mailbox.flags_response(uid, with_uid=True, modseq=True))
    select_opened(mailbox)
    session.state = State.SELECTED
    return ("READ-ONLY" if command.readonly else "READ-WRITE", f"{'EXAMINE' if command.readonly else 'SELECT'} completed")


# --- CREATE / DELETE / RENAME / SUBSCRIBE ----------------------------------------------------


def mailbox_id(folder_id):
    """RFC 8474 §4 MAILBOXID: the folder's row, which RENAME keeps and nothing reuses."""
    return f"F{folder_id}"


async def create(session, command):  # RFC 9051 §6.3.4, RFC 6154 §3 CREATE-SPECIAL-USE
    name = _name(command.mailbox.rstrip(DELIMITER)) if command.mailbox != DELIMITER else ""
    if len(command.special_use) > 1:
        raise No("A mailbox can have one special use here", "USEATTR")
    use = command.special_use[0] if command.special_use else ""
    if use and use not in CREATABLE_USES:
        raise No("That special use is not supported", "USEATTR")
    if name == "INBOX":
        raise No("INBOX always exists", "ALREADYEXISTS")
    try:
        folder = await run_write(actions.create_folder, session.account, name, special_use=use)
    except actions.FolderExists:
        raise No("Mailbox already exists", "ALREADYEXISTS") from None
    except actions.InvalidFolderName as error:
        raise No(f"Invalid mailbox name: {error}", "CANNOT") from None
    return (f"MAILBOXID ({mailbox_id(folder.pk)})", "CREATE completed")  # RFC 8474 §4.1


async def delete(session, command):  # RFC 9051 §6.3.5
    name = _name(command.mailbox)
    if session.selected is not None and session.selected.name == name:
        session.selected = None
        session.state = State.AUTHENTICATED
    try:
        await run_write(actions.delete_folder, session.account, name)
    except actions.NoSuchFolder:
        raise No("No such mailbox", "NONEXISTENT") from None
    except actions.CannotDelete as error:
        raise No(f"Cannot delete: {error}", "CANNOT") from None


async def rename(session, command):  # RFC 9051 §6.3.6
    old, new = _name(command.mailbox), _name(command.new_name.rstrip(DELIMITER))
    try:
        await run_write(actions.rename_folder, session.account, old, new)
    except actions.NoSuchFolder:
        raise No("No such mailbox", "NONEXISTENT") from None
    except actions.FolderExists:
        raise No("Target mailbox already exists", "ALREADYEXISTS") from None
    except actions.InvalidFolderName as error:
        raise No(f"Invalid mailbox name: {error}", "CANNOT") from None
    selected = session.selected
    if selected is not None and old != "INBOX":
        if selected.name == old or selected.name.startswith(old + DELIMITER):
            selected.name = new + selected.name[len(old):]


async def subscribe(session, command):  # RFC 9051 §6.3.7
    await run_write(actions.set_subscribed, session.account, _name(command.mailbox), True)


async def unsubscribe(session, command):  # RFC 9051 §6.3.8
    await run_write(actions.set_subscribed, session.account, _name(command.mailbox), False)


# --- LIST / LSUB ---------------------------------------------------------------------------


def _pattern_re(reference, pattern):
    """RFC 9051 §6.3.9: "*" matches anything, "%" anything but the delimiter."""
    full = reference + pattern if not pattern.startswith(DELIMITER) else pattern
    parts = []
    for char in full:
        parts.append({"*": ".*", "%": f"[^{re.escape(DELIMITER)}]*"}.get(char, re.escape(char)))
    regex = "".join(parts)
    # INBOX matches case-insensitively (RFC 9051 §5.1); so do patterns naming it.
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in DELIMITER + "*%"):
        regex = "INBOX" + regex[5:]
    return re.compile(regex + r"\Z", re.DOTALL)


def _folders(account_id):
    return list(
        Folder.objects.filter(account_id=account_id)
        .order_by("name")
        .values("id", "name", "special_use", "subscribed")
    )


def _attributes(folder, names, *, subscribed):
    prefix = folder["name"] + DELIMITER
    has_children = any(n.startswith(prefix) for n in names)
    attrs = ["\\HasChildren" if has_children else "\\HasNoChildren"]  # RFC 3348, RFC 5258 §4
    if folder["special_use"]:
        attrs.append(folder["special_use"])
    if subscribed and folder["subscribed"]:
        attrs.append("\\Subscribed")
    return attrs


async def list_(session, command):  # RFC 9051 §6.3.9, RFC 5258, RFC 5819, RFC 6154
    if len(command.patterns) == 1 and command.patterns[0] == "" and not command.extended:
        # The hierarchy delimiter and root (RFC 9051 §6.3.9).
        session.send(b'* LIST (\\Noselect) "/" ""\r\n')
        return
    folders = await run_sync(_folders, session.account.pk)
    names = [f["name"] for f in folders]
    patterns = [_pattern_re(command.reference, p) for p in command.patterns if p]
    only_subscribed = "SUBSCRIBED" in command.select_options
    only_special = "SPECIAL-USE" in command.select_options
    show_subscribed = only_subscribed or "SUBSCRIBED" in command.return_options
    show_special = only_special or "SPECIAL-USE" in command.return_options or not command.extended
    matched = []
    for folder in folders:
        if not any(p.match(folder["name"]) for p in patterns):
            continue
        if only_subscribed and not folder["subscribed"]:
            continue
        if only_special and not folder["special_use"]:
            continue
        attrs = _attributes(folder, names, subscribed=show_subscribed)
        if not show_special and folder["special_use"]:
            attrs.remove(folder["special_use"])
        matched.append((folder, attrs))
    rows = {}
    if command.status_items:  # RFC 5819 LIST-STATUS: each STATUS right after its LIST
        rows = await run_sync(_status_rows, [f["id"] for f, _ in matched], command.status_items)
    for folder, attrs in matched:
        session.send(b"* LIST " + flag_list(attrs) + b' "/" ' + mailbox_name(folder["name"], utf8=session.utf8) + b"\r\n")
        if folder["id"] in rows:
            session.send(_status_response(session, folder["name"], rows[folder["id"]], command.status_items))


async def lsub(session, command):  # RFC 3501 §6.3.9 (kept in IMAP4rev2 for old clients)
    folders = await run_sync(_folders, session.account.pk)
    pattern = _pattern_re(command.reference, command.pattern)
    for folder in folders:
        if folder["subscribed"] and pattern.match(folder["name"]):
            session.send(b"* LSUB ()" + b' "/" ' + mailbox_name(folder["name"], utf8=session.utf8) + b"\r\n")


# --- STATUS ------------------------------------------------------------------------------


def _status_rows(folder_ids, items):
    rows = {
        f["id"]: f
        for f in Folder.objects.filter(pk__in=folder_ids).values(
            "id", "message_count", "unseen_count", "uidnext", "uidvalidity", "total_size", "highestmodseq"
        )
    }
    if "DELETED" in items or "DELETED-STORAGE" in items:
        deleted = (
            Folder.objects.filter(pk__in=folder_ids)
            .annotate(
                deleted=Count("messages", filter=Q(messages__deleted=True)),
                deleted_size=Sum("messages__size", filter=Q(messages__deleted=True)),
            )
            .values_list("id", "deleted", "deleted_size")
        )
        for folder_id, count, size in deleted:
            rows[folder_id]["deleted"] = count
            rows[folder_id]["deleted_size"] = size or 0
    return rows


def _status_value(item, row):
    return {
        "MESSAGES": lambda: row["message_count"],
        "RECENT": lambda: 0,
        "UIDNEXT": lambda: row["uidnext"],
        "UIDVALIDITY": lambda: row["uidvalidity"],
        "UNSEEN": lambda: row["unseen_count"],
        "SIZE": lambda: row["total_size"],  # RFC 8438
        "HIGHESTMODSEQ": lambda: row["highestmodseq"],  # RFC 7162 §3.1.9
        "APPENDLIMIT": lambda: settings.MAILSUITE_MESSAGE_SIZE_LIMIT,  # RFC 7889 §3
        "DELETED": lambda: row["deleted"],  # RFC 9051 §6.3.11
        "DELETED-STORAGE": lambda: (row["deleted_size"] + 1023) // 1024,  # RFC 9208 §5.1, in KiB
        "MAILBOXID": lambda: f"({mailbox_id(row['id'])})",  # RFC 8474 §4.3
    }[item]()


def _status_response(session, name, row, items):
    values = [b"%s %s" % (item.encode(), str(_status_value(item, row)).encode()) for item in items]
    return b"* STATUS " + mailbox_name(name, utf8=session.utf8) + b" " + paren(values) + b"\r\n"


async def status(session, command):  # RFC 9051 §6.3.11
    folder = await _folder_or_no(session, command.mailbox)
    if "HIGHESTMODSEQ" in command.items:
        session.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    rows = await run_sync(_status_rows, [folder.pk], command.items)
    session.send(_status_response(session, folder.name, rows[folder.pk], command.items))


# --- APPEND ------------------------------------------------------------------------------


async def _append_all(session, name, messages):
    """actions.append_many's steps: the bytes written in the writers' pool, the rows in a
    transaction other sessions' changes may share (run_shared_write, with the session's
    look at its selected folder)."""
    uploads = [(m.data, m.flags, m.internaldate) for m in messages]
    incomings = await run_write(actions.prepare_uploads, uploads)
    try:
        with actions.forget_new_blobs_on_rollback(incomings):
            outcomes = await session.write_and_look(actions.place_uploads, session.account, name, incomings, uploads)
    finally:
        if any(incoming.blob.pk is None for incoming in incomings):
            await run_write(lambda: [incoming.release() for incoming in incomings])
    return outcomes[0].uidvalidity, [outcome.message.uid for outcome in outcomes]


async def append(session, command):  # RFC 9051 §6.3.12, RFC 3502 MULTIAPPEND, RFC 4315 APPENDUID
    for message in command.messages:
        if not message.data:
            raise No("Empty message")
        if any(f.lower() == "\\recent" for f in message.flags):
            raise Bad("\\Recent cannot be set")
    try:
        # Shielded: a client that goes away mid-APPEND must not leave rows naming bytes that were removed.
        uidvalidity, uids = await asyncio.shield(_append_all(session, _name(command.mailbox), command.messages))
    except actions.NoSuchFolder:
        raise No("No such mailbox", "TRYCREATE") from None
    except actions.OverQuota:
        raise No("Quota exceeded", "OVERQUOTA") from None
    return (f"APPENDUID {uidvalidity} {sequence_set(uids).decode()}", "APPEND completed")


# --- QUOTA (RFC 9208) ---------------------------------------------------------------------


def _quota_line(quota, used):
    kib = lambda n: (n + 1023) // 1024  # noqa: E731 - RFC 9208 §5.1: STORAGE is in units of 1024 octets
    return b'* QUOTA "" (STORAGE %d %d)\r\n' % (kib(used), kib(quota))


async def getquotaroot(session, command):  # RFC 9208 §4.3
    folder = await _folder_or_no(session, command.mailbox)
    quota, used = await run_sync(lambda: Account.objects.values_list("quota", "quota_used").get(pk=session.account.pk))
    name = mailbox_name(folder.name, utf8=session.utf8)
    if not quota:
        session.send(b"* QUOTAROOT " + name + b"\r\n")
        return
    session.send(b"* QUOTAROOT " + name + b' ""\r\n')
    session.send(_quota_line(quota, used))


async def getquota(session, command):  # RFC 9208 §4.2
    quota, used = await run_sync(lambda: Account.objects.values_list("quota", "quota_used").get(pk=session.account.pk))
    if command.root != "" or not quota:
        raise No("No such quota root", "NONEXISTENT")
    session.send(_quota_line(quota, used))


async def setquota(session, command):  # RFC 9208 §4.1
    raise No("Quotas are set by the administrator", "NOPERM")
