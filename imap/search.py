"""SEARCH, SORT and THREAD over the selected folder.

RFC 9051 §6.4.4 and RFC 3501 §6.4.4 (SEARCH keys), RFC 5182 ("$"), RFC 7162 §3.1.5
(MODSEQ), RFC 8474 §6 (EMAILID, THREADID), RFC 5256 (SORT, THREAD=ORDEREDSUBJECT,
THREAD=REFERENCES).

Implementation notes
- The session's MailboxView is the truth for which messages exist, their sequence
  numbers, flags and MODSEQs: a client is answered about what it has been told, so a
  flag another session changed but this one has not announced yet does not count.
  A message the view still has but the database lost (expunged elsewhere) matches no
  key that needs its row. Results are UIDs; the session maps them to numbers.
- A key is evaluated by narrowing a set of candidate UIDs: keys answered from the view
  first (no I/O), then every key on the message row (dates, size) in one SQL statement
  (SENT* and EMAILID first read what they need in one query each), then text keys,
  through the text index, only for what is left. The number of queries depends on the
  search program, never on the number of messages; every query is restricted to the
  folder and the candidates' UIDs.
- Text index (migration 0004): on SQLite two FTS5 tables with the trigram tokenizer,
  `mailstore_blob_text_fts` (external content: Blob.search_text, the decoded bodies)
  and `mailstore_blob_header_fts` (its own copy of Blob.header_text, the decoded
  header), kept in step with mailstore_blob by triggers. On PostgreSQL pg_trgm GIN
  indexes on both columns, queried with ILIKE. A trigram phrase query is exactly a
  case-insensitive substring test for needles of three characters or more. Shorter
  needles have no trigram: SQLite tests the candidates' text with instr() for every
  upper/lower spelling of the needle; PostgreSQL's ILIKE then reads the candidates.
- Matching is case-insensitive substring: Unicode case folding in the index (FTS5
  folds per character, PostgreSQL by the database's locale) and str.casefold where
  Python checks (header fields). Header and body text are decoded (RFC 2047 words,
  transfer encodings, charsets), as the mail store stored them at delivery.
- HEADER, FROM, TO, CC, BCC and SUBJECT look at the named field in Blob.header_text,
  preceded by the message's per-copy prefix (Return-Path, Delivered-To): both are part
  of the header the client fetches. TEXT is header or body; BODY is the body alone.
- Dates: BEFORE/ON/SINCE compare the date of INTERNALDATE in UTC, the server's time
  zone for this purpose. SENTBEFORE/SENTON/SENTSINCE compare the date the Date: field
  wrote, in its own zone (RFC 9051: "disregarding time and timezone"); a message
  without a usable Date: field matches none of them.
- \\Recent does not exist in IMAP4rev2 and sessions keep none, so RECENT and NEW match
  nothing and OLD matches everything (a view that did carry \\Recent would be obeyed).
  System flags compare case-insensitively, keywords exactly.
- MODSEQ with a flag entry uses the message's MODSEQ: per-flag MODSEQs are not kept
  (RFC 7162 §3.1.5 allows it). EMAILID and THREADID are what FETCH says
  (imap.fetch.email_id, thread_id).
- SORT and THREAD compare strings by i;ascii-casemap (RFC 5256 §3, RFC 4790 §9.2) and
  dates by the sent date of RFC 5256 §2.2 (Date: field, else INTERNALDATE), ties by
  sequence number. They fetch their columns for the matching messages in one query.
- Reads only. On PostgreSQL a search with text keys runs in a transaction of its own, for
  the planner hint (mailsuite.db.planner). Run it off the event loop.
"""
from __future__ import annotations

import operator
import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import reduce
from types import SimpleNamespace

from django.db import connection
from django.db.models import Q

from imap import fetch
from imap.parser import (
    All,
    And,
    Body,
    EmailId,
    Flag,
    Header,
    InternalDate,
    Larger,
    ModSeq,
    Not,
    Or,
    SearchKey,
    SentDate,
    SequenceKey,
    Smaller,
    Text,
    ThreadId,
    UidKey,
)
from mailsuite.db.planner import text_index_preferred
from mailstore import search_index
from mailstore.mime import searchable_header
from mailstore.models import Blob, Message

