"""IMAP migration against our own IMAP server on loopback: bob's account is the remote,
alice's the one being filled."""
import io
from datetime import datetime, timezone

import pytest
from django.core.management import CommandError, call_command

from mailstore.actions import append, create_folder, expunge
from mailstore.models import Folder, Message
from migration import actions
from migration.models import MigratedFolder
from migration.remote import RemoteError, parse_sequence_set, sequence_set
from tests.conftest import PASSWORD, message_bytes
from tests.imap.conftest import imap_servers

JAN = datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)


def raw(subject, body="Hello.\r\n"):
    return (
        f"From: carol@elsewhere.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@elsewhere.test>\r\n\r\n{body}"
    ).encode("utf-8")


@pytest.fixture
def remote(transactional_db, settings, alice, bob):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    create_folder(bob, "Projekte/Käse")
    append(bob, "INBOX", raw("one"), flags=["\\Seen", "$Label1"], internaldate=JAN)
    append(bob, "INBOX", raw("two", "Grüße\r\n" * 50), flags=["\\Flagged", "\\Answered"], internaldate=JAN)
    append(bob, "Sent", raw("sent"), flags=["\\Seen"], internaldate=JAN)
    append(bob, "Projekte/Käse", raw("cheese"), flags=["\\Draft"], internaldate=JAN)
    with imap_servers() as server:
        yield server


def migrate(server, **kwargs):
    params = dict(host="127.0.0.1", port=server.ports["imap"], user="bob@example.test", password=PASSWORD, tls="none")
    return actions.migrate_imap(kwargs.pop("account"), **{**params, **kwargs})


def mail_of(account):
    return sorted(
        (m.folder.name, message_bytes(m), sorted(m.flags), m.internaldate)
        for m in Message.objects.filter(folder__account=account).select_related("folder", "blob")
    )


@pytest.mark.parametrize(
    "uids, text", [([], ""), ([5], "5"), ([1, 2, 3, 7, 9, 10], "1:3,7,9:10"), ([3, 1, 2], "1:3")]
)
def test_uid_sets_are_kept_as_sequence_set_text(uids, text):
    assert sequence_set(uids) == text
    assert parse_sequence_set(text) == set(uids)


def test_it_copies_folders_flags_and_dates_and_reports_both_sides(remote, alice, bob):
    report = migrate(remote, account=alice)
    assert mail_of(alice) == mail_of(bob)
    rows = {c.remote: (c.local, c.copied, c.remote_count, c.local_count, c.remote_size == c.local_size, c.ok) for c in report.folders}
    assert rows["INBOX"] == ("INBOX", 2, 2, 2, True, True)
    assert rows["Sent"] == ("Sent", 1, 1, 1, True, True)
    assert rows["Projekte/Käse"] == ("Projekte/Käse", 1, 1, 1, True, True)
    assert rows["Trash"] == ("Trash", 0, 0, 0, True, True)
    assert report.ok


def test_a_rerun_copies_only_what_arrived_since(remote, alice, bob):
    migrate(remote, account=alice)
    append(bob, "INBOX", raw("three"), internaldate=JAN)
    report = migrate(remote, account=alice)
    assert report.copied == 1
    assert Message.objects.filter(folder__account=alice, folder__name="INBOX").count() == 3
    state = MigratedFolder.objects.get(account=alice, remote_name="INBOX")
    assert state.copied_uids == "1:3"


def test_a_new_uidvalidity_copies_the_folder_again(remote, alice, bob):
    migrate(remote, account=alice, only=["Sent"])
    MigratedFolder.objects.filter(account=alice, remote_name="Sent").update(uidvalidity=1)
    assert migrate(remote, account=alice, only=["Sent"]).copied == 1
    assert Message.objects.filter(folder__account=alice, folder__name="Sent").count() == 2


def test_the_report_shows_what_is_missing(remote, alice, bob, settings):
    settings.MAILSUITE_MESSAGE_SIZE_LIMIT = 500
    report = migrate(remote, account=alice, only=["INBOX"])
    [check] = report.folders
    assert (check.copied, check.missing, check.ok) == (1, 1, False)
    assert check.skipped == ["UID 2: larger than 500 bytes"]


def test_it_explains_a_bad_password_and_a_dead_server(remote, alice):
    with pytest.raises(RemoteError, match=r"refused the login: .*"):
        migrate(remote, account=alice, password="wrong")
    with pytest.raises(RemoteError, match="cannot connect to 127.0.0.1:1: connection refused"):
        migrate(remote, account=alice, port=1)
    with pytest.raises(RemoteError, match="TLS failed"):  # our certificate is self-signed
        migrate(remote, account=alice, tls="implicit", port=remote.ports["imaps"])


def test_it_migrates_over_implicit_tls_without_verification(remote, alice, bob):
    report = migrate(remote, account=alice, tls="implicit", port=remote.ports["imaps"], verify=False)
    assert report.copied == 4


def test_the_cli_prints_the_verification_table(remote, alice, bob):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "mail", "migrate", "alice@example.test", "--host", "127.0.0.1", "--port", str(remote.ports["imap"]),
        "--user", "bob@example.test", "--password-stdin", "--tls", "none",
        stdin=io.StringIO(PASSWORD + "\n"), stdout=out, stderr=err,
    )
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["remote", "folder", "local", "folder", "copied", "flags", "updated", "remote", "msgs",
                                "remote", "size", "local", "msgs", "local", "size"]
    assert any(line.split()[:5] == ["INBOX", "INBOX", "2", "0", "2"] and line.endswith("ok") for line in lines)
    assert lines[-1] == "copied 4 messages from bob@example.test@127.0.0.1 into alice@example.test"
    with pytest.raises(CommandError, match="refused the login"):
        call_command(
            "mail", "migrate", "alice@example.test", "--host", "127.0.0.1", "--port", str(remote.ports["imap"]),
            "--user", "bob@example.test", "--password-stdin", "--tls", "none", stdin=io.StringIO("nope\n"),
        )


def test_expunged_remote_messages_are_not_missing(remote, alice, bob):
    migrate(remote, account=alice, only=["INBOX"])
    inbox = Folder.objects.get(account=bob, name="INBOX")
    expunge(inbox, [1])
    [check] = migrate(remote, account=alice, only=["INBOX"]).folders
    assert (check.remote_count, check.local_count, check.missing) == (1, 2, 0)


def test_a_rerun_brings_flags_changed_on_the_remote(remote, alice, bob):
    from mailstore.actions import store_flags

    migrate(remote, account=alice, only=["INBOX"])
    store_flags(Folder.objects.get(account=bob, name="INBOX"), [1], mode="set", flags=["\\Answered", "later"])
    [check] = migrate(remote, account=alice, only=["INBOX"]).folders
    assert (check.copied, check.flags_updated) == (0, 1)
    inbox = lambda account: [m for m in mail_of(account) if m[0] == "INBOX"]  # noqa: E731
    assert inbox(alice) == inbox(bob)
    assert MigratedFolder.objects.get(account=alice, remote_name="INBOX").highestmodseq > 0  # we speak CONDSTORE too
