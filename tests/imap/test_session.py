"""IMAP sessions over real loopback sockets: transcripts of exact replies, and imaplib."""
import imaplib
import time

import pytest

from accounts.models import Account
from imap.mailbox import changes_since
from mailstore import actions
from tests.conftest import PASSWORD
from tests.imap.conftest import Transcript, no_verify

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Hello\r\nMessage-ID: <m1@example.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nHi Alice.\r\n"


def put(account, folder="INBOX", raw=MESSAGE, flags=()):
    return actions.append(account, folder, raw, flags=flags)


# --- greeting, capabilities, login ---------------------------------------------------------


def test_it_greets_with_capabilities_and_refuses_plaintext_login_off_loopback_policy(imap_server, alice, settings):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = False
    client = Transcript(imap_server.ports["imap"])
    assert client.greeting.startswith("* OK [CAPABILITY IMAP4rev1 IMAP4rev2 STARTTLS LOGINDISABLED")
    caps = client.send("a CAPABILITY")[0]
    assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    assert client.tagged(f'b LOGIN alice@example.test "{PASSWORD}"') == "b NO [PRIVACYREQUIRED] Use STARTTLS before logging in"
    assert client.tagged("c AUTHENTICATE PLAIN") == "c NO [PRIVACYREQUIRED] Use STARTTLS before logging in"


def test_it_logs_in_after_starttls(imap_server, alice, settings):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = False
    client = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    client.starttls(no_verify())
    assert "AUTH=PLAIN" in client.capabilities and "STARTTLS" not in client.capabilities
    assert client.login("alice@example.test", PASSWORD)[0] == "OK"
    client.logout()


def test_it_logs_in_over_implicit_tls(imap_server, alice):
    client = imaplib.IMAP4_SSL("127.0.0.1", imap_server.ports["imaps"], ssl_context=no_verify())
    assert "STARTTLS" not in client.capabilities
    assert client.login("alice@example.test", PASSWORD)[0] == "OK"
    assert client.select("INBOX") == ("OK", [b"0"])
    client.logout()


def test_it_answers_wrong_passwords_and_throttles(transcript, alice):
    client = transcript()
    assert client.tagged('a LOGIN alice@example.test "wrong"') == "a NO [AUTHENTICATIONFAILED] Authentication failed"
    assert client.tagged('b LOGIN nobody@example.test "wrong"') == "b NO [AUTHENTICATIONFAILED] Authentication failed"
    for i in range(10):
        reply = client.tagged(f'c{i} LOGIN alice@example.test "wrong"')
    assert reply == f"c9 NO [UNAVAILABLE] Too many failed logins; try again later"


def test_it_authenticates_with_plain_login_and_scram(transcript, alice):
    import base64

    from mailsuite.lib.sasl import ScramSha256Client

    plain = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode()).decode()
    client = transcript()
    lines = client.send(f"a AUTHENTICATE PLAIN {plain}")
    assert lines[-1].startswith("a OK [CAPABILITY IMAP4rev1 IMAP4rev2") and lines[-1].endswith("] Logged in")

    client = transcript()
    client.write("b AUTHENTICATE PLAIN")
    assert client.readline() == "+ "
    client.write(plain)
    assert client.until("b")[-1].startswith("b OK")

    client = transcript()
    client.write("c AUTHENTICATE LOGIN")
    assert client.readline() == "+ VXNlcm5hbWU6"
    client.write(base64.b64encode(b"alice@example.test").decode())
    assert client.readline() == "+ UGFzc3dvcmQ6"
    client.write(base64.b64encode(PASSWORD.encode()).decode())
    assert client.until("c")[-1].startswith("c OK")

    client = transcript()
    scram = ScramSha256Client("alice@example.test", PASSWORD)
    client.write("d AUTHENTICATE SCRAM-SHA-256 " + base64.b64encode(scram.start()).decode())
    server_first = base64.b64decode(client.readline()[2:])
    client.write(base64.b64encode(scram.step(server_first)).decode())
    server_final = base64.b64decode(client.readline()[2:])
    scram.step(server_final)
    client.write("")
    assert client.until("d")[-1].startswith("d OK")

    client = transcript()
    client.write("e AUTHENTICATE PLAIN")
    client.readline()
    client.write("*")
    assert client.until("e")[-1] == "e BAD Authentication cancelled"
    assert client.tagged("f AUTHENTICATE CRAM-MD5") == "f NO Unsupported authentication mechanism"


