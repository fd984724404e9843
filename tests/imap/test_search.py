"""SEARCH, SORT and THREAD over a folder (imap.search), and the text index behind them."""
import importlib
import re
from datetime import datetime, timezone

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from imap import fetch
from imap.parser import All, Flag, SortCriterion, parse_command
from imap.search import MailboxView, base_subject, format_thread, search, sort, thread
from mailstore import actions, search_index
from mailstore.actions import IncomingMessage, Job, Placement, Recipient, place_messages
from mailstore.models import Blob, Folder, Message
from tests.conftest import database_vendor


@pytest.fixture(autouse=True)
def unsynced_blobs(settings, blob_dir):
    """Blob bytes in plain files: durability is not what these tests are about, and
    fsyncing thousands of messages would be most of their time."""
    blobs = {**settings.STORAGES["blobs"], "BACKEND": "django.core.files.storage.FileSystemStorage"}
    settings.STORAGES = {**settings.STORAGES, "blobs": blobs}


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def raw_message(headers, body="", *, content_type="text/plain; charset=utf-8", encoding=None):
    lines = [f"{name}: {value}" for name, value in headers.items() if value is not None]
    lines.append(f"Content-Type: {content_type}")
    if encoding:
        lines.append(f"Content-Transfer-Encoding: {encoding}")
    head = "\r\n".join(lines).encode("utf-8")
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    return head + b"\r\n\r\n" + data


def headers(subject, *, sender="Bob <bob@example.test>", to="Alice <alice@example.test>",
            date="Mon, 02 Jan 2023 10:00:00 +0000", **more):
    fields = {"From": sender, "To": to, "Subject": subject, "Date": date}
    fields.update({name.replace("_", "-"): value for name, value in more.items()})
    return fields


# name -> (raw message, flags, internaldate): the corpus the SEARCH table runs on.
CORPUS = {
    "lunch": (
        raw_message(headers("Lunch tomorrow", Message_ID="<lunch@example.test>"), "Shall we meet at noon?\r\n"),
        ("\\Seen",), utc(2023, 1, 2, 10, 5),
    ),
    "reply": (
        raw_message(
            headers("Re: Lunch tomorrow", sender="Alice <alice@example.test>", to="bob@example.test",
                    date="Mon, 02 Jan 2023 11:00:00 +0000", In_Reply_To="<lunch@example.test>",
                    References="<lunch@example.test>"),
            "Noon is fine. Lunch at the usual place.\r\n",
        ),
        ("\\Seen", "\\Answered"), utc(2023, 1, 2, 11, 1),
    ),
    "german": (
        raw_message(
            headers("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=", sender="=?iso-8859-1?q?J=F6rg?= <joerg@example.de>",
                    date="Tue, 03 Jan 2023 09:00:00 +0100"),
            "Sch=C3=B6ne Gr=C3=BC=C3=9Fe vom Oktoberfest, =C3=84rger gab es keinen.\r\n", encoding="quoted-printable",
        ),
        (), utc(2023, 1, 3, 8, 0),
    ),
    "russian": (
        raw_message(
            headers("=?utf-8?b?0J/RgNC40LLQtdGCINC40Lcg0JzQvtGB0LrQstGL?=", sender="=?utf-8?b?0JjQstCw0L0=?= <ivan@example.ru>",
                    date="Wed, 04 Jan 2023 12:00:00 +0300"),
            "Встреча в ПОНЕДЕЛЬНИК.\r\n".encode("koi8-r"), content_type="text/plain; charset=koi8-r",
        ),
        ("\\Flagged",), utc(2023, 1, 4, 9, 0),
    ),
    "bcc": (
        raw_message(headers("Quarterly figures", Bcc="secret@example.test", Cc="Carol <carol@example.test>",
                            date="Thu, 05 Jan 2023 08:00:00 +0000"), "Numbers attached.\r\n"),
        ("\\Seen", "$Forwarded"), utc(2023, 1, 5, 8, 0),
    ),
    "big": (
        raw_message(headers("Holiday photos", date="Fri, 06 Jan 2023 08:00:00 +0000"), "photo " * 4000),
        ("\\Seen",), utc(2023, 1, 6, 8, 0),
    ),
    "junk": (
        raw_message(headers("You won a prize", sender="Spammer <win@spam.test>", date="Fri, 06 Jan 2023 09:00:00 +0000",
                            X_Spam_Flag="YES"), "Click here to claim your prize.\r\n"),
        ("$Junk",), utc(2023, 1, 6, 9, 0),
    ),
    "zone": (
        # 23:30 on the 1st in New York is the 2nd in UTC: SENTON looks at the 1st.
        raw_message(headers("Late night thoughts", date="Sun, 01 Jan 2023 23:30:00 -0500"), "Happy new year.\r\n"),
        ("\\Seen",), utc(2023, 1, 2, 4, 31),
    ),
    "nodate": (
        raw_message(headers("No date at all", date=None), "Timeless.\r\n"),
        ("\\Seen",), utc(2023, 1, 7, 0, 0),
    ),
    "html": (
        raw_message(headers("Newsletter", sender="News <news@shop.test>", date="Sat, 07 Jan 2023 10:00:00 +0000"),
                    "<html><body><p>Gro&szlig;er <b>Rabatt</b> heute!</p></body></html>", content_type="text/html; charset=utf-8"),
        (), utc(2023, 1, 7, 10, 0),
    ),
    "draft": (
        raw_message(headers("Unfinished", sender="Alice <alice@example.test>", date="Sun, 08 Jan 2023 10:00:00 +0000"),
                    "Dear Bob, I wanted to say\r\n"),
        ("\\Draft", "\\Seen"), utc(2023, 1, 8, 10, 0),
    ),
    "deleted": (
        raw_message(headers("Old news", date="Sun, 08 Jan 2023 11:00:00 +0000"), "Nothing to see.\r\n"),
        ("\\Deleted", "\\Seen"), utc(2023, 1, 8, 11, 0),
    ),
    "cc": (
        raw_message(headers("Team meeting", Cc="=?utf-8?q?Zo=C3=AB?= <zoe@example.test>, dave@example.test",
                            date="Mon, 09 Jan 2023 09:00:00 +0000"), "Agenda: budget, hiring.\r\n"),
        (), utc(2023, 1, 9, 9, 0),
    ),
    "quote": (
        raw_message(headers('He said "100% sure"', date="Mon, 09 Jan 2023 10:00:00 +0000"),
                    'He said "100% sure" and_left.\r\n'),
        ("\\Seen",), utc(2023, 1, 9, 10, 0),
    ),
    "multipart": (
        raw_message(
            headers("Report attached", date="Tue, 10 Jan 2023 10:00:00 +0000"),
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the report.\r\n"
            "--b\r\nContent-Type: text/plain; charset=utf-8; name=notes.txt\r\nContent-Disposition: attachment\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nWmVpdHBsYW4gZsO8ciBkYXMgUHJvamVrdA==\r\n--b--\r\n",
            content_type='multipart/mixed; boundary="b"',
        ),
        ("\\Seen",), utc(2023, 1, 10, 10, 0),
    ),
    "short": (
        raw_message(headers("Ok", date="Tue, 10 Jan 2023 11:00:00 +0000"), "ÄÖ\r\n"),
        (), utc(2023, 1, 10, 11, 0),
    ),
    "fwd": (
        raw_message(headers("Fwd: Holiday photos", sender="Carol <carol@example.test>",
                            date="Wed, 11 Jan 2023 10:00:00 +0000"), "Look at these.\r\n"),
        ("\\Seen", "$Forwarded"), utc(2023, 1, 11, 10, 0),
    ),
    "keywords": (
        raw_message(headers("Tagged", date="Wed, 11 Jan 2023 11:00:00 +0000"), "Important work.\r\n"),
        ("$Important", "Work"), utc(2023, 1, 11, 11, 0),
    ),
    "upper": (
        raw_message(headers("SHOUTING SUBJECT", sender="LOUD <LOUD@EXAMPLE.TEST>", date="Thu, 12 Jan 2023 10:00:00 +0000"),
                    "THIS BODY IS ALL CAPS, ÜBER LAUT.\r\n"),
        (), utc(2023, 1, 12, 10, 0),
    ),
}
DELIVERED = raw_message(headers("Delivered by SMTP", date="Fri, 13 Jan 2023 10:00:00 +0000"), "Via the MDA.\r\n")


