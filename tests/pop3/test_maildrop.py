"""The maildrop: the lock ([IN-USE]), deletions only at QUIT and all at once, \\Seen for
what RETR sent (at QUIT, with the deletions), a stable snapshot and stable UIDLs, exact
octets, dot-stuffing, TOP, autologout, LOGIN-DELAY."""
import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from mailstore import actions as mailstore_actions
from mailstore.models import Folder, Message
from pop3 import maildrop
from pop3.models import BlobOctets, MaildropLock
from tests.conftest import PASSWORD, inbox
from tests.pop3.conftest import MESSAGE, append, connect, deliver, login, pop3_servers

pytestmark = pytest.mark.django_db(transaction=True)

IN_USE = "-ERR [IN-USE] Maildrop is locked by another session"


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lock_free(account):
    lock = MaildropLock.objects.filter(account=account).first()
    return lock is None or not lock.holder


def uids(account):
    return [message.uid for message in inbox(account)]


def try_login(server, address="alice@example.test"):
    client = connect(server)
    client.user(address)
    return client, client.command(f"PASS {PASSWORD}")


# --- The lock -----------------------------------------------------------------------------


def test_a_second_session_gets_in_use_until_the_first_quits(pop3_server, alice):
    deliver(alice)
    first = login(pop3_server)
    second, reply = try_login(pop3_server)
    assert reply == IN_USE
    assert second.command("STAT") == "-ERR Command not valid in this state"  # still AUTHORIZATION
    first.quit()
    second.user("alice@example.test")
    assert second.pass_(PASSWORD) == b"+OK Logged in; maildrop has 1 messages (180 octets)"
    second.quit()


def test_the_lock_is_per_account(pop3_server, alice, bob):
    first = login(pop3_server)
    other = login(pop3_server, "bob@example.test")
    first.quit()
    other.quit()


def test_a_crashed_sessions_lock_expires(pop3_server, alice):
    MaildropLock.objects.create(account=alice, holder="dead", expires=timezone.now() + timedelta(seconds=60))
    client, reply = try_login(pop3_server)
    assert reply == IN_USE
    client.quit()
    MaildropLock.objects.filter(account=alice).update(expires=timezone.now() - timedelta(seconds=1))
    client, reply = try_login(pop3_server)
    assert reply == "+OK Logged in; maildrop has 0 messages (0 octets)"
    client.quit()


def test_a_live_session_renews_its_lease(pop3_server, alice, monkeypatch):
    monkeypatch.setattr(maildrop, "LOCK_LEASE_SECONDS", 1.2)
    client = login(pop3_server)
    first_expiry = MaildropLock.objects.get(account=alice).expires
    time.sleep(1.8)  # longer than one lease: it must have been renewed meanwhile
    assert MaildropLock.objects.get(account=alice).expires > first_expiry
    second, reply = try_login(pop3_server)
    assert reply == IN_USE
    client.quit()
    second.quit()


def test_a_session_that_lost_its_lease_deletes_nothing(pop3_server, alice):
    deliver(alice)
    client = login(pop3_server)
    client.dele(1)
    MaildropLock.objects.filter(account=alice).update(expires=timezone.now() - timedelta(seconds=1))
    assert client.command("QUIT") == "-ERR [SYS/TEMP] Some deleted messages not removed"
    assert len(inbox(alice)) == 1


NOW = timezone.now()
SECONDS = timedelta(seconds=1)


@pytest.mark.parametrize(
    "row, login_delay, outcome",
    [
        (None, 0, "taken"),  # the account's first POP3 login creates the row
        (("", NOW - 60 * SECONDS, None), 0, "taken"),
        (("", NOW + 60 * SECONDS, None), 0, "taken"),  # given up early: holder cleared
        (("dead", NOW - SECONDS, None), 0, "taken"),  # a crashed session's lease ran out
        (("live", NOW + 60 * SECONDS, None), 0, maildrop.MaildropInUse),
        (("", NOW - 60 * SECONDS, NOW - 30 * SECONDS), 60, maildrop.LoginTooSoon),
        (("", NOW - 60 * SECONDS, NOW - 90 * SECONDS), 60, "taken"),
        (("live", NOW + 60 * SECONDS, NOW - 30 * SECONDS), 60, maildrop.MaildropInUse),  # in use says more
    ],
)
def test_taking_the_lease(alice, monkeypatch, row, login_delay, outcome):
    monkeypatch.setattr(maildrop, "now", lambda: NOW)
    if row is not None:
        holder, expires, last_login = row
        MaildropLock.objects.create(account=alice, holder=holder, expires=expires, last_login=last_login)
    before = MaildropLock.objects.filter(account=alice).values().first()
    if outcome == "taken":
        maildrop.acquire_lock(alice.pk, "me", login_delay=login_delay)
        lock = MaildropLock.objects.get(account=alice)
        assert (lock.holder, lock.expires, lock.last_login) == (
            "me", NOW + timedelta(seconds=maildrop.LOCK_LEASE_SECONDS), NOW
        )
    else:
        with pytest.raises(outcome):
            maildrop.acquire_lock(alice.pk, "me", login_delay=login_delay)
        assert MaildropLock.objects.filter(account=alice).values().first() == before  # untouched