# --- every command refused in every wrong state ---------------------------------------------

SAMPLES = {
    "STARTTLS": "STARTTLS", "LOGIN": "LOGIN a b", "AUTHENTICATE": "AUTHENTICATE PLAIN =",
    "ENABLE": "ENABLE CONDSTORE", "COMPRESS": "COMPRESS DEFLATE", "NAMESPACE": "NAMESPACE", "IDLE": "IDLE",
    "SELECT": "SELECT INBOX", "CREATE": "CREATE x", "DELETE": "DELETE x", "RENAME": "RENAME x y",
    "SUBSCRIBE": "SUBSCRIBE x", "UNSUBSCRIBE": "UNSUBSCRIBE x", "LIST": 'LIST "" *', "LSUB": 'LSUB "" *',
    "STATUS": "STATUS INBOX (MESSAGES)", "APPEND": "APPEND INBOX {1+}\r\nx",
    "GETQUOTA": 'GETQUOTA ""', "GETQUOTAROOT": "GETQUOTAROOT INBOX", "SETQUOTA": 'SETQUOTA "" (STORAGE 1)',
    "CHECK": "CHECK", "CLOSE": "CLOSE", "UNSELECT": "UNSELECT", "EXPUNGE": "EXPUNGE", "SEARCH": "SEARCH ALL",
    "FETCH": "FETCH 1 FLAGS", "STORE": "STORE 1 +FLAGS (x)", "COPY": "COPY 1 x", "MOVE": "MOVE 1 x",
    "SORT": "SORT (DATE) UTF-8 ALL", "THREAD": "THREAD REFERENCES UTF-8 ALL",
}


def test_every_command_is_refused_in_every_wrong_state(transcript, alice):
    from imap.commands import TABLE
    from imap.session import State

    assert set(SAMPLES) == {cls.name for cls in TABLE if cls.name not in ("CAPABILITY", "NOOP", "LOGOUT", "ID")}
    by_name = {cls.name: entry.states for cls, entry in TABLE.items()}
    for state in (State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED):
        for name, text in SAMPLES.items():
            if state in by_name[name]:
                continue
            client = transcript()
            if state is not State.NOT_AUTHENTICATED:
                client.login()
            if state is State.SELECTED:
                assert client.tagged("s SELECT INBOX").startswith("s OK")
            assert client.tagged("t " + text) == f"t BAD {name} not allowed now", (state, name)
            client.close()


def test_unknown_commands_and_garbage_get_bad_then_bye(transcript):
    client = transcript()
    assert client.tagged("a FROBNICATE") == "a BAD unknown command"
    for _ in range(8):
        client.send("x FROBNICATE")
    client.write("y FROBNICATE")
    assert client.readline() == "y BAD unknown command"
    assert client.readline() == "* BYE Too many invalid commands"
    with pytest.raises(EOFError):
        client.readline()


def test_a_line_over_the_limit_before_login_ends_the_session(transcript):
    client = transcript()
    client.write(b"a NOOP " + b"x" * 70000 + b"\r\n")
    assert client.readline() == "* BAD Line too long"
    assert client.readline() == "* BYE Too much garbage"


def test_a_literal_over_the_limit_is_refused(transcript, alice, settings):
    settings.MAILSUITE_MESSAGE_SIZE_LIMIT = 1000
    client = transcript(login="alice@example.test")
    client.write("a APPEND INBOX {5000}")
    assert client.readline() == "a NO [TOOBIG] Literal too big"
    assert client.tagged("b NOOP") == "b OK NOOP completed"


def test_it_logs_out_idle_clients(transcript, settings):
    settings.MAILSUITE_IMAP_PREAUTH_TIMEOUT = 1
    client = transcript()
    assert client.readline() == "* BYE Autologout; idle for too long"


# --- mailboxes -----------------------------------------------------------------------------