def view_of(folder):
    """A session's view, as the session would build it at SELECT."""
    rows = Message.objects.filter(folder=folder).order_by("uid")
    return MailboxView(
        folder_id=folder.pk,
        uids=[m.uid for m in rows],
        flags={m.uid: tuple(m.flags) for m in rows},
        modseqs={m.uid: m.modseq for m in rows},
        saved=None,
    )


@pytest.fixture
def corpus(alice):
    """(view, name -> UID) over the CORPUS appended to alice's INBOX, plus one delivered."""
    incomings = [IncomingMessage(raw) for raw, _, _ in CORPUS.values()]
    jobs = [
        Job(incoming, [Placement(alice, flags=flags, internaldate=internaldate)])
        for incoming, (_, flags, internaldate) in zip(incomings, CORPUS.values())
    ]
    with actions.forget_new_blobs_on_rollback(incomings), transaction.atomic():
        place_messages(jobs)  # what append() does, for all of them in one transaction
    names = {name: job.outcomes[0].message.uid for name, job in zip(CORPUS, jobs)}
    [outcome] = actions.deliver(DELIVERED, [Recipient(alice, "alice@example.test")], return_path="bob@example.test",
                                received_at=utc(2023, 1, 13, 10, 0))
    names["delivered"] = outcome.message.uid
    folder = Folder.objects.get(account=alice, name="INBOX")
    return view_of(folder), names


def key_of(program):
    return parse_command(f"a SEARCH CHARSET UTF-8 {program}".encode(), utf8=True).key


ALL = set(CORPUS) | {"delivered"}
SEEN = {"lunch", "reply", "bcc", "big", "zone", "nodate", "draft", "deleted", "quote", "multipart", "fwd"}

