"""Selected-state commands (RFC 9051 §6.4): reading, flagging, searching, copying and
removing messages of the selected mailbox.

Message numbers and UIDs are translated through the session's in-memory view; the
database is read only for what the view does not hold (bytes, envelopes, text).
"""
import asyncio
import functools
from bisect import bisect_left
from dataclasses import fields

from imap import fetch as fetching
from imap import search as searching
from imap.parser import FetchAttribute, ModSeq, SearchKey
from imap.responses import flag_list, sequence_set
from imap.mailbox import stored_messages, stored_summaries
from imap.session import Bad, No, State
from mailsuite.lib.aio import run_shared_write, run_sync
from mailstore import actions
from mailstore.storage import blob_reader

FETCH_BATCH = 100  # messages read and rendered per database round trip
FETCH_BATCH_ROWS = 500  # the same when only database rows are read (ENVELOPE, BODYSTRUCTURE...)
FLUSH_AT = 256 * 1024  # octets buffered before we wait for the socket
_MEMORY_ITEMS = frozenset({"FLAGS", "UID", "MODSEQ"})
_FLAGS = FetchAttribute("FLAGS")
_MODSEQ = FetchAttribute("MODSEQ")


def resolve(session, sequence, uid):
    """UIDs of the messages a sequence set names, ascending (RFC 9051 §9 sequence-set)."""
    mailbox = session.selected
    if sequence.saved:  # RFC 5182 "$"
        present = set(mailbox.flags)
        return sorted(u for u in mailbox.saved or () if u in present)
    if uid:
        highest = mailbox.uids[-1] if mailbox.uids else 0
        return mailbox.uids_in(sequence.resolve(highest))
    if sequence.highest() > mailbox.exists:
        raise Bad("Invalid message sequence number")
    return mailbox.uids_at(sequence.resolve(mailbox.exists))


def _number(session, uid, by_uid):
    return uid if by_uid else session.selected.seq_of(uid)


def _writable(session):
    if session.selected.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")


# --- CHECK / CLOSE / UNSELECT / EXPUNGE ----------------------------------------------------


async def check(session, command):  # RFC 3501 §6.4.1: nothing to checkpoint
    return None


async def close(session, command):  # RFC 9051 §6.4.1: expunge silently, then leave
    mailbox = session.selected
    session.selected = None
    session.state = State.AUTHENTICATED
    if not mailbox.readonly:
        doomed = [u for u in mailbox.uids if "\\Deleted" in mailbox.flags[u]]
        if doomed:
            await run_shared_write(actions.expunge, mailbox.folder, doomed)


async def unselect(session, command):  # RFC 3691
    session.selected = None
    session.state = State.AUTHENTICATED


async def expunge(session, command):  # RFC 9051 §6.4.3; UID EXPUNGE RFC 4315 §2.1
    _writable(session)
    mailbox = session.selected
    candidates = resolve(session, command.sequence, True) if command.uid else mailbox.uids
    doomed = [u for u in candidates if "\\Deleted" in mailbox.flags[u]]
    if doomed:
        await session.write_and_look(actions.expunge, mailbox.folder, doomed)
    # The EXPUNGE responses come from catching up with the store, like anyone else's.


# --- FETCH ---------------------------------------------------------------------------------


def _read(read_blob, message, header_only):
    data = read_blob(message.blob.name, message.blob.header_size if header_only else message.blob.size)
    return bytes(message.prefix) + data if message.prefix else data