def test_select_reports_the_mailbox_state(transcript, alice):
    put(alice, flags=["\\Seen"])
    put(alice)
    client = transcript(login="alice@example.test")
    folder = alice.folders.get(name="INBOX")
    lines = client.send("a SELECT INBOX")
    assert lines == [
        "* 2 EXISTS",
        "* 0 RECENT",
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
        "* OK [UNSEEN 2] First unseen",
        f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid",
        "* OK [UIDNEXT 3] Predicted next UID",
        f"* OK [HIGHESTMODSEQ {folder.highestmodseq}] Highest",
        f"* OK [MAILBOXID (F{folder.pk})] Ok",
        "a OK [READ-WRITE] SELECT completed",
    ]
    assert client.send("b EXAMINE INBOX")[-1] == "b OK [READ-ONLY] EXAMINE completed"
    assert client.tagged("c STORE 1 +FLAGS (\\Deleted)") == "c NO [READ-ONLY] Mailbox is read-only"
    assert client.tagged("d SELECT Nowhere") == "d NO [NONEXISTENT] No such mailbox"


def test_list_shows_the_hierarchy_with_special_use_and_children(transcript, alice):
    client = transcript(login="alice@example.test")
    assert created(client, "a", "Projects/2026/", alice, "Projects/2026")
    assert client.send('b LIST "" ""') == ['* LIST (\\Noselect) "/" ""', "b OK LIST completed"]
    assert client.send('c LIST "" *')[:-1] == [
        '* LIST (\\HasNoChildren \\Archive) "/" Archive',
        '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        '* LIST (\\HasNoChildren) "/" INBOX',
        '* LIST (\\HasNoChildren \\Junk) "/" Junk',
        '* LIST (\\HasChildren) "/" Projects',
        '* LIST (\\HasNoChildren) "/" Projects/2026',
        '* LIST (\\HasNoChildren \\Sent) "/" Sent',
        '* LIST (\\HasNoChildren \\Trash) "/" Trash',
    ]
    assert client.send('d LIST "" %/%')[:-1] == ['* LIST (\\HasNoChildren) "/" Projects/2026']
    assert client.send('e LIST "Projects/" %')[:-1] == ['* LIST (\\HasNoChildren) "/" Projects/2026']
    assert client.send('f LIST (SPECIAL-USE) "" * RETURN (STATUS (MESSAGES UNSEEN))')[:4] == [
        '* LIST (\\HasNoChildren \\Archive) "/" Archive',
        "* STATUS Archive (MESSAGES 0 UNSEEN 0)",
        '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        "* STATUS Drafts (MESSAGES 0 UNSEEN 0)",
    ]
    assert client.send('g LIST "" inbox')[:-1] == ['* LIST (\\HasNoChildren) "/" INBOX']


def created(client, tag, name, account, stored_name=None):
    """CREATE answered OK with the new mailbox's RFC 8474 MAILBOXID."""
    reply = client.tagged(f"{tag} CREATE {name}")
    folder = account.folders.get(name=stored_name or name.strip('"'))
    return reply == f"{tag} OK [MAILBOXID (F{folder.pk})] CREATE completed"


def test_create_rename_delete_and_subscriptions(transcript, alice):
    client = transcript(login="alice@example.test")
    assert created(client, "a", "Work", alice)
    assert client.tagged("b CREATE Work") == "b NO [ALREADYEXISTS] Mailbox already exists"
    assert client.tagged("c CREATE inbox") == "c NO [ALREADYEXISTS] INBOX always exists"
    assert created(client, "d", "Work/Old", alice)
    mailbox_id = f"F{alice.folders.get(name='Work').pk}"
    assert client.tagged("e RENAME Work Job") == "e OK RENAME completed"
    assert client.send("e2 STATUS Job (MAILBOXID)")[0] == f"* STATUS Job (MAILBOXID ({mailbox_id}))"  # RFC 8474 §4.1
    assert client.send('f LIST "" Job*')[:-1] == ['* LIST (\\HasChildren) "/" Job', '* LIST (\\HasNoChildren) "/" Job/Old']
    assert client.tagged("g RENAME Nowhere X") == "g NO [NONEXISTENT] No such mailbox"
    assert client.tagged("h DELETE INBOX").startswith("h NO [CANNOT]")
    assert client.tagged("i DELETE Job").startswith("i NO [CANNOT]")
    assert client.tagged("j DELETE Job/Old") == "j OK DELETE completed"
    assert client.tagged("k UNSUBSCRIBE Job") == "k OK UNSUBSCRIBE completed"
    assert 'Job' not in " ".join(client.send('l LSUB "" *'))
    assert client.tagged("m SUBSCRIBE Job") == "m OK SUBSCRIBE completed"
    assert '* LSUB () "/" Job' in client.send('n LSUB "" *')
    assert client.tagged("o CREATE Spam (USE (\\Junk))").startswith("o OK [MAILBOXID (F")
    assert client.tagged("p CREATE Everything (USE (\\All))") == "p NO [USEATTR] That special use is not supported"
    assert client.tagged('q CREATE "bad%name"').startswith("q NO [CANNOT] Invalid mailbox name")