SEARCHES = [
    ("ALL", ALL),
    ("SEEN", SEEN),
    ("UNSEEN", ALL - SEEN),
    ("ANSWERED", {"reply"}),
    ("UNANSWERED", ALL - {"reply"}),
    ("FLAGGED", {"russian"}),
    ("DELETED", {"deleted"}),
    ("UNDELETED", ALL - {"deleted"}),
    ("DRAFT", {"draft"}),
    ("UNDRAFT", ALL - {"draft"}),
    # No \Recent in IMAP4rev2: RECENT and NEW match nothing, OLD everything.
    ("RECENT", set()),
    ("NEW", set()),
    ("OLD", ALL),
    # Keywords match exactly.
    ("KEYWORD $Junk", {"junk"}),
    ("KEYWORD $junk", set()),
    ("KEYWORD $Forwarded", {"bcc", "fwd"}),
    ("UNKEYWORD $Forwarded", ALL - {"bcc", "fwd"}),
    ("KEYWORD Work KEYWORD $Important", {"keywords"}),
    # Header fields, decoded, case-insensitive.
    ("FROM bob@example.test", {"lunch", "bcc", "big", "zone", "nodate", "deleted", "cc", "quote", "multipart", "short",
                               "keywords", "delivered"}),
    ('FROM "jörg"', {"german"}),
    ('FROM "JÖRG"', {"german"}),
    ('FROM "иван"', {"russian"}),
    ("FROM loud@example.test", {"upper"}),
    ("FROM spam.test", {"junk"}),
    ('SUBJECT "grüße aus"', {"german"}),
    ('SUBJECT "MÜNCHEN"', {"german"}),
    ('SUBJECT "привет из москвы"', {"russian"}),
    ('SUBJECT "ПРИВЕТ"', {"russian"}),
    ("SUBJECT lunch", {"lunch", "reply"}),
    ('SUBJECT "re: lunch"', {"reply"}),
    ("SUBJECT holiday", {"big", "fwd"}),
    ('SUBJECT "100% sure"', {"quote"}),
    ('SUBJECT "\\"100"', {"quote"}),
    ("SUBJECT ok", {"short"}),
    ('SUBJECT "ü"', {"german"}),
    ('SUBJECT "Ü"', {"german"}),
    ('SUBJECT "%"', {"quote"}),
    ("TO bob@example.test", {"reply"}),
    ("TO alice", ALL - {"reply"}),
    ("CC carol", {"bcc"}),
    ('CC "zoë"', {"cc"}),
    ('CC "ZOË"', {"cc"}),
    ("CC dave", {"cc"}),
    ("BCC secret", {"bcc"}),
    ("BCC secret@example.test", {"bcc"}),
    ("BCC nobody", set()),
    ('HEADER X-Spam-Flag ""', {"junk"}),
    ("HEADER x-spam-flag yes", {"junk"}),
    ('HEADER In-Reply-To "<lunch@"', {"reply"}),
    ('HEADER Message-ID "lunch@example"', {"lunch"}),
    ('HEADER Bcc ""', {"bcc"}),
    ('HEADER Cc ""', {"bcc", "cc"}),
    ('HEADER Date ""', ALL - {"nodate"}),
    # The per-copy prefix the MDA writes is header too.
    ('HEADER Delivered-To "alice@example.test"', {"delivered"}),
    ('HEADER Return-Path ""', {"delivered"}),
    # Bodies: decoded from quoted-printable, base64, KOI8-R and HTML; attachments too.
    ("BODY noon", {"lunch", "reply"}),
    ("BODY lunch", {"reply"}),
    ('BODY "schöne grüße"', {"german"}),
    ('BODY "ÄRGER"', {"german"}),
    ('BODY "понедельник"', {"russian"}),
    ('BODY "Встреча"', {"russian"}),
    ("BODY rabatt", {"html"}),
    ('BODY "großer rabatt"', {"html"}),
    ('BODY "zeitplan für"', {"multipart"}),
    ('BODY "über laut"', {"upper"}),
    ('BODY "100% sure"', {"quote"}),
    ('BODY "and_left"', {"quote"}),
    ('BODY "\\"100"', {"quote"}),
    ("BODY Munich", set()),
    ("BODY Lunch", {"reply"}),
    ('BODY "ä"', {"short", "german"}),
    ('BODY "äö"', {"short"}),
    ('BODY "ÄÖ"', {"short"}),
    ("BODY ok", {"german", "fwd"}),
    ('BODY "grüße"', {"german"}),
    ('BODY "MÜNCHEN"', set()),  # only in the subject
    ('BODY ""', ALL),
    # TEXT: header or body.
    ('TEXT "MÜNCHEN"', {"german"}),
    ("TEXT noon", {"lunch", "reply"}),
    ("TEXT secret", {"bcc"}),
    ("TEXT spam.test", {"junk"}),
    ('TEXT "Delivered-To: alice"', {"delivered"}),
    ('TEXT "понедельник"', {"russian"}),
    ("TEXT zz", set()),
    # Sizes, dates.
    ("LARGER 10000", {"big"}),
    ("NOT SMALLER 10000", {"big"}),
    ("SMALLER 100", set()),
    ("ON 2-Jan-2023", {"lunch", "reply", "zone"}),
    ("BEFORE 3-Jan-2023", {"lunch", "reply", "zone"}),
    ("SINCE 12-Jan-2023", {"upper", "delivered"}),
    ("SINCE 8-Jan-2023 BEFORE 9-Jan-2023", {"draft", "deleted"}),
    ("SENTON 1-Jan-2023", {"zone"}),
    ("SENTON 2-Jan-2023", {"lunch", "reply"}),
    ("SENTBEFORE 2-Jan-2023", {"zone"}),
    ("SENTON 3-Jan-2023", {"german"}),
    ("SENTSINCE 12-Jan-2023", {"upper", "delivered"}),
    ("NOT SENTSINCE 2-Jan-2023", {"zone", "nodate"}),
    ("NOT SENTON 2-Jan-2023 NOT SENTSINCE 3-Jan-2023", {"zone", "nodate"}),
    # Nesting.
    ("OR FLAGGED DRAFT", {"russian", "draft"}),
    ("NOT (OR SEEN FLAGGED)", ALL - SEEN - {"russian"}),
    ("OR (SUBJECT lunch LARGER 10000) KEYWORD $Junk", {"junk"}),
    ("OR (SUBJECT holiday LARGER 10000) KEYWORD $Junk", {"big", "junk"}),
    ("OR OR FLAGGED DRAFT (SEEN BODY noon)", {"russian", "draft", "lunch", "reply"}),
    ("NOT OR BODY noon SUBJECT holiday", ALL - {"lunch", "reply", "big", "fwd"}),
    ("SEEN NOT BODY noon NOT LARGER 1000 SINCE 5-Jan-2023 BEFORE 10-Jan-2023", {"bcc", "nodate", "draft", "deleted", "quote"}),
    ("OR LARGER 10000 SENTON 1-Jan-2023", {"big", "zone"}),
    ("NOT (SEEN UNSEEN)", ALL),
    ("EMAILID Mnothing", set()),
    ("THREADID T1", set()),
    ("NOT THREADID T1", ALL),
]