def _render_batch(folder_id, uids, items, views, *, utf8, by_uid, extra_flags):
    """`* n FETCH (...)` lines for `uids`; `views` maps uid -> (seq, flags, modseq)."""
    names = fetching.summary_plan(items, uid=by_uid)
    if names is not None and not extra_flags:
        lines = fetching.render_summaries(names, stored_summaries(folder_id, uids), views, utf8=utf8)
        if lines is not None:
            return lines
    needs_bytes = fetching.needs_bytes(items)
    header_only = needs_bytes and fetching.header_only(items)
    read_blob = blob_reader() if needs_bytes else None
    plan = fetching.plan(items, uid=by_uid)
    # RFC 9051 §6.4.5: a message this FETCH marked \Seen shows its new FLAGS.
    plan_seen = plan if _FLAGS in items else fetching.plan(items + (_FLAGS,), uid=by_uid)
    out = []
    for message in stored_messages(folder_id, uids, fetching.columns_needed(items)):
        seq, flags, modseq = views[message.uid]
        raw = _read(read_blob, message, header_only) if needs_bytes else None
        body = fetching.render_planned(
            plan_seen if message.uid in extra_flags else plan,
            message=message, flags=flags, modseq=modseq, raw=raw, utf8=utf8,
        )
        out.append(b"* %d FETCH (%s)\r\n" % (seq, body))
    return out


async def fetch(session, command):  # RFC 9051 §6.4.5, RFC 7162 §3.1.4 / §3.2.6
    mailbox = session.selected
    uids = resolve(session, command.sequence, command.uid)
    items = command.items
    if command.changedsince is not None:
        session.condstore = True
        uids = [u for u in uids if mailbox.modseqs[u] > command.changedsince]
        if _MODSEQ not in items:
            items = items + (_MODSEQ,)
        if command.vanished:
            if not session.qresync:
                raise Bad("VANISHED needs ENABLE QRESYNC")
            gone = await run_sync(actions.vanished_since, mailbox.folder, command.changedsince)
            # "*" stands for every UID ever given here, expunged ones included.
            gone = [u for u in gone if command.sequence.contains(u, mailbox.uidnext)]
            if gone:
                session.send(b"* VANISHED (EARLIER) " + sequence_set(gone) + b"\r\n")
    elif any(item == _MODSEQ for item in items):
        session.condstore = True
    pending = mailbox.pending_expunges
    uids = [u for u in uids if u not in pending]
    newly_seen = set()
    if fetching.sets_seen(items) and not mailbox.readonly:
        unseen = [u for u in uids if "\\Seen" not in mailbox.flags[u]]
        if unseen:
            result = await run_shared_write(actions.store_flags, mailbox.folder, unseen, mode="add", flags=["\\Seen"])
            for uid, flags, modseq in result.changed:
                mailbox.set_flags(uid, flags, modseq)
                newly_seen.add(uid)
    if all(isinstance(i, FetchAttribute) and i.name in _MEMORY_ITEMS for i in items):
        await _fetch_from_memory(session, uids, items, command.uid)
        return None
    size = FETCH_BATCH if fetching.needs_bytes(items) else FETCH_BATCH_ROWS
    batches = [uids[start : start + size] for start in range(0, len(uids), size)]
    # Each batch is read and rendered in the database pool while the one before it goes
    # out: the socket's writes and the file reads let the two overlap.
    last = len(batches) - 1  # its trip also looks at what changed in the folder
    ahead = _render_soon(session, batches[0], items, command.uid, newly_seen, look=last == 0) if batches else None
    try:
        for index in range(len(batches)):
            lines = await ahead
            following = index + 1
            ahead = (
                _render_soon(session, batches[following], items, command.uid, newly_seen, look=following == last)
                if following <= last else None
            )
            for line in lines:
                session.send(line)
            if session.connection.pending > FLUSH_AT:
                await session.flush()
    except fetching.UnknownTransferEncoding:
        raise No("Unknown content transfer encoding", "UNKNOWN-CTE") from None
    finally:
        if ahead is not None:
            ahead.cancel()
    return None


def _render_soon(session, uids, items, by_uid, newly_seen, *, look=False):
    """A task rendering `uids`' FETCH lines (_render_batch), started now; with `look`, the
    same trip to the database reads what changed in the folder (Session.run_and_look)."""
    mailbox = session.selected
    views = {u: (mailbox.seq_of(u), mailbox.flags[u], mailbox.modseqs[u]) for u in uids}
    run = functools.partial(session.run_and_look, run_sync) if look else run_sync
    return asyncio.ensure_future(run(
        _render_batch, mailbox.folder_id, uids, items, views, utf8=session.utf8, by_uid=by_uid, extra_flags=newly_seen,
    ))