def test_rename_of_inbox_moves_its_messages(transcript, alice):
    put(alice)
    client = transcript(login="alice@example.test")
    assert client.tagged("a RENAME INBOX Old") == "a OK RENAME completed"
    assert client.send("b STATUS INBOX (MESSAGES)")[0] == "* STATUS INBOX (MESSAGES 0)"
    assert client.send("c STATUS Old (MESSAGES)")[0] == "* STATUS Old (MESSAGES 1)"


def test_status_namespace_and_quota(transcript, alice):
    put(alice, flags=["\\Deleted"])
    Account.objects.filter(pk=alice.pk).update(quota=10 * 1024 * 1024)
    client = transcript(login="alice@example.test")
    folder = alice.folders.get(name="INBOX")
    status = client.send("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ)")[0]
    assert status == (
        f"* STATUS INBOX (MESSAGES 1 RECENT 0 UIDNEXT 2 UIDVALIDITY {folder.uidvalidity} UNSEEN 1 DELETED 1 "
        f"SIZE {len(MESSAGE)} HIGHESTMODSEQ {folder.highestmodseq})"
    )
    assert client.send("b NAMESPACE")[0] == '* NAMESPACE (("" "/")) NIL NIL'
    assert client.send("c GETQUOTAROOT INBOX")[:2] == ['* QUOTAROOT INBOX ""', '* QUOTA "" (STORAGE 1 10240)']
    assert client.tagged('d SETQUOTA "" (STORAGE 1)') == "d NO [NOPERM] Quotas are set by the administrator"
    assert client.tagged("e STATUS Nowhere (MESSAGES)") == "e NO [NONEXISTENT] No such mailbox"


def test_append_with_flags_date_and_multiappend(transcript, alice):
    client = transcript(login="alice@example.test")
    folder = alice.folders.get(name="INBOX")
    client.write('a APPEND INBOX (\\Seen $Work) "27-Nov-2026 10:00:00 +0100" {%d}' % len(MESSAGE))
    assert client.readline() == "+ Ready for literal data"
    client.write(MESSAGE + b"\r\n")
    reply = client.until("a")[-1]
    assert reply == f"a OK [APPENDUID {folder.uidvalidity} 1] APPEND completed"
    reply = client.send(b"b APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE, len(MESSAGE), MESSAGE))[-1]
    assert reply == f"b OK [APPENDUID {folder.uidvalidity} 2:3] APPEND completed"
    assert client.tagged(b"c APPEND Nowhere {3+}\r\nabc\r\n") == "c NO [TRYCREATE] No such mailbox"
    lines = client.send("d FETCH 1 (FLAGS INTERNALDATE)".encode() if False else "d SELECT INBOX")
    assert lines[0] == "* 3 EXISTS"
    assert client.send("e FETCH 1 (FLAGS INTERNALDATE)")[0] == '* 1 FETCH (FLAGS (\\Seen $Work) INTERNALDATE "27-Nov-2026 09:00:00 +0000")'


def test_append_over_quota_is_refused(transcript, alice):
    Account.objects.filter(pk=alice.pk).update(quota=10)
    client = transcript(login="alice@example.test")
    assert client.tagged(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE)) == "a NO [OVERQUOTA] Quota exceeded"


# --- messages ------------------------------------------------------------------------------