@pytest.mark.django_db
@pytest.mark.parametrize("program, expected", SEARCHES, ids=[row[0] for row in SEARCHES])
def test_it_searches(corpus, program, expected):
    view, names = corpus
    found = search(view, key_of(program))
    assert found == sorted(found)
    assert {name for name, uid in names.items() if uid in found} == expected
    assert len(found) == len(expected)


@pytest.mark.django_db
def test_sequence_numbers_uids_and_the_saved_result_come_from_the_view(corpus):
    view, names = corpus
    # The session's view: message 3 expunged (not yet from the database) and seen later.
    view.uids = [uid for uid in view.uids if uid != 3]
    view.saved = [2, 5, 9, 99]
    assert view.uids[:4] == [1, 2, 4, 5]
    assert search(view, key_of("1:3")) == [1, 2, 4]
    assert search(view, key_of("2,4")) == [2, 5]
    assert search(view, key_of("*")) == [view.uids[-1]]
    assert search(view, key_of(f"{len(view.uids) - 1}:*")) == view.uids[-2:]
    assert search(view, key_of("UID 2:4")) == [2, 4]
    assert search(view, key_of("UID 3")) == []
    assert search(view, key_of("UID *")) == [view.uids[-1]]
    assert search(view, key_of("UID 1000:*")) == [view.uids[-1]]  # RFC 9051 §6.4.8
    assert search(view, key_of("UID 1,3:5,7:8,10,12,14:16")) == [1, 4, 5, 7, 8, 10, 12, 14, 15, 16]
    assert search(view, key_of("$")) == [2, 5, 9]
    assert search(view, key_of("UID $")) == [2, 5, 9]
    assert search(view, key_of("NOT $ 1:6")) == [1, 4, 6, 7]
    view.saved = None
    assert search(view, key_of("$")) == []
    assert search(view, key_of("ALL")) == view.uids


@pytest.mark.django_db
def test_flags_and_modseqs_come_from_the_view_not_the_database(corpus):
    view, names = corpus
    view.flags[names["lunch"]] = ("\\Flagged", "$Later")
    view.flags[names["russian"]] = ()
    assert search(view, key_of("FLAGGED")) == [names["lunch"]]
    assert search(view, key_of("KEYWORD $Later")) == [names["lunch"]]
    assert search(view, key_of("flagged")) == [names["lunch"]]  # keys are case-insensitive
    assert names["lunch"] in search(view, key_of("UNSEEN"))
    assert search(view, Flag("\\FLAGGED")) == [names["lunch"]]  # system flags too

    highest = max(view.modseqs.values())
    view.modseqs[names["german"]] = highest + 5
    assert search(view, key_of(f"MODSEQ {highest + 1}")) == [names["german"]]
    assert search(view, key_of(f'MODSEQ "/flags/\\\\seen" all {highest + 5}')) == [names["german"]]
    assert len(search(view, key_of("MODSEQ 1"))) == len(view.uids)


@pytest.mark.django_db
def test_emailid_is_what_fetch_says(corpus, alice):
    view, names = corpus
    for name in ("junk", "delivered"):  # without and with a per-copy prefix
        message = Message.objects.get(folder_id=view.folder_id, uid=names[name])
        assert search(view, key_of(f"EMAILID {fetch.email_id(message)}")) == [names[name]]
    copy = actions.append(alice, "INBOX", CORPUS["junk"][0])
    assert search(view, key_of(f"NOT EMAILID {fetch.email_id(copy)}")) == sorted(set(view.uids) - {names["junk"]})
    assert search(view, key_of("EMAILID M99999999999999999999999")) == []