async def _fetch_from_memory(session, uids, items, by_uid):
    """FETCH of FLAGS/UID/MODSEQ only: answered from the view, no database (the usual
    "what changed" request of every client, over whole mailboxes)."""
    mailbox = session.selected
    names = [item.name for item in items]
    if by_uid and "UID" not in names:
        names.insert(0, "UID")
    rendered_flags = {}  # flag tuples are interned: render each distinct one once
    all_uids, flags, modseqs = mailbox.uids, mailbox.flags, mailbox.modseqs
    position = bisect_left(all_uids, uids[0]) if uids else 0
    if names in (["UID", "FLAGS"], ["UID", "FLAGS", "MODSEQ"]):
        # What clients ask of whole mailboxes of 100,000 messages: one format a message.
        with_modseq = len(names) == 3
        for uid in uids:
            while all_uids[position] != uid:
                position += 1
            message_flags = flags[uid]
            text = rendered_flags.get(id(message_flags))
            if text is None:
                text = rendered_flags[id(message_flags)] = flag_list(message_flags)
            if with_modseq:
                session.send(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (position + 1, uid, text, modseqs[uid]))
            else:
                session.send(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (position + 1, uid, text))
            if session.connection.pending > FLUSH_AT:
                await session.flush()
        return
    for uid in uids:
        while all_uids[position] != uid:  # both ascending: one walk, no search per message
            position += 1
        parts = []
        for name in names:
            if name == "UID":
                parts.append(b"UID %d" % uid)
            elif name == "FLAGS":
                message_flags = flags[uid]
                text = rendered_flags.get(id(message_flags))
                if text is None:
                    text = rendered_flags[id(message_flags)] = b"FLAGS " + flag_list(message_flags)
                parts.append(text)
            else:
                parts.append(b"MODSEQ (%d)" % modseqs[uid])
        session.send(b"* %d FETCH (%s)\r\n" % (position + 1, b" ".join(parts)))
        if session.connection.pending > FLUSH_AT:
            await session.flush()


# --- STORE ---------------------------------------------------------------------------------

_STORE_MODES = {"": "set", "+": "add", "-": "remove"}


async def store(session, command):  # RFC 9051 §6.4.6, RFC 7162 §3.1.3
    _writable(session)
    mailbox = session.selected
    uids = [u for u in resolve(session, command.sequence, command.uid) if u not in mailbox.pending_expunges]
    if command.unchangedsince is not None:
        session.condstore = True
    result = await session.write_and_look(actions.store_flags, mailbox.folder, uids,
        mode=_STORE_MODES[command.mode], flags=command.flags, unchangedsince=command.unchangedsince,
    )
    changed = set()
    for uid, flags, modseq in result.changed:
        mailbox.set_flags(uid, flags, modseq)
        changed.add(uid)
    modified = set(result.modified)
    for uid in uids:
        if uid in modified:
            continue
        if not command.silent:
            session.send(mailbox.flags_response(uid, with_uid=command.uid or session.qresync, modseq=session.condstore))
        elif session.condstore and uid in changed:
            # RFC 7162 §3.1.3: the new MODSEQ is reported even for .SILENT.
            session.send(b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (mailbox.seq_of(uid), uid, mailbox.modseqs[uid]))
    if modified:
        numbers = [_number(session, u, command.uid) for u in sorted(modified)]
        return (f"MODIFIED {sequence_set(numbers).decode()}", "Conditional STORE failed for some messages")
    return None


# --- COPY / MOVE ---------------------------------------------------------------------------


async def _transfer(session, command, operation):
    mailbox = session.selected
    uids = [u for u in resolve(session, command.sequence, command.uid) if u not in mailbox.pending_expunges]
    target = actions.normalise_folder_name(command.mailbox)
    if not uids:
        return None
    try:
        result = await session.write_and_look(operation, mailbox.folder, uids, target)
    except actions.NoSuchFolder:
        raise No("No such mailbox", "TRYCREATE") from None
    except actions.OverQuota:
        raise No("Quota exceeded", "OVERQUOTA") from None
    if not result.pairs:
        return None
    sources = sequence_set(p[0] for p in result.pairs).decode()
    targets = sequence_set(p[1] for p in result.pairs).decode()
    return f"COPYUID {result.uidvalidity} {sources} {targets}"