TEXT_FTS = "mailstore_blob_text_fts"  # SQLite: Blob.search_text (migration 0004)
HEADER_FTS = "mailstore_blob_header_fts"  # SQLite: Blob.header_text (migration 0004)
TRIGRAM = 3  # shortest needle a trigram index can answer
MAX_UID_LIST = 500  # candidates passed as a list of UIDs; more go as a UID range


@dataclass
class MailboxView:
    """What the session passes in: its in-memory view of the selected folder."""

    folder_id: int
    uids: list[int]  # ascending; sequence number n is uids[n-1]
    flags: dict[int, tuple]  # uid -> current flags (IMAP strings, e.g. "\\Seen", "$Junk")
    modseqs: dict[int, int]  # uid -> modseq
    saved: list[int] | None = None  # RFC 5182 "$" result, as UIDs


# --- SEARCH --------------------------------------------------------------------------


def search(view: MailboxView, key: SearchKey) -> list[int]:
    """UIDs of the messages in `view` that match `key`, ascending (RFC 9051 §6.4.4)."""
    with text_index_preferred(_TEXT in _kinds(key)):
        return sorted(_Search(view).matches(key, set(view.uids)))


# How a key is answered, cheapest first: from the view, from the message row (SQL),
# from text (the index). A subtree mixing kinds has the cost of its dearest part.
_VIEW, _ROW, _TEXT = 0, 1, 2
_VIEW_KEYS = (All, Flag, SequenceKey, UidKey, ModSeq)
_ROW_KEYS = (InternalDate, SentDate, Larger, Smaller, EmailId, ThreadId)
_TEXT_KEYS = (Header, Body, Text)


def _children(key):
    if isinstance(key, And):
        return key.keys
    if isinstance(key, Or):
        return (key.left, key.right)
    if isinstance(key, Not):
        return (key.key,)
    return ()


def _kinds(key):
    """The set of kinds of the leaves under `key`."""
    if isinstance(key, _VIEW_KEYS):
        return {_VIEW}
    if isinstance(key, _ROW_KEYS):
        return {_ROW}
    if isinstance(key, _TEXT_KEYS):
        return {_TEXT}
    kinds = set()
    for child in _children(key):
        kinds |= _kinds(child)
    return kinds


