"""IMAP extensions over real sockets, exact replies: ESEARCH, SEARCHRES, SORT, THREAD,
CONDSTORE/QRESYNC, BINARY, PREVIEW, UTF8=ACCEPT, IMAP4rev2 behaviour, MOVE/UIDPLUS."""
import pytest

from mailstore import actions

pytestmark = pytest.mark.django_db(transaction=True)


def message(subject, *, sender="bob@example.test", date="Fri, 27 Nov 2026 10:00:00 +0000", body="Hello.", extra=""):
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\nDate: {date}\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def mailbox(alice):
    """Five messages in alice's INBOX, some flagged."""
    put = lambda raw, flags=(): actions.append(alice, "INBOX", raw, flags=flags)  # noqa: E731
    put(message("Lunch", sender="carol@example.test", date="Wed, 25 Nov 2026 12:00:00 +0000", body="Pizza at noon?",
                extra="Message-ID: <a@x>\r\n"), ["\\Seen"])
    put(message("Re: Lunch", date="Wed, 25 Nov 2026 13:00:00 +0000", body="Yes, pizza.",
                extra="Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nReferences: <a@x>\r\n"), ["\\Seen", "\\Flagged"])
    put(message("Report", sender="dave@example.test", date="Thu, 26 Nov 2026 09:00:00 +0000",
                body="Quarterly numbers attached.", extra="Message-ID: <c@x>\r\n"))
    put(message("Grüße aus Köln", date="Thu, 26 Nov 2026 18:00:00 +0000", body="Schöne Grüße vom Rhein.",
                extra="Message-ID: <d@x>\r\n"))
    put(message("Re: Re: lunch", sender="carol@example.test", date="Fri, 27 Nov 2026 08:00:00 +0000",
                body="See you.", extra="Message-ID: <e@x>\r\nReferences: <a@x> <b@x>\r\n"))
    return alice


@pytest.fixture
def client(transcript, mailbox):
    client = transcript(login="alice@example.test")
    client.send("s SELECT INBOX")
    return client


def test_search_plain_and_nested(client):
    assert client.send("a SEARCH UNSEEN") == ["* SEARCH 3 4 5", "a OK SEARCH completed"]
    assert client.send("b SEARCH OR FLAGGED FROM dave") == ["* SEARCH 2 3", "b OK SEARCH completed"]
    assert client.send("c SEARCH NOT (OR SEEN FROM carol)") == ["* SEARCH 3 4", "c OK SEARCH completed"]
    assert client.send("c2 SEARCH SEEN OR FROM carol SUBJECT report") == ["* SEARCH 1", "c2 OK SEARCH completed"]
    assert client.send("d UID SEARCH TEXT pizza") == ["* SEARCH 1 2", "d OK SEARCH completed"]
    assert client.send("e SEARCH BODY numbers SINCE 26-Nov-2026") == ["* SEARCH 3", "e OK SEARCH completed"]
    assert client.send('f SEARCH CHARSET UTF-8 SUBJECT "grüße"') == ["* SEARCH 4", "f OK SEARCH completed"]
    assert client.send("g SEARCH SENTBEFORE 26-Nov-2026 2:5") == ["* SEARCH 2", "g OK SEARCH completed"]
    assert client.send("h SEARCH CHARSET KOI8-X ALL")[-1].startswith("h NO [BADCHARSET")


def test_esearch_and_searchres(client):
    assert client.send("a SEARCH RETURN (MIN MAX COUNT) UNSEEN") == [
        '* ESEARCH (TAG "a") MIN 3 MAX 5 COUNT 3', "a OK SEARCH completed",
    ]
    assert client.send("b UID SEARCH RETURN () ALL") == ['* ESEARCH (TAG "b") UID ALL 1:5', "b OK SEARCH completed"]
    assert client.send("c SEARCH RETURN (COUNT) KEYWORD $Nothing") == ['* ESEARCH (TAG "c") COUNT 0', "c OK SEARCH completed"]
    assert client.send("d SEARCH RETURN (SAVE) FROM carol") == ["d OK SEARCH completed"]
    assert client.send("e FETCH $ (UID)") == ["* 1 FETCH (UID 1)", "* 5 FETCH (UID 5)", "e OK FETCH completed"]
    assert client.send("f SEARCH $ SEEN") == ["* SEARCH 1", "f OK SEARCH completed"]


