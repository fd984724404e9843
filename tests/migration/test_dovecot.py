"""IMAP migration from Debian's Dovecot on loopback: the copy, and a rerun that brings
new mail and the flags changed on Dovecot since (CONDSTORE, and the FLAGS sweep for
servers without it)."""
from datetime import datetime, timezone
from email.header import decode_header, make_header

import pytest

from imap.parser import encode_modified_utf7
from mailstore.models import Message
from migration import actions, remote
from migration.models import MigratedFolder
from tests.migration.dovecot import USERS, Dovecot, available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not available(), reason="SKIPPED: Dovecot is not installed (dovecot-imapd; make debs-test)"),
]

JAN = datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)


def raw(subject, body="Hello.\r\n"):
    return (f"From: carol@elsewhere.test\r\nTo: dana@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@elsewhere.test>\r\n\r\n{body}").encode()


ATTACHMENT = (
    b"From: a@x.test\r\nSubject: =?utf-8?q?K=C3=A4se?=\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"K\xc3\xa4se\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b--\r\n"
)


def mailbox(name):
    return '"' + encode_modified_utf7(name).decode() + '"'


def put(client, folder, data, flags=""):
    date = '"' + JAN.strftime("%d-%b-%Y %H:%M:%S +0000") + '"'
    typ, answer = client.append(mailbox(folder), f"({flags})", date, data)
    assert typ == "OK", answer


@pytest.fixture
def dovecot():
    with Dovecot() as server:
        client = server.login("dana")
        for folder in ("Sent", "Projekte/Käse"):
            assert client.create(mailbox(folder))[0] == "OK"
        put(client, "INBOX", raw("one"), "\\Seen $Label1")
        put(client, "INBOX", ATTACHMENT, "\\Flagged \\Answered")
        put(client, "INBOX", raw("two", "Grüße\r\n" * 50))
        put(client, "Sent", raw("sent"), "\\Seen")
        put(client, "Projekte/Käse", raw("cheese"), "\\Draft")
        client.logout()
        yield server


def migrate(server, account, **kwargs):
    return actions.migrate_imap(account, host="127.0.0.1", port=server.port, user="dana", password=USERS["dana"],
                                tls="none", **kwargs)


def local_mail(account):
    return sorted(
        (m.folder.name, m.subject, sorted(m.flags), m.internaldate)
        for m in Message.objects.filter(folder__account=account).select_related("folder")
    )


def remote_flags(server, folder="INBOX"):
    """{subject: sorted flags} on Dovecot, as another client sees them."""
    client = server.login("dana")
    client.select(mailbox(folder), readonly=True)
    typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    client.logout()
    result = {}
    for item in data:
        if isinstance(item, tuple):
            subject = str(make_header(decode_header(item[1].decode().split(":", 1)[1].strip())))
            flags = remote.parse_fetch([item])[0].flags
            result[subject] = sorted(f for f in flags if f != "\\Recent")
    return result


def local_flags(account, folder="INBOX"):
    return {m.subject: sorted(m.flags) for m in Message.objects.filter(folder__account=account, folder__name=folder)}


def test_it_copies_an_account_from_dovecot(dovecot, alice):
    report = migrate(dovecot, alice)
    assert report.ok
    rows = {c.remote: (c.local, c.copied, c.remote_count, c.local_count, c.remote_size == c.local_size) for c in report.folders}
    assert rows == {
        "INBOX": ("INBOX", 3, 3, 3, True),
        "Sent": ("Sent", 1, 1, 1, True),
        "Projekte/Käse": ("Projekte/Käse", 1, 1, 1, True),
    }
    assert local_flags(alice) == remote_flags(dovecot)
    assert local_flags(alice)["Käse"] == ["\\Answered", "\\Flagged"]
    assert {m[3] for m in local_mail(alice)} == {JAN}


@pytest.fixture
def changed_on_dovecot(dovecot):
    """What a user does on the old server between two runs: flags changed, a message added."""

    def change():
        client = dovecot.login("dana")
        client.select("INBOX")
        client.uid("STORE", "1", "-FLAGS", "(\\Seen)")
        client.uid("STORE", "1", "+FLAGS", "(Important)")
        client.uid("STORE", "3", "+FLAGS", "(\\Seen \\Flagged)")
        client.logout()
        client = dovecot.login("dana")
        put(client, "INBOX", raw("three"), "\\Seen")
        client.logout()

    return change


@pytest.fixture
def flag_queries(monkeypatch):
    """How each rerun asked Dovecot for flags: the CHANGEDSINCE value, or None for a sweep."""
    asked = []
    flags = remote.IMAPClient.flags

    def spy(self, changedsince=None):
        asked.append(changedsince)
        return flags(self, changedsince)

    monkeypatch.setattr(remote.IMAPClient, "flags", spy)
    return asked


def test_a_rerun_brings_flag_changes_with_condstore(dovecot, alice, changed_on_dovecot, flag_queries):
    migrate(dovecot, alice, only=["INBOX"])
    state = MigratedFolder.objects.get(account=alice, remote_name="INBOX")
    assert state.highestmodseq > 0 and state.messages.count() == 3
    changed_on_dovecot()
    [check] = migrate(dovecot, alice, only=["INBOX"]).folders
    assert (check.copied, check.flags_updated, check.ok) == (1, 2, True)
    assert flag_queries == [state.highestmodseq]  # only what changed since the last run was asked for
    assert local_flags(alice) == remote_flags(dovecot)
    assert local_flags(alice)["one"] == ["$Label1", "Important"]
    [check] = migrate(dovecot, alice, only=["INBOX"]).folders  # nothing moved: nothing asked
    assert (check.copied, check.flags_updated) == (0, 0)
    assert flag_queries == [state.highestmodseq]


def test_a_rerun_sweeps_flags_from_a_server_without_condstore(dovecot, alice, changed_on_dovecot, flag_queries,
                                                             monkeypatch):
    monkeypatch.setattr(remote, "USE_CONDSTORE", False)
    migrate(dovecot, alice, only=["INBOX"])
    assert MigratedFolder.objects.get(account=alice, remote_name="INBOX").highestmodseq == 0
    changed_on_dovecot()
    [check] = migrate(dovecot, alice, only=["INBOX"]).folders
    assert (check.copied, check.flags_updated) == (1, 2)
    assert flag_queries == [None]
    assert local_flags(alice) == remote_flags(dovecot)


def test_local_messages_gone_are_left_alone_by_the_resync(dovecot, alice, changed_on_dovecot):
    from mailstore.actions import expunge
    from mailstore.models import Folder

    migrate(dovecot, alice, only=["INBOX"])
    inbox = Folder.objects.get(account=alice, name="INBOX")
    expunge(inbox, [1])  # the user deleted "one" here already
    changed_on_dovecot()
    [check] = migrate(dovecot, alice, only=["INBOX"]).folders
    assert check.flags_updated == 1  # "two"; "one" is not here to change
    expected = remote_flags(dovecot)
    del expected["one"]
    assert local_flags(alice) == expected


def test_an_external_imap_account_on_dovecot_is_fetched_once(dovecot, alice):
    from migration import fetching

    external = fetching.add_external_account(
        alice, acting_user=None, protocol="imap", host="127.0.0.1", port=dovecot.port, tls="none",
                                              username="dana", password=USERS["dana"], remote_folders="INBOX\nSent")
    assert fetching.test_connection(external) == "logged in: 3 folders on the server"
    assert fetching.fetch_external(external) == 4
    assert fetching.fetch_external(external) == 0
    assert sorted(local_flags(alice)) == ["Käse", "one", "sent", "two"]
    assert external.last_error == ""