class _Search:
    def __init__(self, view):
        self.view = view
        self.text = _text_backend()

    def matches(self, key, candidates):
        """The UIDs in `candidates` that match `key`."""
        if not candidates:
            return set()
        kinds = _kinds(key)
        if kinds == {_ROW}:
            return self.rows(self.q(key), candidates)
        if isinstance(key, Not):
            return candidates - self.matches(key.key, candidates)
        if isinstance(key, Or):
            left = self.matches(key.left, candidates)
            return left | self.matches(key.right, candidates - left)
        if isinstance(key, And):
            return self.conjunction(key.keys, candidates)
        if isinstance(key, _TEXT_KEYS):
            return self.text_key(key, candidates)
        return self.view_key(key, candidates)

    def conjunction(self, keys, candidates):
        """Cheapest first, each narrowing the candidates for the next; all the keys on
        the message row go to the database together, as one statement."""
        row_keys = [key for key in keys if _kinds(key) == {_ROW}]
        others = sorted((key for key in keys if _kinds(key) != {_ROW}), key=lambda k: max(_kinds(k)))
        cheap = [key for key in others if max(_kinds(key)) == _VIEW]
        dear = [key for key in others if max(_kinds(key)) != _VIEW]
        for key in cheap:
            candidates = self.matches(key, candidates)
        if row_keys and candidates:
            candidates = self.rows(reduce(operator.and_, map(self.q, row_keys)), candidates)
        for key in dear:
            candidates = self.matches(key, candidates)
        return candidates

    # Keys answered from the view

    def view_key(self, key, candidates):
        view = self.view
        if isinstance(key, All):
            return set(candidates)
        if isinstance(key, Flag):
            return {uid for uid in candidates if _has_flag(view.flags.get(uid, ()), key.name)}
        if isinstance(key, SequenceKey):
            if key.sequence.saved:
                return candidates.intersection(view.saved or ())
            selected = set()
            for piece in key.sequence.resolve(len(view.uids)):
                selected.update(view.uids[piece.start - 1 : piece.stop - 1])
            return candidates & selected
        if isinstance(key, UidKey):
            if key.sequence.saved:
                return candidates.intersection(view.saved or ())
            ranges = key.sequence.resolve(view.uids[-1] if view.uids else 0)
            starts = [r.start for r in ranges]
            return {uid for uid in candidates if uid in ranges[max(bisect_right(starts, uid) - 1, 0)]} if ranges else set()
        if isinstance(key, ModSeq):
            # RFC 7162 §3.1.5; per-flag MODSEQs are not kept: the message's stands in.
            return {uid for uid in candidates if view.modseqs.get(uid, 0) >= key.modseq}
        raise TypeError(f"not a search key: {key!r}")

    # Keys answered from the message row, in SQL

    def rows(self, condition, candidates):
        found = (
            Message.objects.filter(folder_id=self.view.folder_id)
            .filter(_uid_q(candidates))
            .filter(condition)
            .values_list("uid", flat=True)
        )
        return candidates.intersection(found)

    def q(self, key):
        """`key` (all of whose leaves are row keys) as a condition on Message rows."""
        if isinstance(key, Not):
            return ~self.q(key.key)
        if isinstance(key, And):
            return reduce(operator.and_, map(self.q, key.keys))
        if isinstance(key, Or):
            return self.q(key.left) | self.q(key.right)
        if isinstance(key, InternalDate):
            return _date_q("internaldate", key.op, key.date)
        if isinstance(key, SentDate):
            return self.sent_date_q(key)
        if isinstance(key, Larger):
            return Q(size__gt=key.size)
        if isinstance(key, Smaller):
            return Q(size__lt=key.size)
        if isinstance(key, EmailId):
            return self.email_id_q(key)
        if isinstance(key, ThreadId):
            thread_key = fetch.thread_key_of(key.id)
            return Q(pk__in=[]) if thread_key is None else Q(thread_key=thread_key)
        raise TypeError(f"not a row key: {key!r}")

    def sent_date_q(self, key):
        """SENTBEFORE/SENTON/SENTSINCE on the date the Date: field wrote.

        sent_date is stored in UTC, and a zone moves the written date at most one day
        either way: messages whose UTC date is more than a day from the key's date are
        decided in SQL; those nearer have their Date: field read (one query) and are
        then named by UID.
        """
        start = _midnight(key.date)
        low, high = start - timedelta(days=1), start + timedelta(days=2)
        near = (
            Message.objects.filter(folder_id=self.view.folder_id, sent_date__gte=low, sent_date__lt=high)
            .values_list("uid", "sent_date", "blob__envelope__0")
        )
        matching = [uid for uid, sent, written in near if _compare(key.op, _written_date(written, sent), key.date)]
        sure = {"before": Q(sent_date__lt=low), "on": Q(pk__in=[]), "since": Q(sent_date__gte=high)}[key.op]
        return sure | Q(uid__in=matching) if matching else sure

    def email_id_q(self, key):
        """EMAILID as FETCH computes it (imap.fetch.email_id, from the blob's digest and
        the per-copy prefix): the folder's messages are read in one query and named by UID."""
        rows = Message.objects.filter(folder_id=self.view.folder_id).values_list("uid", "prefix", "blob__sha256")
        matching = [
            uid for uid, prefix, sha256 in rows
            if fetch.email_id(SimpleNamespace(prefix=prefix, blob=SimpleNamespace(sha256=sha256))) == key.id
        ]
        return Q(uid__in=matching) if matching else Q(pk__in=[])

    # Keys answered from text

    def text_key(self, key, candidates):
        if isinstance(key, Body):
            return self.text.body(self.view.folder_id, candidates, key.value)
        if isinstance(key, Text):
            found = self.text.body(self.view.folder_id, candidates, key.value)
            return found | self.header(candidates - found, None, key.value)
        return self.header(candidates, key.name, key.value)

    def header(self, candidates, name, needle):
        """Candidates whose header field `name` (any field when None) holds `needle`;
        HEADER name "" asks only that the field be there."""
        if not candidates:
            return set()
        folder_id = self.view.folder_id
        found = {
            uid
            for uid, prefix in _prefixes(folder_id, candidates)
            if _header_has(searchable_header(prefix), name, needle)
        }
        rest = candidates - found
        if name is None and len(needle) >= TRIGRAM:
            return found | self.text.header_hits(folder_id, rest, needle)
        # Narrow by the index on the needle and on "name:", then read the lines.
        terms = [term for term in (needle, f"{name}:" if name else "") if len(term) >= TRIGRAM]
        for uid, text in self.text.headers(folder_id, rest, terms):
            if _header_has(text, name, needle):
                found.add(uid)
        return found