def test_imap4rev2_answers_esearch_and_no_recent(transcript, mailbox):
    client = transcript(login="alice@example.test")
    assert client.send("a ENABLE IMAP4rev2") == ["* ENABLED IMAP4rev2", "a OK ENABLE completed"]
    lines = client.send("b SELECT INBOX")
    assert not any("RECENT" in line for line in lines)
    assert '* LIST () "/" INBOX' in lines
    assert client.send("c SEARCH SEEN") == ['* ESEARCH (TAG "c") ALL 1:2', "c OK SEARCH completed"]


def test_sort(client):
    assert client.send("a SORT (DATE) UTF-8 ALL") == ["* SORT 1 2 3 4 5", "a OK SORT completed"]
    assert client.send("b SORT (REVERSE ARRIVAL) UTF-8 ALL") == ["* SORT 5 4 3 2 1", "b OK SORT completed"]
    assert client.send("c SORT (SUBJECT DATE) UTF-8 ALL") == ["* SORT 4 1 2 5 3", "c OK SORT completed"]
    assert client.send("d UID SORT (FROM) UTF-8 UNSEEN") == ["* SORT 4 5 3", "d OK SORT completed"]


def test_thread(client):
    assert client.send("a THREAD ORDEREDSUBJECT UTF-8 ALL") == ["* THREAD (1 (2)(5))(3)(4)", "a OK THREAD completed"]
    assert client.send("b THREAD REFERENCES UTF-8 ALL") == ["* THREAD (1 2 5)(3)(4)", "b OK THREAD completed"]


def test_condstore_fetch_and_search_modseq(client, mailbox):
    folder = mailbox.folders.get(name="INBOX")
    before = folder.highestmodseq
    client.send("a STORE 3 +FLAGS (\\Answered)")
    lines = client.send(f"b FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")
    assert lines == [f"* 3 FETCH (FLAGS (\\Answered) MODSEQ ({before + 1}))", "b OK FETCH completed"]
    assert client.send(f"c SEARCH MODSEQ {before + 1}") == [f"* SEARCH 3 (MODSEQ {before + 1})", "c OK SEARCH completed"]
    assert client.send("d STATUS INBOX (HIGHESTMODSEQ)") == [f"* STATUS INBOX (HIGHESTMODSEQ {before + 1})", "d OK STATUS completed"]