def test_fetch_store_and_expunge(transcript, alice):
    for _ in range(3):
        put(alice)
    client = transcript(login="alice@example.test")
    client.send("a SELECT INBOX")
    assert client.send("b FETCH 1:* (UID FLAGS)")[:-1] == [
        "* 1 FETCH (UID 1 FLAGS ())", "* 2 FETCH (UID 2 FLAGS ())", "* 3 FETCH (UID 3 FLAGS ())",
    ]
    assert client.send("c FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[0] == (
        '* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\nSubject: Hello\r\n\r\n)'
    )
    lines = client.send("d FETCH 2 (BODY[TEXT])")
    assert lines[0] == "* 2 FETCH (BODY[TEXT] {11}\nHi Alice.\r\n FLAGS (\\Seen))"
    assert client.tagged("e FETCH 4 FLAGS") == "e BAD Invalid message sequence number"
    assert client.send("f STORE 1:2 +FLAGS (\\Deleted)")[:-1] == [
        "* 1 FETCH (FLAGS (\\Deleted))", "* 2 FETCH (FLAGS (\\Seen \\Deleted))",
    ]
    assert client.send("g STORE 3 +FLAGS.SILENT (\\Flagged)") == ["g OK STORE completed"]
    assert client.send("h UID STORE 3 -FLAGS (\\Flagged)")[0] == "* 3 FETCH (UID 3 FLAGS ())"
    assert client.send("i EXPUNGE") == ["* 2 EXPUNGE", "* 1 EXPUNGE", "i OK EXPUNGE completed"]
    assert client.send("j FETCH 1 UID")[0] == "* 1 FETCH (UID 3)"
    assert client.tagged("k UID FETCH 1:2 UID") == "k OK FETCH completed"