def _has_flag(flags, name):
    if name.startswith("\\"):
        wanted = name.lower()
        return any(flag.lower() == wanted for flag in flags)
    return name in flags


def _uid_q(candidates):
    if len(candidates) <= MAX_UID_LIST:
        return Q(uid__in=sorted(candidates))
    return Q(uid__gte=min(candidates), uid__lte=max(candidates))


def _midnight(day):
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def _date_q(column, op, day):
    start = _midnight(day)
    if op == "before":
        return Q(**{f"{column}__lt": start})
    if op == "on":
        return Q(**{f"{column}__gte": start, f"{column}__lt": start + timedelta(days=1)})
    return Q(**{f"{column}__gte": start})


def _compare(op, value, day):
    if op == "before":
        return value < day
    if op == "on":
        return value == day
    return value >= day


def _written_date(written, sent):
    """The date a Date: field names, in its own zone; the UTC date if it will not parse."""
    try:
        return parsedate_to_datetime(written).date()
    except (TypeError, ValueError, IndexError, OverflowError):
        return sent.date()


def _header_has(text, name, needle):
    """Whether a field `name` of the header text (one "Name: value" a line) contains
    `needle`, case-insensitively; any line when `name` is None."""
    needle = needle.casefold()
    for line in text.split("\n"):
        field_name, colon, value = line.partition(":")
        if name is None:
            if needle in line.casefold():
                return True
        elif colon and field_name.strip().lower() == name and needle in value.casefold():
            return True
    return False


def _prefixes(folder_id, candidates):
    """(uid, prefix bytes) of the candidates that have a per-copy prefix."""
    rows = (
        Message.objects.filter(folder_id=folder_id)
        .filter(_uid_q(candidates))
        .exclude(prefix=b"")
        .values_list("uid", "prefix")
    )
    return [(uid, bytes(prefix)) for uid, prefix in rows if uid in candidates]


# --- The text index, per database ------------------------------------------------------


def _text_backend():
    return _PostgresText() if connection.vendor == "postgresql" else _SqliteText()


def _candidates_sql(folder_id, candidates):
    """WHERE fragment restricting message rows m to the folder and the candidates."""
    if len(candidates) <= MAX_UID_LIST:
        uids = sorted(candidates)
        return f"m.folder_id = %s AND m.uid IN ({', '.join(['%s'] * len(uids))})", [folder_id, *uids]
    return "m.folder_id = %s AND m.uid BETWEEN %s AND %s", [folder_id, min(candidates), max(candidates)]


def _case_variants(needle):
    """Every upper/lower spelling of a short needle, for a case-insensitive instr()."""
    variants = [""]
    for char in needle:
        forms = dict.fromkeys((char, char.lower(), char.upper()))
        variants = [v + form for v in variants for form in forms if len(form) == 1]
    return variants


class _TextBackend:
    def _uids(self, candidates, sql, params):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return candidates.intersection(row[0] for row in cursor.fetchall())

    def _pairs(self, candidates, sql, params):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [(uid, text) for uid, text in cursor.fetchall() if uid in candidates]