def test_taking_a_free_lease_is_one_statement(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    maildrop.acquire_lock(alice.pk, "first")  # creates the row
    maildrop.release_lock(alice.pk, "first")
    with CaptureQueriesContext(connection) as queries:
        maildrop.acquire_lock(alice.pk, "second")
    statements = [q["sql"] for q in queries if not q["sql"].startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]
    assert len(statements) == 1 and statements[0].startswith("UPDATE"), statements


# --- Deletions --------------------------------------------------------------------------


def test_quit_deletes_exactly_the_marked_messages(pop3_server, alice):
    for _ in range(4):
        deliver(alice)
    before = uids(alice)
    client = login(pop3_server)
    client.dele(2)
    client.dele(4)
    assert uids(alice) == before  # nothing removed before QUIT
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off (2 messages left)"
    assert uids(alice) == [before[0], before[2]]
    folder = Folder.objects.get(account=alice, name="INBOX")
    assert (folder.message_count, folder.total_size) == (2, 2 * 180)
    wait_until(lambda: lock_free(alice))


def test_rset_unmarks_everything(pop3_server, alice):
    deliver(alice)
    deliver(alice)
    client = login(pop3_server)
    client.dele(1)
    client.dele(2)
    client.rset()
    client.quit()
    assert len(inbox(alice)) == 2


def test_a_dropped_connection_deletes_nothing_and_frees_the_maildrop(pop3_server, alice):
    deliver(alice)
    deliver(alice)
    client = login(pop3_server)
    client.dele(1)
    client.dele(2)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.sock.close()
    wait_until(lambda: lock_free(alice))
    assert len(inbox(alice)) == 2
    again = login(pop3_server)
    assert again.stat() == (2, 360)
    again.quit()


def test_deletions_are_all_or_none(pop3_server, alice, monkeypatch):
    for _ in range(3):
        deliver(alice)

    def expunge_then_fail(folder, uids):
        mailstore_actions.expunge(folder, uids)
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(maildrop, "expunge", expunge_then_fail)
    client = login(pop3_server)
    client.dele(1)
    client.dele(3)
    assert client.command("QUIT") == "-ERR [SYS/TEMP] Internal error; try again later"
    assert len(inbox(alice)) == 3
    wait_until(lambda: lock_free(alice))


def test_quit_in_authorization_deletes_nothing(pop3_server, alice):
    deliver(alice)
    client = connect(pop3_server)
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off"
    assert len(inbox(alice)) == 1


# --- RETR marks \Seen at QUIT -----------------------------------------------------------


def flags_and_modseqs(account):
    return [(message.flags, message.modseq) for message in inbox(account)]


def unseen_count(account):
    return Folder.objects.get(account=account, name="INBOX").unseen_count


def test_quit_marks_what_retr_sent_seen_and_nothing_else(pop3_server, alice):
    for _ in range(4):
        deliver(alice)
    client = login(pop3_server)
    client.retr(1)
    client.top(2, 0)  # TOP is not reading the message
    client.retr(3)
    client.dele(3)  # deleted: not worth a flag
    before = flags_and_modseqs(alice)
    assert [flags for flags, _ in before] == [[], [], [], []]  # nothing before QUIT
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off (3 messages left)"
    after = inbox(alice)
    assert [message.flags for message in after] == [["\\Seen"], [], []]
    # One new MODSEQ for the flag change, above everything before it (CONDSTORE clients see it).
    folder = Folder.objects.get(account=alice, name="INBOX")
    assert after[0].modseq > max(modseq for _, modseq in before)
    assert after[0].modseq < folder.highestmodseq  # the expunge came after it, in the same QUIT
    assert unseen_count(alice) == 2
    wait_until(lambda: lock_free(alice))


def test_a_dropped_session_marks_nothing_seen(pop3_server, alice):
    deliver(alice)
    client = login(pop3_server)
    client.retr(1)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.sock.close()
    wait_until(lambda: lock_free(alice))
    assert [message.flags for message in inbox(alice)] == [[]]
    assert unseen_count(alice) == 1


def test_rset_forgets_what_retr_would_have_marked(pop3_server, alice):
    deliver(alice)
    deliver(alice)
    client = login(pop3_server)
    client.retr(1)
    client.rset()
    client.retr(2)
    client.quit()
    assert [message.flags for message in inbox(alice)] == [[], ["\\Seen"]]


def test_a_message_already_seen_is_left_alone(pop3_server, alice):
    message = deliver(alice)
    mailstore_actions.store_flags(message.folder, [message.uid], mode="add", flags=["\\Seen", "\\Flagged"])
    before = flags_and_modseqs(alice)
    client = login(pop3_server)
    client.retr(1)
    client.quit()
    assert flags_and_modseqs(alice) == before  # no write, no new MODSEQ


def test_seen_flags_and_deletions_are_one_transaction(pop3_server, alice, monkeypatch):
    deliver(alice)
    deliver(alice)

    def expunge_fails(folder, uids):
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(maildrop, "expunge", expunge_fails)
    client = login(pop3_server)
    client.retr(1)
    client.dele(2)
    assert client.command("QUIT") == "-ERR [SYS/TEMP] Internal error; try again later"
    assert [message.flags for message in inbox(alice)] == [[], []]
    assert unseen_count(alice) == 2


def test_a_session_that_lost_its_lease_marks_nothing_seen(pop3_server, alice):
    deliver(alice)
    client = login(pop3_server)
    client.retr(1)
    MaildropLock.objects.filter(account=alice).update(expires=timezone.now() - timedelta(seconds=1))
    # Nothing the client asked for is left undone, so the reply is +OK.
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off (1 messages left)"
    assert [message.flags for message in inbox(alice)] == [[]]


def test_a_message_imap_removed_meanwhile_is_skipped(pop3_server, alice):
    first, second = deliver(alice), deliver(alice)
    client = login(pop3_server)
    client.retr(1)
    client.retr(2)
    mailstore_actions.expunge(first.folder, [first.uid])
    client.quit()
    assert [(message.uid, message.flags) for message in inbox(alice)] == [(second.uid, ["\\Seen"])]


# --- The snapshot and UIDL --------------------------------------------------------------


def test_numbers_and_uidls_stay_put_while_imap_and_delivery_change_the_mailbox(pop3_server, alice):
    first, second, third = deliver(alice), deliver(alice), deliver(alice)
    client = login(pop3_server)
    listing = client.uidl()[1]
    mailstore_actions.expunge(first.folder, [first.uid])  # another client removes message 1
    fourth = deliver(alice)  # and new mail arrives
    assert client.stat() == (3, 540)
    assert client.uidl()[1] == listing
    assert client.retr(1)[2] == 180  # its bytes are still there
    client.dele(1)
    client.dele(2)
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off (1 messages left)"
    assert uids(alice) == [third.uid, fourth.uid]


def test_uidl_is_stable_across_sessions_and_matches_imap(pop3_server, alice):
    messages = [deliver(alice) for _ in range(3)]
    uidvalidity = Folder.objects.get(account=alice, name="INBOX").uidvalidity
    expected = [f"{uidvalidity}.{message.uid}" for message in messages]

    client = login(pop3_server)
    assert [line.split()[1].decode() for line in client.uidl()[1]] == expected
    client.dele(1)
    client.quit()

    client = login(pop3_server)
    assert client.uidl()[1] == [f"1 {expected[1]}".encode(), f"2 {expected[2]}".encode()]
    client.quit()


# --- Octets, dot-stuffing, TOP --------------------------------------------------------


def raw_reply(client, line):
    """Everything the server sends for a multi-line reply, exactly as sent."""
    client._putcmd(line)
    data = b""
    while not data.endswith(b"\r\n.\r\n"):
        chunk = client.file.readline()
        assert chunk, "connection closed"
        data += chunk
    return data


def test_octets_are_exact_with_crlf_even_for_bare_lf_messages(pop3_server, alice):
    stored = [
        b"Subject: bare LF\n\nline one\nline two\n",
        b"Subject: no final newline\r\n\r\nlast line",
        b"Subject: mixed\r\n\nlone\rCR\n",
    ]
    sent = [
        b"Subject: bare LF\r\n\r\nline one\r\nline two\r\n",
        b"Subject: no final newline\r\n\r\nlast line\r\n",
        b"Subject: mixed\r\n\r\nlone\rCR\r\n",
    ]
    for raw in stored:
        append(alice, raw)
    client = login(pop3_server)
    assert client.stat() == (3, sum(map(len, sent)))
    assert client.list()[1] == [f"{n} {len(data)}".encode() for n, data in enumerate(sent, start=1)]
    for number, data in enumerate(sent, start=1):
        assert raw_reply(client, f"RETR {number}") == f"+OK {len(data)} octets\r\n".encode() + data + b".\r\n"
    client.quit()
    assert sorted(BlobOctets.objects.values_list("octets", flat=True)) == sorted(map(len, sent))


def test_delivered_messages_count_their_trace_prefix(pop3_server, alice):
    message = deliver(alice, b"Subject: x\n\nbody\n")  # the MDA's prefix ends in CRLF, the body in LF
    client = login(pop3_server)
    expected = bytes(message.prefix) + b"Subject: x\r\n\r\nbody\r\n"
    assert client.list(1) == f"+OK 1 {len(expected)}".encode()
    assert raw_reply(client, "RETR 1") == f"+OK {len(expected)} octets\r\n".encode() + expected + b".\r\n"
    client.quit()


def test_lines_starting_with_a_dot_are_stuffed(pop3_server, alice):
    append(alice, b"Subject: dots\r\n\r\n.hidden\r\n.\r\n..double\r\nplain.\r\n")
    client = login(pop3_server)
    assert raw_reply(client, "RETR 1") == (
        b"+OK 47 octets\r\nSubject: dots\r\n\r\n..hidden\r\n..\r\n...double\r\nplain.\r\n.\r\n"
    )
    assert client.retr(1)[1][2:] == [b".hidden", b".", b"..double", b"plain."]  # unstuffed by poplib
    assert raw_reply(client, "TOP 1 2") == b"+OK Top of message follows\r\nSubject: dots\r\n\r\n..hidden\r\n..\r\n.\r\n"
    client.quit()


MIME = (
    b"From: alice@example.test\r\n"
    b"Subject: report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
    b"\r\n"
    b"This is a MIME message.\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--XYZ--\r\n"
)


@pytest.mark.parametrize("lines", [0, 1, 4, 100])
def test_top_of_a_mime_message(pop3_server, alice, lines):
    append(alice, MIME)
    header, body = MIME.split(b"\r\n\r\n", 1)
    body_lines = body.split(b"\r\n")[:-1]
    expected = header + b"\r\n\r\n" + b"".join(line + b"\r\n" for line in body_lines[:lines])
    client = login(pop3_server)
    assert raw_reply(client, f"TOP 1 {lines}") == b"+OK Top of message follows\r\n" + expected + b".\r\n"
    client.quit()


def test_retr_of_a_message_removed_and_swept_meanwhile(pop3_server, alice, blob_dir):
    message = deliver(alice)
    client = login(pop3_server)
    (blob_dir / message.blob.name).unlink()  # removed elsewhere and its bytes swept
    assert client.command("RETR 1") == "-ERR Message was removed by another session"
    assert client.command("NOOP") == "+OK"
    client.quit()


def test_large_messages_arrive_whole(pop3_server, alice):
    body = b"".join(b"%06d " % n + b"x" * 70 + b"\r\n" for n in range(40000))  # ~3 MB
    append(alice, b"Subject: big\r\n\r\n" + body)
    client = login(pop3_server)
    _, lines, octets = client.retr(1)
    assert octets == len(b"Subject: big\r\n\r\n" + body)
    assert lines[-1] == b"039999 " + b"x" * 70
    client.quit()


# --- Timers ---------------------------------------------------------------------------


def test_autologout_closes_silently_and_deletes_nothing(transactional_db, settings, alice, service_overrides):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    service_overrides["autologout"] = 3  # longer than STLS + login take on a busy machine
    deliver(alice)
    with pop3_servers() as server:
        client = login(server)
        client.dele(1)
        started = time.monotonic()
        assert client.file.readline() == b""  # RFC 1939 §3: no reply, just closed
        assert time.monotonic() - started < 5
        wait_until(lambda: lock_free(alice))
    assert len(inbox(alice)) == 1


def test_login_delay(transactional_db, settings, alice):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    with pop3_servers(login_delay=60) as server:
        client = login(server)
        assert client.capa()["LOGIN-DELAY"] == ["60"]
        client.quit()
        client, reply = try_login(server)
        assert reply == "-ERR [LOGIN-DELAY] Too soon since the last login"
        client.quit()
        MaildropLock.objects.filter(account=alice).update(last_login=timezone.now() - timedelta(seconds=61))
        client, reply = try_login(server)
        assert reply.startswith("+OK Logged in")
        client.quit()


def test_blob_octets_are_counted_once(pop3_server, alice, monkeypatch):
    deliver(alice)
    client = login(pop3_server)
    client.quit()
    wait_until(lambda: lock_free(alice))
    reads = []
    monkeypatch.setattr(maildrop, "_read_blob", lambda name: reads.append(name) or b"")
    snapshot = maildrop.open_maildrop(alice.pk)
    assert reads == [] and snapshot.entries[0].octets == 180
    assert Message.objects.count() == 1


def test_a_maildrop_that_cannot_be_opened_is_not_left_locked(pop3_server, alice):
    Folder.objects.filter(account=alice, name="INBOX").delete()
    client, reply = try_login(pop3_server)
    assert reply == "-ERR [SYS/TEMP] Maildrop not available"
    assert client.command("STAT") == "-ERR Command not valid in this state"
    client.quit()
    assert lock_free(alice)
