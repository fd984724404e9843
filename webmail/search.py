"""Search criteria for the message list, answered by the mail store's text index.

The index (mailstore migration 0004) is what IMAP SEARCH uses (imap/search.py): on
SQLite FTS5 tables with the trigram tokenizer over Blob.search_text (decoded bodies)
and Blob.header_text (decoded header, one field a line); on PostgreSQL pg_trgm GIN
indexes on the same columns, queried with ILIKE. Both answer "contains this substring,
ignoring case" for needles of three characters or more. A field (from, to, subject) is
looked up in the header index first, then checked on the message's own decoded column,
so "from:bob" does not match a message that only mentions bob in its Cc. Shorter
needles have no trigram and are matched with LIKE on the account's rows.
"""
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

from mailstore import search_index

TEXT_FTS = "mailstore_blob_text_fts"
HEADER_FTS = "mailstore_blob_header_fts"
TRIGRAM = 3
MAX_NEEDLE = 200  # characters of one search term


def _phrase(needle):
    """An FTS5 phrase: with the trigram tokenizer, the needle as a substring."""
    return '"' + needle.replace('"', '""') + '"'


def _like(needle):
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _indexed(kind, needle):
    """Q: the message's blob has `needle` in its body text ("body") or header ("header")."""
    if connection.vendor == "postgresql":
        column = "search_text" if kind == "body" else "header_text"
        return Q(blob_id__in=RawSQL(f"SELECT id FROM mailstore_blob WHERE {column} ILIKE %s", [_like(needle)]))
    table = TEXT_FTS if kind == "body" else HEADER_FTS
    return Q(blob_id__in=RawSQL(f"SELECT rowid FROM {table} WHERE {table} MATCH %s", [_phrase(needle)]))


def body_q(needle):
    if len(needle) < TRIGRAM:
        return Q(blob__search_text__icontains=needle)
    return _indexed("body", needle)


def field_q(column, needle):
    """`column` (a decoded Message field) contains `needle`; narrowed by the header index."""
    q = Q(**{f"{column}__icontains": needle})
    return _indexed("header", needle) & q if len(needle) >= TRIGRAM else q


def text_q(needle):
    """Anywhere: the decoded header or the body."""
    if len(needle) < TRIGRAM:
        return Q(subject__icontains=needle) | Q(from_display__icontains=needle) | Q(blob__search_text__icontains=needle)
    return _indexed("header", needle) | _indexed("body", needle)


def _day(value):
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Criteria:
    text: str = ""
    sender: str = ""
    recipient: str = ""
    subject: str = ""
    body: str = ""
    since: date | None = None
    until: date | None = None
    everywhere: bool = False  # all folders, not only the current one

    @classmethod
    def from_params(cls, params):
        def term(name):
            return " ".join(str(params.get(name, "")).split())[:MAX_NEEDLE]

        return cls(
            text=term("q"),
            sender=term("from"),
            recipient=term("to"),
            subject=term("subject"),
            body=term("body"),
            since=_day(params.get("since")),
            until=_day(params.get("until")),
            everywhere=params.get("in") == "all",
        )

    def __bool__(self):
        return any((self.text, self.sender, self.recipient, self.subject, self.body, self.since, self.until))

    def params(self):
        values = {
            "q": self.text, "from": self.sender, "to": self.recipient, "subject": self.subject, "body": self.body,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        if self.everywhere:
            values["in"] = "all"
        return values

    def q(self):
        if self.text or self.sender or self.recipient or self.subject or self.body:
            search_index.catch_up()  # SQLite: the messages stored a moment ago too
        q = Q()
        if self.text:
            q &= text_q(self.text)
        if self.sender:
            q &= field_q("from_display", self.sender)
        if self.recipient:
            q &= field_q("to_display", self.recipient) | field_q("cc_display", self.recipient)
        if self.subject:
            q &= field_q("subject", self.subject)
        if self.body:
            q &= body_q(self.body)
        if self.since:
            q &= Q(sent_date__gte=datetime.combine(self.since, time.min, tzinfo=timezone.utc))
        if self.until:
            q &= Q(sent_date__lt=datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=timezone.utc))
        return q