class _SqliteText(_TextBackend):
    fresh = False

    def _caught_up(self):
        """The index holds every message stored so far (asked once per search)."""
        if not self.fresh:
            search_index.catch_up()
            self.fresh = True

    def body(self, folder_id, candidates, needle):
        """Candidates whose decoded body text contains `needle`."""
        if not candidates:
            return set()
        where, params = _candidates_sql(folder_id, candidates)
        if len(needle) >= TRIGRAM:
            self._caught_up()
            sql = (
                f"SELECT m.uid FROM {Message._meta.db_table} m WHERE {where} AND m.blob_id IN "
                f"(SELECT rowid FROM {TEXT_FTS} WHERE {TEXT_FTS} MATCH %s)"
            )
            return self._uids(candidates, sql, [*params, _fts_phrase(needle)])
        if not needle:
            return set(candidates)
        variants = _case_variants(needle)
        sql = (
            f"SELECT m.uid FROM {Message._meta.db_table} m JOIN {Blob._meta.db_table} b ON b.id = m.blob_id "
            f"WHERE {where} AND ({' OR '.join(['instr(b.search_text, %s) > 0'] * len(variants))})"
        )
        return self._uids(candidates, sql, [*params, *variants])

    def header_hits(self, folder_id, candidates, needle):
        """Candidates whose decoded header contains `needle` (3 characters or more)."""
        if not candidates:
            return set()
        self._caught_up()
        where, params = _candidates_sql(folder_id, candidates)
        sql = (
            f"SELECT m.uid FROM {Message._meta.db_table} m WHERE {where} AND m.blob_id IN "
            f"(SELECT rowid FROM {HEADER_FTS} WHERE {HEADER_FTS} MATCH %s)"
        )
        return self._uids(candidates, sql, [*params, _fts_phrase(needle)])

    def headers(self, folder_id, candidates, terms):
        """(uid, header text) of the candidates whose header contains every term."""
        if not candidates:
            return []
        self._caught_up()
        where, params = _candidates_sql(folder_id, candidates)
        sql = (
            f"SELECT m.uid, h.header_text FROM {Message._meta.db_table} m "
            f"JOIN {HEADER_FTS} h ON h.rowid = m.blob_id WHERE {where}"
        )
        if terms:
            # One index lookup for the folder, then each hit's header by rowid.
            sql += f" AND m.blob_id IN (SELECT rowid FROM {HEADER_FTS} WHERE {HEADER_FTS} MATCH %s)"
            params.append(" AND ".join(map(_fts_phrase, terms)))
        return self._pairs(candidates, sql, params)


def _fts_phrase(text):
    """An FTS5 phrase: with the trigram tokenizer, "text" as a substring."""
    return '"' + text.replace('"', '""') + '"'


class _PostgresText(_TextBackend):
    def body(self, folder_id, candidates, needle):
        return self._contains(folder_id, candidates, "search_text", needle)

    def header_hits(self, folder_id, candidates, needle):
        return self._contains(folder_id, candidates, "header_text", needle)

    def _contains(self, folder_id, candidates, column, needle):
        if not candidates:
            return set()
        if not needle:
            return set(candidates)
        where, params = _candidates_sql(folder_id, candidates)
        # ILIKE '%needle%' is what the pg_trgm GIN index answers.
        sql = (
            f"SELECT m.uid FROM {Message._meta.db_table} m JOIN {Blob._meta.db_table} b ON b.id = m.blob_id "
            f"WHERE {where} AND b.{column} ILIKE %s"
        )
        return self._uids(candidates, sql, [*params, _pg_like(needle)])

    def headers(self, folder_id, candidates, terms):
        if not candidates:
            return []
        where, params = _candidates_sql(folder_id, candidates)
        sql = (
            f"SELECT m.uid, b.header_text FROM {Message._meta.db_table} m "
            f"JOIN {Blob._meta.db_table} b ON b.id = m.blob_id WHERE {where}"
        )
        for term in terms:
            sql += " AND b.header_text ILIKE %s"
            params.append(_pg_like(term))
        return self._pairs(candidates, sql, params)


def _pg_like(needle):
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# --- SORT (RFC 5256 §3) ------------------------------------------------------------------

# RFC 5256 §3 sort keys: the columns each needs.
_SORT_COLUMNS = {
    "ARRIVAL": ("internaldate",),
    "DATE": ("sent_date", "internaldate"),
    "FROM": ("blob__envelope__2",),
    "TO": ("blob__envelope__5",),
    "CC": ("blob__envelope__6",),
    "SIZE": ("size",),
    "SUBJECT": ("subject",),
}