@pytest.mark.django_db
def test_a_message_gone_from_the_database_matches_only_view_keys(corpus):
    view, names = corpus
    folder = Folder.objects.get(pk=view.folder_id)
    actions.expunge(folder, [names["big"]])
    assert names["big"] in search(view, key_of("SEEN"))
    assert search(view, key_of("LARGER 10000")) == []
    assert search(view, key_of("BODY photo")) == []
    assert search(view, key_of("SUBJECT holiday")) == [names["fwd"]]


@pytest.mark.django_db
def test_an_empty_view_finds_nothing(alice):
    folder = Folder.objects.get(account=alice, name="INBOX")
    view = MailboxView(folder.pk, [], {}, {}, None)
    assert search(view, key_of("ALL")) == []
    assert search(view, key_of("*")) == []
    assert search(view, key_of("UID *")) == []
    assert search(view, key_of("OR BODY x LARGER 1")) == []
    assert sort(view, (SortCriterion("DATE"),), All()) == []
    assert thread(view, "REFERENCES", All()) == []


# --- The index ---------------------------------------------------------------------------


class _Recorder:
    def __init__(self):
        self.statements = []

    def __call__(self, execute, sql, params, many, context):
        self.statements.append((sql, params))
        return execute(sql, params, many, context)


@pytest.mark.django_db
@pytest.mark.sqlite_only
@pytest.mark.skipif(database_vendor() != "sqlite3", reason="SQLite's FTS5 index")
@pytest.mark.parametrize("program, table", [
    ("TEXT noon", "mailstore_blob_text_fts"),
    ("TEXT noon", "mailstore_blob_header_fts"),
    ("BODY noon", "mailstore_blob_text_fts"),
    ('SUBJECT "lunch"', "mailstore_blob_header_fts"),
])
def test_text_searches_are_index_lookups(corpus, program, table):
    view, names = corpus
    search_index.catch_up()
    recorder = _Recorder()
    with connection.execute_wrapper(recorder):
        search(view, key_of(program))
    using = [(sql, params) for sql, params in recorder.statements if table in sql]
    assert using, recorder.statements
    assert not any("instr(" in sql for sql, _ in recorder.statements)
    with connection.cursor() as cursor:
        for sql, params in using:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " / ".join(row[-1] for row in cursor.fetchall())
            # FTS5 names a MATCH constraint "M" in its index string.
            assert re.search(rf"{table} VIRTUAL TABLE INDEX \d+:M", plan), plan
            # The bodies are never read: the index answers.
            assert "SCAN mailstore_blob " not in plan + " " and "SEARCH mailstore_blob " not in plan + " ", plan


@pytest.mark.django_db
@pytest.mark.sqlite_only
@pytest.mark.skipif(database_vendor() != "sqlite3", reason="SQLite's FTS5 triggers")
def test_the_index_follows_every_change_to_blobs(corpus):
    view, names = corpus
    triggers = {
        row[0] for row in connection.cursor().execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    assert {
        "mailstore_blob_fts_insert", "mailstore_blob_fts_delete", "mailstore_blob_fts_update",
    } <= triggers
    message = Message.objects.get(folder_id=view.folder_id, uid=names["junk"])
    blob = message.blob
    Blob.objects.filter(pk=blob.pk).update(search_text="Something else entirely", header_text="Subject: changed")
    assert search(view, key_of("BODY prize")) == []
    assert search(view, key_of("BODY entirely")) == [names["junk"]]
    assert search(view, key_of("SUBJECT changed")) == [names["junk"]]
    Message.objects.filter(pk=message.pk).delete()
    Blob.objects.filter(pk=blob.pk).delete()
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts) VALUES ('integrity-check')")
        cursor.execute("SELECT count(*) FROM mailstore_blob_header_fts WHERE rowid = %s", [blob.pk])
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT count(*) FROM mailstore_blob_header_fts")
        assert cursor.fetchone() == (Blob.objects.count(),)