async def copy(session, command):  # RFC 9051 §6.4.7, RFC 4315 COPYUID
    code = await _transfer(session, command, actions.copy_messages)
    return (code, "COPY completed") if code else None


async def move(session, command):  # RFC 6851
    _writable(session)
    code = await _transfer(session, command, actions.move_messages)
    if code:  # RFC 6851 §4.3: COPYUID comes untagged, before the EXPUNGEs
        session.send(b"* OK [" + code.encode() + b"] Moved\r\n")
    return None


# --- SEARCH / SORT / THREAD ------------------------------------------------------------------


def _uses_modseq(key):
    """True if the search program has a MODSEQ key anywhere (RFC 7162 §3.1.5)."""
    if isinstance(key, ModSeq):
        return True
    for value in (getattr(key, f.name) for f in fields(key)):
        for child in value if isinstance(value, tuple) else (value,):
            if isinstance(child, SearchKey) and _uses_modseq(child):
                return True
    return False


def _view(mailbox):
    return searching.MailboxView(
        folder_id=mailbox.folder_id, uids=mailbox.uids, flags=mailbox.flags,
        modseqs=mailbox.modseqs, saved=mailbox.saved,
    )


async def search(session, command):  # RFC 9051 §6.4.4, RFC 4731 ESEARCH, RFC 5182 SEARCHRES
    mailbox = session.selected
    uids = await run_sync(searching.search, _view(mailbox), command.key)
    uids = [u for u in uids if u in mailbox.flags]
    with_modseq = _uses_modseq(command.key)
    if with_modseq:
        session.condstore = True
    highest = max((mailbox.modseqs[u] for u in uids), default=0)
    options = command.return_options
    if options is None and not session.rev2:
        numbers = [_number(session, u, command.uid) for u in uids]
        line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
        if with_modseq and uids:
            line += b" (MODSEQ %d)" % highest
        session.send(line + b"\r\n")
        return None
    options = options if options is not None else ("ALL",)
    if "SAVE" in options:
        wants_extremes_only = not ({"ALL", "COUNT"} & set(options)) and ({"MIN", "MAX"} & set(options))
        if wants_extremes_only and uids:
            mailbox.saved = sorted({uids[0] if "MIN" in options else uids[-1], uids[-1] if "MAX" in options else uids[0]})
        else:
            mailbox.saved = list(uids)
        if options == ("SAVE",):
            return None  # RFC 5182 §2.1: SAVE alone produces no ESEARCH response
    numbers = sorted(_number(session, u, command.uid) for u in uids)
    parts = [b'(TAG "' + command.tag.encode() + b'")']
    if command.uid:
        parts.append(b"UID")
    if numbers:
        if "MIN" in options:
            parts.append(b"MIN %d" % numbers[0])
        if "MAX" in options:
            parts.append(b"MAX %d" % numbers[-1])
        if "ALL" in options:
            parts.append(b"ALL " + sequence_set(numbers))
    if "COUNT" in options:
        parts.append(b"COUNT %d" % len(numbers))
    if with_modseq and numbers:
        parts.append(b"MODSEQ %d" % highest)
    session.send(b"* ESEARCH " + b" ".join(parts) + b"\r\n")
    return None


async def sort(session, command):  # RFC 5256 §4 SORT
    mailbox = session.selected
    uids = await run_sync(searching.sort, _view(mailbox), command.criteria, command.key)
    numbers = [_number(session, u, command.uid) for u in uids if u in mailbox.flags]
    session.send(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")


async def thread(session, command):  # RFC 5256 §4 THREAD
    mailbox = session.selected
    threads = await run_sync(searching.thread, _view(mailbox), command.algorithm, command.key)
    number = None if command.uid else mailbox.seq_of
    session.send(b"* THREAD " + searching.format_thread(threads, number) + b"\r\n")