def sort(view: MailboxView, criteria, key: SearchKey) -> list[int]:
    """UIDs matching `key` in RFC 5256 SORT order: by each criterion in turn (a sequence
    of imap.parser.SortCriterion; REVERSE reverses that one), ties by sequence number."""
    uids = search(view, key)
    columns = list(dict.fromkeys(c for criterion in criteria for c in _SORT_COLUMNS[criterion.key]))
    rows = _rows(view.folder_id, uids, columns)
    entries = [(uid, dict(zip(columns, rows[uid]))) for uid in uids if uid in rows]
    # Stable sorts, last criterion first: each earlier one then decides, and equal
    # entries keep sequence order (sort(reverse=True) keeps equal items in order).
    for criterion in reversed(criteria):
        sort_key = _SORT_KEYS[criterion.key]
        entries.sort(key=lambda entry: sort_key(entry[1]), reverse=criterion.reverse)
    return [uid for uid, _ in entries]


def _rows(folder_id, uids, columns):
    """uid -> values of `columns` for the given messages, in few queries."""
    wanted = set(uids)
    if not wanted:
        return {}
    found = Message.objects.filter(folder_id=folder_id).filter(_uid_q(wanted)).values_list("uid", *columns)
    return {row[0]: row[1:] for row in found if row[0] in wanted}


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def casemap(text):
    """i;ascii-casemap (RFC 4790 §9.2): ASCII letters compare without case, the rest by
    code point (the order of their UTF-8 octets), as RFC 5256 §3 sorts strings."""
    return (text or "").translate(_ASCII_UPPER)


def _first_mailbox(addresses):
    """addr-mailbox of the first address of an envelope address list (RFC 5256 §3)."""
    for address in addresses or ():
        if isinstance(address, list) and len(address) == 4 and address[3] is not None:
            return address[2] or ""
    return ""


_SORT_KEYS = {
    "ARRIVAL": lambda row: row["internaldate"],
    # RFC 5256 §2.2: the Date: field's moment, INTERNALDATE when there is none.
    "DATE": lambda row: row["sent_date"] or row["internaldate"],
    "FROM": lambda row: casemap(_first_mailbox(row["blob__envelope__2"])),
    "TO": lambda row: casemap(_first_mailbox(row["blob__envelope__5"])),
    "CC": lambda row: casemap(_first_mailbox(row["blob__envelope__6"])),
    "SIZE": lambda row: row["size"],
    "SUBJECT": lambda row: casemap(base_subject(row["subject"])[0]),
}


# --- Base subject (RFC 5256 §2.1) ----------------------------------------------------------

_BLOB = r"\[[^\[\]]*\][ \t]*"  # subj-blob
_REFWD = re.compile(rf"(?:re|fwd?)[ \t]*(?:{_BLOB})?:", re.IGNORECASE | re.ASCII)  # subj-refwd
_LEADING_BLOB = re.compile(_BLOB)
_SPACES = re.compile(r"[ \t\r\n]+")


def base_subject(subject: str) -> tuple[str, bool]:
    """(base subject, whether the subject marked a reply or forward), RFC 5256 §2.1.

    `subject` is already decoded (step 1's RFC 2047 decoding happened at delivery).
    The flag is set when a subj-refwd leader, a "(fwd)" trailer or a "[fwd: ...]"
    wrapper was removed: THREAD=REFERENCES step 5 needs it.

    Linear in the subject: the text is narrowed by moving two offsets, never copied,
    and a subj-leader's blobs (*subj-blob subj-refwd) are taken one at a time by step
    (4), which removes the same text, so no regex rescans a run of blobs.
    """
    text = _SPACES.sub(" ", subject or "")  # (1) tabs, continuations and runs of spaces
    start, end, marked = 0, len(text), False
    while True:
        # (2) subj-trailer: "(fwd)" or whitespace at the end, repeatedly.
        while end > start:
            if text[end - 1] == " ":
                end -= 1
            elif end - start >= 5 and text[end - 5 : end].lower() == "(fwd)":
                end, marked = end - 5, True
            else:
                break
        # (5) repeat (3) and (4) until neither removes anything.
        while True:
            before = start
            # (3) subj-leader: whitespace, or subj-refwd.
            if start < end and text[start] == " ":
                start += 1
            elif leader := _REFWD.match(text, start, end):
                start, marked = leader.end(), True
            # (4) a leading subj-blob, if text (ending in non-space, by (2)) is left.
            blob = _LEADING_BLOB.match(text, start, end)
            if blob and blob.end() < end:
                start = blob.end()
            if start == before:
                break
        # (6) "[fwd:" subject "]": unwrap and start again at (2).
        if end - start >= 6 and text[start : start + 5].lower() == "[fwd:" and text[end - 1] == "]":
            start, end, marked = start + 5, end - 1, True
            continue
        return text[start:end], marked