@pytest.mark.django_db
@pytest.mark.skipif(database_vendor() != "postgresql", reason="PostgreSQL's pg_trgm indexes")
@pytest.mark.parametrize("column", ["search_text", "header_text"])
def test_postgresql_answers_ilike_from_the_trigram_index(corpus, column):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # as on a table too big to scan
        cursor.execute(f"EXPLAIN SELECT id FROM mailstore_blob WHERE {column} ILIKE %s", ["%noon%"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"Bitmap Index Scan on mailstore_blob_{column}_trgm" in plan, plan


@pytest.mark.django_db
def test_the_migration_fills_the_header_of_blobs_stored_before_it(corpus):
    view, names = corpus
    migration = importlib.import_module("mailstore.migrations.0004_search_index")
    blob = Message.objects.get(folder_id=view.folder_id, uid=names["bcc"]).blob
    Blob.objects.filter(pk=blob.pk).update(header_text="")
    assert search(view, key_of("BCC secret")) == []
    from django.apps import apps

    class Editor:
        pass

    editor = Editor()
    editor.connection = connection
    migration.fill_header_text(apps, editor)
    assert search(view, key_of("BCC secret")) == [names["bcc"]]
    assert "Bcc: secret@example.test" in Blob.objects.get(pk=blob.pk).header_text.split("\n")


def _bulk_folder(account, count, distinct=50):
    """`count` messages in INBOX, `distinct` different ones placed many times each."""
    incomings = [
        IncomingMessage(raw_message(
            headers(f"Bulk message {i}", sender=f"Sender {i} <s{i}@bulk.test>", date=f"Mon, {i % 28 + 1:02d} Jan 2024 10:00:00 +0000"),
            f"Body number {i} with the word {'needle' if i == 7 else 'hay'} in it.\r\n" + "filler text " * 200,
        ))
        for i in range(distinct)
    ]
    per = count // distinct
    jobs = [Job(incoming, [Placement(account, flags=("\\Seen",) if i % 2 else ()) for _ in range(per)])
            for i, incoming in enumerate(incomings)]
    with actions.forget_new_blobs_on_rollback(incomings), transaction.atomic():
        place_messages(jobs)
    return view_of(Folder.objects.get(account=account, name="INBOX"))


@pytest.mark.django_db
@pytest.mark.slow
def test_search_over_5000_messages_costs_a_few_queries(alice):
    view = _bulk_folder(alice, 5000)
    assert len(view.uids) == 5000
    search_index.catch_up()  # as after the indexer has run (it runs after the commit, not in it)
    programs = {
        "ALL": 5000,
        "UNSEEN": 2500,
        "TEXT needle": 100,
        "BODY needle UNSEEN": 0,
        "OR BODY needle FROM s8@bulk.test": 200,
        "NOT (OR SUBJECT \"message 7\" LARGER 100000) SENTSINCE 2-Jan-2024 1:4000": 3700,
        'SEEN SUBJECT "Bulk" NOT BODY "hay" HEADER From "s7@"': 100,
        "BODY ha": 4900,
        "HEADER X-Nothing \"\"": 0,
    }
    for program, expected in programs.items():
        with CaptureQueriesContext(connection) as queries:
            found = search(view, key_of(program))
        assert len(found) == expected, program
        # PostgreSQL: 3 more around a text search (a savepoint here, and the planner hint);
        # SQLite: 1 more (whether messages wait to be indexed, mailstore.search_index).
        limit = 8 + (3 if database_vendor() == "postgresql" else 1)
        assert len(queries) <= limit, (program, [q["sql"][:200] for q in queries])


# --- SORT (RFC 5256 §3) -------------------------------------------------------------------

SORT_CORPUS = [
    # subject, from, to, cc, date, internaldate, body length
    ("Re: beta", "zed@x.test", "Amy <amy@x.test>", None, "Mon, 02 Jan 2023 10:00:00 +0000", utc(2023, 1, 5), 100),
    ("alpha", "Bob <bob@x.test>", "carl@x.test", "Dora <dora@x.test>", "Mon, 02 Jan 2023 09:00:00 +0000", utc(2023, 1, 4), 5000),
    ("[list] Fwd: Gamma", "alice@x.test", "bea@x.test", "aaron@x.test", None, utc(2023, 1, 1), 1000),
    ("Beta (fwd)", "Bob <BOB@x.test>", "=?utf-8?q?Z=C3=B6e?= <zoe@x.test>", None, "Mon, 02 Jan 2023 12:00:00 +0200", utc(2023, 1, 3), 3000),
    ("", "", "amy@x.test", None, "Mon, 02 Jan 2023 10:00:00 +0000", utc(2023, 1, 2), 2000),
]


@pytest.fixture
def sort_view(alice):
    for subject, sender, to, cc, date, internaldate, length in SORT_CORPUS:
        fields = {"From": sender or None, "To": to, "Cc": cc, "Subject": subject, "Date": date}
        actions.append(alice, "INBOX", raw_message(fields, "x" * length), internaldate=internaldate)
    return view_of(Folder.objects.get(account=alice, name="INBOX"))


def criteria_of(text):
    return parse_command(f"a SORT ({text}) UTF-8 ALL".encode()).criteria


@pytest.mark.django_db
@pytest.mark.parametrize("criteria, expected", [
    ("ARRIVAL", [3, 5, 4, 2, 1]),
    ("REVERSE ARRIVAL", [1, 2, 4, 5, 3]),
    # 4 is 10:00 UTC like 1 and 5: ties by sequence number. 3 has no Date: its INTERNALDATE.
    ("DATE", [3, 2, 1, 4, 5]),
    ("REVERSE DATE", [1, 4, 5, 2, 3]),
    ("SUBJECT", [5, 2, 1, 4, 3]),
    ("REVERSE SUBJECT", [3, 1, 4, 2, 5]),
    ("FROM", [5, 3, 2, 4, 1]),
    ("TO", [1, 5, 3, 2, 4]),
    ("CC", [1, 4, 5, 3, 2]),
    ("SIZE", [1, 3, 5, 4, 2]),
    ("SIZE REVERSE ARRIVAL", [1, 3, 5, 4, 2]),
    ("REVERSE SIZE ARRIVAL", [2, 4, 5, 3, 1]),
    ("SUBJECT REVERSE DATE", [5, 2, 1, 4, 3]),
    ("FROM SIZE", [5, 3, 4, 2, 1]),
    ("FROM REVERSE SIZE", [5, 3, 2, 4, 1]),
    ("REVERSE FROM", [1, 2, 4, 3, 5]),
])
def test_it_sorts(sort_view, criteria, expected):
    uids = sort(sort_view, criteria_of(criteria), All())
    # The fixture's UIDs are sequence numbers 1..5.
    assert uids == expected


@pytest.mark.django_db
def test_sort_sorts_only_what_matches(sort_view):
    assert sort(sort_view, criteria_of("REVERSE ARRIVAL"), key_of("OR 2 SUBJECT beta")) == [1, 2, 4]
    assert sort(sort_view, criteria_of("SUBJECT"), key_of("BODY nothing")) == []


@pytest.mark.parametrize("subject, base, marked", [
    ("Hello", "Hello", False),
    ("Re: Hello", "Hello", True),
    ("RE:hello", "hello", True),
    ("re: Re: RE: hello", "hello", True),
    ("Fw: hello", "hello", True),
    ("FWD: hello", "hello", True),
    ("Re [2]: hello", "hello", True),
    ("[list] Re: hello", "hello", True),
    ("[list] [team] Re: [x] hello", "hello", True),
    ("[list] hello", "hello", False),
    ("[list]", "[list]", False),
    ("[list] [other]", "[other]", False),
    ("hello (fwd)", "hello", True),
    ("hello (FWD)  (fwd) ", "hello", True),
    ("[Fwd: hello]", "hello", True),
    ("[fwd: Re: [list] hello (fwd)]", "hello", True),
    ("Re: [Fwd: hello]", "hello", True),
    ("  hello \t  world  ", "hello world", False),
    ("Re:", "", True),
    ("", "", False),
    ("Reply: hello", "Reply: hello", False),
    ("Réponse", "Réponse", False),
    ("Fwd hello", "Fwd hello", False),
    ("Grüße (fwd)", "Grüße", True),
])
def test_base_subject_follows_rfc_5256_section_2_1(subject, base, marked):
    assert base_subject(subject) == (base, marked)


# --- THREAD (RFC 5256 §3) -----------------------------------------------------------------


@pytest.fixture
def threaded(alice):
    """Append (name, subject, message-id, references, date) rows; returns (view, name -> uid)."""

    def build(rows):
        incomings = []
        for name, subject, msg_id, references, day in rows:
            fields = {
                "From": "a@x.test", "Subject": subject, "Message-ID": msg_id,
                "References": references, "Date": f"{day:02d} Jan 2023 10:00:00 +0000" if day else None,
            }
            incomings.append(IncomingMessage(raw_message(fields, "x")))
        jobs = [Job(incoming, [Placement(alice, internaldate=utc(2023, 2, 1))]) for incoming in incomings]
        with actions.forget_new_blobs_on_rollback(incomings), transaction.atomic():
            place_messages(jobs)
        names = {row[0]: job.outcomes[0].message.uid for row, job in zip(rows, jobs)}
        return view_of(Folder.objects.get(account=alice, name="INBOX")), names

    return build


def shape(threads, names):
    """The thread structure with names for UIDs."""
    by_uid = {uid: name for name, uid in names.items()}
    return format_thread(threads, number=lambda uid: by_uid[uid]).decode()


@pytest.mark.django_db
def test_references_threads_the_rfc_5256_section_4_example(threaded):
    # (2)(3 6 (4 23)(44 7 96)), written with names: b, c -> f -> (d -> w), (x -> g -> n)
    view, names = threaded([
        ("b", "two", "<b@x>", None, 1),
        ("c", "three", "<c@x>", None, 2),
        ("d", "Re: three", "<d@x>", "<c@x> <f@x>", 4),
        ("f", "Re: three", "<f@x>", "<c@x>", 3),
        ("g", "Re: three", "<g@x>", "<c@x> <f@x> <x@x>", 7),
        ("n", "Re: three", "<n@x>", "<c@x> <f@x> <x@x> <g@x>", 8),
        ("w", "Re: three", "<w@x>", "<c@x> <f@x> <d@x>", 5),
        ("x", "Re: three", "<x@x>", "<c@x> <f@x>", 6),
    ])
    assert shape(thread(view, "REFERENCES", All()), names) == "(b)(c f (d w)(x g n))"


@pytest.mark.django_db
def test_references_keeps_a_placeholder_for_a_missing_parent_of_several(threaded):
    view, names = threaded([
        ("a", "Re: lost", "<a@x>", "<gone@x>", 2),
        ("b", "Re: lost", "<b@x>", "<gone@x>", 1),
        ("c", "Re: alone", "<c@x>", "<missing@x> <also-missing@x>", 3),
        ("d", "other", "<d@x>", None, 4),
    ])
    threads = thread(view, "REFERENCES", All())
    # The placeholder of a and b sorts by its first child (b); c's lone parent vanished.
    assert shape(threads, names) == "((b)(a))(c)(d)"
    assert threads[0][0] is None


@pytest.mark.django_db
def test_references_gathers_threads_by_base_subject(threaded):
    view, names = threaded([
        ("hello", "Hello", "<h1@x>", None, 1),
        ("re-hello", "Re: Hello", "<h2@x>", None, 2),  # no References: joined by subject
        ("fwd-hello", "[Fwd: hello]", "<h3@x>", None, 3),
        ("news1", "News", "<n1@x>", None, 4),
        ("news2", "news", "<n2@x>", None, 5),  # neither a reply: both under a placeholder
        ("empty1", "", "<e1@x>", None, 6),
        ("empty2", "Re:", "<e2@x>", None, 7),  # empty base subjects are never gathered
    ])
    assert shape(thread(view, "REFERENCES", All()), names) == "(hello (re-hello)(fwd-hello))((news1)(news2))(empty1)(empty2)"


@pytest.mark.django_db
def test_references_survives_loops_duplicates_and_missing_ids(threaded):
    view, names = threaded([
        ("a", "loop", "<a@x>", "<b@x>", 1),
        ("b", "Re: loop", "<b@x>", "<a@x>", 2),  # a says b is its parent; b says a is: no loop
        ("dup1", "dup", "<dup@x>", None, 3),
        ("dup2", "dup two", "<dup@x>", None, 4),  # a duplicate id gets a unique one
        ("child", "Re: dup", "<c@x>", "<dup@x>", 5),  # so this is the first one's child
        ("noid", "no id", None, None, 6),
        ("self", "self", "<s@x>", "<s@x>", 7),
    ])
    result = shape(thread(view, "REFERENCES", All()), names)
    assert result == "(b a)(dup1 child)(dup2)(noid)(self)"


@pytest.mark.django_db
def test_references_sorts_siblings_by_sent_date_and_handles_deep_threads(threaded):
    rows = [("m0", "deep", "<m0@x>", None, 1)]
    for i in range(1, 1500):
        rows.append((f"m{i}", "Re: deep", f"<m{i}@x>", f"<m{i - 1}@x>", 2))
    rows.append(("late", "Re: deep", "<late@x>", "<m0@x>", 1))  # sent first: sorts before m1
    view, names = threaded(rows)
    result = shape(thread(view, "REFERENCES", All()), names)
    assert result == "(m0 (late)(" + " ".join(f"m{i}" for i in range(1, 1500)) + "))"


@pytest.mark.django_db
def test_ordered_subject_threads_by_base_subject_then_date(threaded):
    view, names = threaded([
        ("b2", "Re: beta", "<1@x>", None, 5),
        ("a1", "alpha", "<2@x>", None, 2),
        ("b1", "beta", "<3@x>", None, 3),
        ("a2", "Fwd: Alpha", "<4@x>", None, 4),
        ("b3", "[list] beta", "<5@x>", None, 1),
        ("c", "gamma", "<6@x>", None, 6),
        ("a3", "alpha (fwd)", "<7@x>", None, 7),
        ("nodate", "alpha", "<8@x>", None, None),  # INTERNALDATE, 1-Feb-2023: the latest
    ])
    # Threads by their first message's date: beta's first is b3 (1 Jan).
    assert shape(thread(view, "ORDEREDSUBJECT", All()), names) == "(b3 (b1)(b2))(a1 (a2)(a3)(nodate))(c)"
    assert shape(thread(view, "ORDEREDSUBJECT", key_of("SUBJECT gamma")), names) == "(c)"
    assert shape(thread(view, "ORDEREDSUBJECT", key_of("OR SUBJECT gamma SUBJECT Re:")), names) == "(b2)(c)"


@pytest.mark.parametrize("threads, wire", [
    ([], b""),
    ([[2, []], [3, [[6, [[4, [[23, []]]], [44, [[7, [[96, []]]]]]]]]]], b"(2)(3 6 (4 23)(44 7 96))"),
    ([[None, [[3, []], [5, []]]]], b"((3)(5))"),
    ([[1, [[2, []], [3, [[4, []]]]]]], b"(1 (2)(3 4))"),
    ([[None, [[1, [[2, []]]], [3, [[4, []], [5, []]]]]]], b"((1 2)(3 (4)(5)))"),
])
def test_format_thread_writes_the_rfc_5256_wire_form(threads, wire):
    assert format_thread(threads) == wire


def test_format_thread_maps_uids_to_sequence_numbers():
    assert format_thread([[10, [[20, []], [30, []]]]], number={10: 1, 20: 2, 30: 3}.__getitem__) == b"(1 (2)(3))"


def test_format_thread_handles_deep_branching_without_recursion():
    node = [0, []]
    top = node
    for i in range(1, 5000):
        leaf, deeper = [i * 10 + 1, []], [i * 10, []]
        node[1].extend([leaf, deeper])
        node = deeper
    wire = format_thread([top])
    assert wire.startswith(b"(0 (11)(10 (21)(20 ") and wire.endswith(b")" * 5000)


@pytest.mark.django_db
@pytest.mark.skipif(database_vendor() != "postgresql", reason="PostgreSQL's planner")
def test_postgresql_text_searches_run_with_sequential_scans_priced_out(corpus):
    view, names = corpus
    with CaptureQueriesContext(connection) as queries:
        assert search(view, key_of("BODY noon")) == sorted([names["lunch"], names["reply"]])
    statements = [q["sql"] for q in queries.captured_queries]
    ilike = next(i for i, sql in enumerate(statements) if "ILIKE" in sql)
    assert "SET LOCAL enable_seqscan = off" in statements[:ilike]