def test_qresync_reports_vanished(transcript, mailbox):
    folder = mailbox.folders.get(name="INBOX")
    client = transcript(login="alice@example.test")
    assert client.send("a ENABLE QRESYNC") == ["* ENABLED QRESYNC", "a OK ENABLE completed"]
    client.send("b SELECT INBOX")
    modseq = folder.highestmodseq
    client.send("c STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    assert client.send("d EXPUNGE") == ["* VANISHED 1,3", "d OK EXPUNGE completed"]
    client.send("e STORE 1 +FLAGS (\\Answered)")
    folder.refresh_from_db()
    lines = client.send(f"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == "* VANISHED (EARLIER) 1,3"
    assert lines[1].startswith("* 1 FETCH (UID 2 FLAGS (\\Seen \\Answered \\Flagged) MODSEQ (")
    client.send("g UNSELECT")
    lines = client.send(f"h SELECT INBOX (QRESYNC ({folder.uidvalidity} {modseq} 1:5))")
    assert "* VANISHED (EARLIER) 1,3" in lines
    assert any(line.startswith("* 1 FETCH (UID 2 FLAGS (") for line in lines)
    assert lines[-1] == "h OK [READ-WRITE] SELECT completed"
    assert client.tagged("i SELECT INBOX (QRESYNC (1 1))").startswith("i OK")


def test_qresync_parameter_needs_enable(client, mailbox):
    assert client.tagged("a SELECT INBOX (QRESYNC (1 1))") == "a BAD QRESYNC parameter without ENABLE QRESYNC"


def test_binary_and_preview(transcript, alice):
    raw = (
        b"From: bob@example.test\r\nSubject: Bin\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n'
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--b--\r\n"
    )
    actions.append(alice, "INBOX", raw)
    client = transcript(login="alice@example.test")
    client.send("a SELECT INBOX")
    assert client.send("b FETCH 1 (BINARY.SIZE[2])")[0] == "* 1 FETCH (BINARY.SIZE[2] 4)"
    client.write("c FETCH 1 (BINARY.PEEK[2])")
    assert client.file.readline() == b"* 1 FETCH (BINARY[2] ~{4}\r\n"
    assert client.file.read(4) == b"\x00\x01\x02\x03"
    assert client.until("c")[-1] == "c OK FETCH completed"
    assert client.send("d FETCH 1 (PREVIEW)")[0] == '* 1 FETCH (PREVIEW "See attached.")'


def test_move_within_qresync_and_uidplus(client, mailbox):
    archive = mailbox.folders.get(name="Archive")
    assert client.send("a UID MOVE 2:3 Archive") == [
        f"* OK [COPYUID {archive.uidvalidity} 2:3 1:2] Moved", "* 3 EXPUNGE", "* 2 EXPUNGE", "a OK MOVE completed",
    ]
    client.send("b STORE 1 +FLAGS.SILENT (\\Deleted)")
    client.send("c STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert client.send("d UID EXPUNGE 4") == ["* 2 EXPUNGE", "d OK EXPUNGE completed"]
    assert client.send("e FETCH 1:* UID") == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 5)", "e OK FETCH completed"]


def test_the_daily_prune_forgets_old_tombstones_only(mailbox, settings):
    from datetime import timedelta

    from django.utils import timezone

    from mailstore.models import ExpungedMessage
    from mta.tasks import prune

    folder = mailbox.folders.get(name="INBOX")
    actions.expunge(folder, [1])
    actions.expunge(folder, [2])
    ExpungedMessage.objects.filter(uid=1).update(expunged_at=timezone.now() - timedelta(days=settings.MAILSUITE_EXPUNGED_DAYS + 1))
    prune()
    assert list(ExpungedMessage.objects.values_list("uid", flat=True)) == [2]


def test_objectid_threadid_names_the_conversation_in_every_mailbox(client, mailbox):
    assert " OBJECTID" in client.send("z CAPABILITY")[0]
    # RFC 8474 §5.2: Lunch, its reply and the reply to that share a THREADID; Report its own.
    lines = client.send("a FETCH 1:5 (THREADID)")
    assert lines[-1] == "a OK FETCH completed"
    ids = [line.split("THREADID (")[1].rstrip(")") for line in lines[:-1]]
    assert ids[0] == ids[1] == ids[4] and len({ids[0], ids[2], ids[3]}) == 3
    assert all(len(i) == 17 and i.startswith("T") for i in ids)
    assert client.send(f"b SEARCH THREADID {ids[0]}") == ["* SEARCH 1 2 5", "b OK SEARCH completed"]
    assert client.send("c SEARCH THREADID T0000000000000000") == ["* SEARCH", "c OK SEARCH completed"]
    # A copy in another mailbox keeps the thread's id, and so does a new reply filed there.
    assert client.send("d COPY 2 Archive")[-1].startswith("d OK [COPYUID ")
    actions.append(mailbox, "Archive", message("Re: Lunch again", extra="Message-ID: <f@x>\r\nReferences: <a@x>\r\n"))
    client.send("g SELECT Archive")
    assert client.send("h FETCH 1:2 (THREADID)") == [
        f"* 1 FETCH (THREADID ({ids[0]}))", f"* 2 FETCH (THREADID ({ids[0]}))", "h OK FETCH completed",
    ]