# --- THREAD (RFC 5256 §2.2, §3) ------------------------------------------------------------


def thread(view: MailboxView, algorithm: str, key: SearchKey) -> list:
    """Threads of the messages matching `key`, by `algorithm` (ORDEREDSUBJECT or
    REFERENCES).

    Shape: a list of threads, each a node `[uid, children]` where `children` is a list
    of nodes of the same shape, siblings in order. The uid of a thread's root is None
    when the root is a placeholder for a missing parent (REFERENCES groups messages
    under one, RFC 5256 "((3)(5))"); only roots can be placeholders. format_thread()
    writes the wire form.
    """
    uids = search(view, key)
    columns = ["subject", "sent_date", "internaldate"]
    if algorithm == "REFERENCES":
        columns += ["message_id", "in_reply_to", "references"]
    rows = _rows(view.folder_id, uids, columns)
    sequence = {uid: n for n, uid in enumerate(view.uids, 1)}
    messages = [_ThreadMessage(uid, sequence[uid], *rows[uid]) for uid in uids if uid in rows]
    if algorithm == "ORDEREDSUBJECT":
        return _ordered_subject(messages)
    if algorithm == "REFERENCES":
        return _references(messages)
    raise ValueError(f"unknown THREAD algorithm {algorithm}")


class _ThreadMessage:
    __slots__ = ("uid", "seq", "subject", "sent", "message_id", "in_reply_to", "references", "_base")

    def __init__(self, uid, seq, subject, sent_date, internaldate, message_id="", in_reply_to="", references=""):
        self.uid, self.seq, self.subject = uid, seq, subject
        # RFC 5256 §2.2 sent date: the Date: field's, else INTERNALDATE; ties by sequence.
        self.sent = (sent_date or internaldate, seq)
        self.message_id, self.in_reply_to, self.references = message_id, in_reply_to, references
        self._base = None

    @property
    def base(self):
        """(base subject under i;ascii-casemap, reply-or-forward flag)."""
        if self._base is None:
            text, marked = base_subject(self.subject)
            self._base = (casemap(text), marked)
        return self._base


def _ordered_subject(messages):
    """RFC 5256 §3 ORDEREDSUBJECT: messages grouped by base subject, each group's
    first by sent date the parent of all the others; threads by their first's date."""
    ordered = sorted(messages, key=lambda m: (m.base[0], m.sent))
    threads = []
    for message in ordered:
        if threads and threads[-1][0].base[0] == message.base[0]:
            threads[-1][1].append([message.uid, []])
        else:
            threads.append((message, []))
    threads.sort(key=lambda pair: pair[0].sent)
    return [[first.uid, children] for first, children in threads]


class _Container:
    """A node of the REFERENCES tree; `message` is None for a placeholder."""

    __slots__ = ("message", "parent", "children")

    def __init__(self, message=None):
        self.message = message
        self.parent = None
        self.children = []

    def is_ancestor_of(self, other):
        node = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def adopt(self, child):
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def first(self):
        """The message that stands for this node: its own, or (a placeholder) its first child's."""
        return self.message if self.message is not None else self.children[0].message


_MSG_ID = re.compile(r"<[^<>\s]+>")


def _valid_ids(text):
    return _MSG_ID.findall(text or "")