def test_condstore_unchangedsince_and_modseq(transcript, alice):
    put(alice)
    put(alice)
    client = transcript(login="alice@example.test")
    client.send("a SELECT INBOX (CONDSTORE)")
    modseq = int(client.send("b FETCH 2 MODSEQ")[0].split("MODSEQ (")[1].rstrip("))"))
    lines = client.send(f"c STORE 1 +FLAGS (\\Flagged)")
    assert lines[0].startswith("* 1 FETCH (FLAGS (\\Flagged) MODSEQ (")
    assert client.send(f"d STORE 1:2 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)")[-1] == (
        "d OK [MODIFIED 1] Conditional STORE failed for some messages"
    )
    changed = client.send(f"e FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert [line.split(" (")[0] for line in changed[:-1]] == ["* 1 FETCH", "* 2 FETCH"]


def test_copy_and_move_answer_copyuid(transcript, alice):
    put(alice)
    put(alice)
    client = transcript(login="alice@example.test")
    archive = alice.folders.get(name="Archive")
    client.send("a SELECT INBOX")
    assert client.tagged("b COPY 1:2 Archive") == f"b OK [COPYUID {archive.uidvalidity} 1:2 1:2] COPY completed"
    assert client.tagged("c COPY 1 Nowhere") == "c NO [TRYCREATE] No such mailbox"
    assert client.send("d MOVE 1 Archive") == [
        f"* OK [COPYUID {archive.uidvalidity} 1 3] Moved", "* 1 EXPUNGE", "d OK MOVE completed",
    ]
    assert client.send("e STATUS Archive (MESSAGES)")[0] == "* STATUS Archive (MESSAGES 3)"


def test_close_expunges_silently_and_unselect_does_not(transcript, alice):
    put(alice, flags=["\\Deleted"])
    put(alice, flags=["\\Deleted"])
    client = transcript(login="alice@example.test")
    client.send("a SELECT INBOX")
    assert client.send("b UNSELECT") == ["b OK UNSELECT completed"]
    client.send("c SELECT INBOX")
    assert client.send("d CLOSE") == ["d OK CLOSE completed"]
    assert client.send("e STATUS INBOX (MESSAGES)")[0] == "* STATUS INBOX (MESSAGES 0)"


def test_two_sessions_see_each_others_changes(transcript, alice):
    put(alice)
    put(alice)
    first, second = transcript(login="alice@example.test"), transcript(login="alice@example.test")
    first.send("a SELECT INBOX")
    second.send("a SELECT INBOX")
    first.send("b STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert second.send("b NOOP") == ["* 1 FETCH (FLAGS (\\Deleted))", "b OK NOOP completed"]
    first.send("c EXPUNGE")
    # No EXPUNGE during FETCH: message 1 keeps its number until the client may hear of it.
    assert second.send("c FETCH 1 UID") == ["* 1 FETCH (UID 1)", "c OK FETCH completed"]
    assert second.send("d NOOP") == ["* 1 EXPUNGE", "d OK NOOP completed"]
    put(alice)
    assert second.send("e NOOP") == ["* 2 EXISTS", "e OK NOOP completed"]


def test_a_command_brings_other_sessions_changes_from_its_own_trip_to_the_database(transcript, alice, monkeypatch):
    from imap import session

    put(alice)
    put(alice)
    first, second = transcript(login="alice@example.test"), transcript(login="alice@example.test")
    first.send("a SELECT INBOX")
    second.send("a SELECT INBOX")
    looks = []  # catch-ups that take a trip of their own
    monkeypatch.setattr(session, "changes_since", lambda *args: looks.append(args) or changes_since(*args))

    first.send("b UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    put(alice)
    reply = second.send("b UID STORE 2 +FLAGS (\\Flagged)")
    assert sorted(reply[:-1]) == ["* 1 FETCH (FLAGS (\\Deleted))", "* 2 FETCH (UID 2 FLAGS (\\Flagged))", "* 3 EXISTS"]
    first.send("c UID EXPUNGE 1")
    assert second.send("c UID FETCH 2 (RFC822.SIZE)")[1:] == ["* 1 EXPUNGE", "c OK FETCH completed"]
    first.send("d APPEND INBOX {5+}\r\nHi!\r\n")
    assert second.send("d UID STORE 2 +FLAGS.SILENT (\\Deleted)") == ["* 3 EXISTS", "d OK STORE completed"]
    assert second.send("e UID EXPUNGE 2") == ["* 1 EXPUNGE", "e OK EXPUNGE completed"]
    first.send("f UID STORE 3 +FLAGS.SILENT (\\Answered)")
    assert second.send("f UID MOVE 4 Archive")[1:] == [
        "* 2 EXPUNGE", "* 1 FETCH (FLAGS (\\Answered))", "f OK MOVE completed",
    ]
    assert second.send("g UID FETCH 3 (FLAGS)") == ["* 1 FETCH (UID 3 FLAGS (\\Answered))", "g OK FETCH completed"]
    assert looks == []
    # A command with no trip of its own (NOOP, FLAGS from memory) takes one to look.
    assert second.send("h NOOP") == ["h OK NOOP completed"] and len(looks) == 1


def test_select_takes_one_trip_to_the_database_and_still_hears_what_came_in_meanwhile(transcript, alice, monkeypatch):
    from imap import session
    from imap.commands import mailboxes

    put(alice)
    client = transcript(login="alice@example.test")
    looks = []
    monkeypatch.setattr(session, "changes_since", lambda *args: looks.append(args) or changes_since(*args))
    assert client.send("a SELECT INBOX")[0] == "* 1 EXISTS"
    assert client.send("b UID FETCH 1 (FLAGS)")[-1] == "b OK FETCH completed"
    assert looks == []  # SELECT's own trip was the look

    opened = mailboxes._open

    def open_while_mail_comes(*args):
        result = opened(*args)
        put(alice)  # committed after the folder was read, before SELECT answers
        return result

    monkeypatch.setattr(mailboxes, "_open", open_while_mail_comes)
    reply = client.send("c SELECT INBOX")
    assert reply[0] == "* 1 EXISTS"
    deadline = time.monotonic() + 2
    while "* 2 EXISTS" not in reply and time.monotonic() < deadline:  # when the news came late
        reply = client.send("d UID FETCH 1 (FLAGS)")
    assert "* 2 EXISTS" in reply and len(looks) == 1


def test_idle_reports_new_mail_within_a_second(transcript, alice):
    client = transcript(login="alice@example.test")
    client.send("a SELECT INBOX")
    client.write("b IDLE")
    assert client.readline() == "+ idling"
    started = time.monotonic()
    put(alice)
    assert client.readline() == "* 1 EXISTS"
    assert time.monotonic() - started < 1
    client.write("DONE")
    assert client.until("b") == ["b OK IDLE terminated"]


def test_compress_deflate(imap_server, alice):
    import zlib

    client = Transcript(imap_server.ports["imap"])
    client.login()
    assert client.tagged("a COMPRESS DEFLATE") == "a OK DEFLATE active"
    deflate, inflate = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    client.sock.sendall(deflate.compress(b"b NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    data = b""
    while not data.endswith(b"\r\n"):
        data += inflate.decompress(client.sock.recv(4096))
    assert data == b"b OK NOOP completed\r\n"


def test_enable_id_and_utf8_names(transcript, alice):
    client = transcript(login="alice@example.test")
    assert client.send("a ENABLE CONDSTORE X-UNKNOWN UTF8=ACCEPT") == ["* ENABLED CONDSTORE UTF8=ACCEPT", "a OK ENABLE completed"]
    assert client.send('b ID ("name" "test")')[0] == '* ID ("name" "mailsuite" "vendor" "mailsuite")'
    assert created(client, "c", '"Entwürfe"', alice)
    assert '* LIST (\\HasNoChildren) "/" "Entwürfe"' in client.send('d LIST "" *')


def test_moving_into_and_out_of_junk_is_recorded_for_the_spam_filter(transcript, alice):
    from mailstore.models import TrainingExample

    spam = put(alice)
    put(alice)
    client = transcript(login="alice@example.test")
    client.send("a SELECT INBOX")
    client.send("b MOVE 1 Junk")
    client.send("c COPY 1 Archive")  # a copy between ordinary folders teaches nothing
    assert list(TrainingExample.objects.values_list("account", "blob", "verdict")) == [(alice.pk, spam.blob_id, "spam")]
    client.send("d SELECT Junk")
    client.send("e MOVE 1 INBOX")
    assert list(TrainingExample.objects.order_by("pk").values_list("verdict", flat=True)) == ["spam", "ham"]
    client.send("f SELECT INBOX")
    client.send("g MOVE 1:* Junk")
    client.send("h SELECT Junk")
    client.send("i MOVE 1 Trash")  # throwing spam away is not a "not spam" verdict
    assert TrainingExample.objects.filter(verdict="ham").count() == 1


# --- found by real clients (tests/e2e/test_imap_clients.py) --------------------------------


def test_stopping_the_server_says_bye_to_idling_and_waiting_sessions(transactional_db, settings, alice, caplog):
    # RFC 9051 §7.1.5: BYE announces a shutdown. fetchmail idling over IMAPS got a bare close
    # instead (the connection was closed before the BYE was written), and the server logged
    # an unhandled AttributeError when that client had just gone away.
    import logging

    from tests.imap.conftest import imap_servers

    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    with imap_servers() as server:
        idler = Transcript(server.ports["imaps"], tls=True)
        idler.login()
        idler.send("a SELECT INBOX")
        idler.write("b IDLE")
        assert idler.readline() == "+ idling"
        waiting = Transcript(server.ports["imaps"], tls=True)
        waiting.login()
        plain = Transcript(server.ports["imap"])
        plain.login()
        plain.send("a SELECT INBOX")
    for client in (idler, waiting, plain):
        assert client.readline() == "* BYE Server shutting down"
        with pytest.raises((EOFError, OSError)):
            client.readline()
        client.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_tls_connection_its_client_closed_refuses_writes_with_connection_closed(transactional_db, settings):
    # The other half of the fetchmail finding: once the client's close reached the server, a
    # second close() left asyncio's TLS transport without its protocol, and the BYE that
    # followed raised AttributeError out of the connection handler.
    import asyncio
    import ssl

    from imap.server import Connection, ConnectionClosed
    from mailsuite.lib.tls import TLSContextProvider, ensure_certificate

    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, "localhost")
    context = TLSContextProvider(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY).listener_context()

    async def scenario():
        accepted = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(
            lambda r, w: accepted.set_result(Connection(r, w, tls=True)), "127.0.0.1", 0, ssl=context
        )
        port = server.sockets[0].getsockname()[1]
        client_context = ssl.create_default_context()
        client_context.check_hostname, client_context.verify_mode = False, ssl.CERT_NONE
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        connection = await asyncio.wait_for(accepted, 5)
        writer.close()
        await writer.wait_closed()
        for _ in range(200):  # until the server's side has seen the client go
            if connection.writer.transport.is_closing():
                break
            await asyncio.sleep(0.01)
        connection.close()
        connection.close()
        connection.write(b"* BYE Server shutting down\r\n")
        with pytest.raises(ConnectionClosed):
            await connection.flush()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_multiappend_is_all_or_nothing(transcript, alice):
    Account.objects.filter(pk=alice.pk).update(quota=len(MESSAGE) + 10)  # room for one message
    client = transcript(login="alice@example.test")
    command = b"a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE, len(MESSAGE), MESSAGE)
    assert client.tagged(command) == "a NO [OVERQUOTA] Quota exceeded"
    assert client.send("b STATUS INBOX (MESSAGES)")[0] == "* STATUS INBOX (MESSAGES 0)"
    assert client.tagged(b"c APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE)).startswith("c OK [APPENDUID")