def _references(messages):
    """RFC 5256 §3 THREAD=REFERENCES."""
    by_id = {}

    def container(msg_id):
        node = by_id.get(msg_id)
        if node is None:
            node = by_id[msg_id] = _Container()
        return node

    # (1) Link messages by their references (messages come in sequence order).
    for message in messages:
        ids = _valid_ids(message.message_id)
        msg_id = ids[0] if ids else None
        if msg_id is None or (msg_id in by_id and by_id[msg_id].message is not None):
            msg_id = ("unique", message.uid)  # none, or a duplicate: the first keeps it
        node = container(msg_id)
        node.message = message
        references = _valid_ids(message.references) or _valid_ids(message.in_reply_to)[:1]
        # (1A) each reference the parent of the next, never re-parenting, never a loop.
        previous = None
        for reference in references:
            current = container(reference)
            if previous is not None and current.parent is None and not current.is_ancestor_of(previous):
                previous.adopt(current)
            previous = current
        # (1B) the last reference is this message's parent, whatever it had before.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if previous is not None and not node.is_ancestor_of(previous):
            previous.adopt(node)

    # (2) The root set.
    root = _Container()
    root.children = [node for node in by_id.values() if node.parent is None]
    for node in root.children:
        node.parent = root
    by_id.clear()  # (3) the table is no longer needed
    _prune(root)
    # (4) Top level by sent date, a placeholder by its first child's.
    _sort_siblings(root)
    _merge_by_subject(root)
    _sort_siblings(root)  # (6) every set of siblings, youngest first
    return _as_lists(root)


def _descendants_first(root):
    """Every node under root, each after all of its descendants (no recursion: a
    thread can be thousands of messages deep)."""
    order, stack = [], [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return reversed(order)


def _prune(root):
    """(3) Drop placeholders without children; replace one with children by them,
    except at the top level when there are several."""
    for node in _descendants_first(root):
        kept = []
        for child in node.children:
            if child.message is None:
                if not child.children:
                    continue
                if node is not root or len(child.children) == 1:
                    for grandchild in child.children:
                        grandchild.parent = node
                    kept.extend(child.children)
                    continue
            kept.append(child)
        node.children = kept


def _sort_siblings(root):
    for node in _descendants_first(root):
        node.children.sort(key=lambda child: child.first().sent)


def _merge_by_subject(root):
    """(5) Gather top-level threads with the same base subject."""
    table = {}
    for node in root.children:
        subject, marked = node.first().base
        if not subject:
            continue
        held = table.get(subject)
        if (
            held is None
            or (node.message is None and held.message is not None)
            or (held.message is not None and held.message.base[1] and not marked)
        ):
            table[subject] = node
    tops = list(root.children)
    slot = {id(node): i for i, node in enumerate(tops)}
    for i in range(len(tops)):
        node = tops[i]
        if node is None:
            continue
        subject, marked = node.first().base
        held = table.get(subject) if subject else None
        if held is None or held is node:
            continue
        if held.message is None and node.message is None:
            for child in node.children:
                child.parent = held
            held.children.extend(node.children)
        elif held.message is None or (marked and not held.message.base[1]):
            held.children.append(node)
            node.parent = held
        else:
            placeholder = _Container()
            placeholder.parent = root
            for member in (held, node):
                member.parent = placeholder
                placeholder.children.append(member)
            tops[slot[id(held)]] = placeholder
            slot[id(placeholder)] = slot[id(held)]
            table[subject] = placeholder
        tops[i] = None
    root.children = [node for node in tops if node is not None]


def _as_lists(root):
    """The tree under root as nested [uid, children] lists."""
    result = []
    stack = [(child, result) for child in reversed(root.children)]
    while stack:
        node, siblings = stack.pop()
        entry = [node.message.uid if node.message is not None else None, []]
        siblings.append(entry)
        stack.extend((child, entry[1]) for child in reversed(node.children))
    return result


def format_thread(threads, number=None) -> bytes:
    """The RFC 5256 §4 THREAD response data for `threads` (as thread() returns them):
    b"(2)(3 6 (4 23)(44 7 96))". `number` maps a UID to what the client is sent
    (its sequence number for THREAD, the UID itself for UID THREAD)."""
    number = number or (lambda uid: uid)
    out = []
    # Work items: text to write, or a node to expand (in its own parentheses).
    stack = [item for node in reversed(threads) for item in (")", node, "(")]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        uid, children = item
        if uid is not None:
            chain = [str(number(uid))]
            while len(children) == 1:  # a chain of only children: "3 6 9"
                uid, children = children[0]
                chain.append(str(number(uid)))
            out.append(" ".join(chain) + (" " if children else ""))
        for child in reversed(children):
            stack.extend((")", child, "("))
    return "".join(out).encode("ascii")
