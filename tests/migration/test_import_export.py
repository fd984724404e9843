"""Importing mbox, Maildir, EML and ZIP; exporting to mbox and Maildir; round trips."""
import io
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mailstore.models import Folder, Message
from migration import actions, sources
from migration.models import ImportedMessage
from tests import datadir
from tests.conftest import message_bytes

JAN = datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)


def msg(subject, body="Hello.\n", extra=""):
    return (
        f"From: Carol <carol@elsewhere.test>\nTo: alice@example.test\nSubject: {subject}\n"
        f"Date: Mon, 15 Jan 2024 10:30:00 +0000\nMessage-ID: <{subject.replace(' ', '.')}@elsewhere.test>\n"
        f"{extra}\n{body}"
    ).encode()


def stored(account):
    """{folder: [(bytes, flags, internaldate), …]} in UID order."""
    result = {}
    for message in Message.objects.filter(folder__account=account).select_related("folder", "blob").order_by("folder__name", "uid"):
        result.setdefault(message.folder.name, []).append((message_bytes(message), sorted(message.flags), message.internaldate))
    return result


def write_mbox(path, *messages):
    with open(path, "wb") as f:
        for separator, raw in messages:
            f.write(separator + raw + b"\n")


# --- Pure readers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, folder",
    [
        (".Work", "Work"),
        (".Work.Clients", "Work/Clients"),
        (".Entw&APw-rfe", "Entwürfe"),
        (".caf\u00e9", "caf\u00e9"),  # UTF-8 on disk from writers that do not use mUTF-7
    ],
)
def test_it_names_maildir_plus_plus_folders(name, folder):
    assert sources.maildir_folder_name(name) == folder


def test_it_spells_folders_back_for_maildir():
    assert sources.maildir_dirname("Work/Entwürfe") == ".Work.Entw&APw-rfe"


@pytest.mark.parametrize(
    "filename, flags",
    [
        ("123.M1.host:2,", ()),
        ("123.M1.host:2,FRS", ("\\Flagged", "\\Answered", "\\Seen")),
        ("123.M1.host,S=99:2,DPTab", ("\\Draft", "$Forwarded", "\\Deleted", "$Junk", "work")),
        ("123.M1.host:2,Sz", ("\\Seen",)),  # a letter the keyword file does not name
        ("123.M1.host", ()),
    ],
)
def test_it_reads_maildir_flags(filename, flags):
    assert sources.maildir_flags(filename, {"a": "$Junk", "b": "work"}) == flags


def test_it_takes_flags_out_of_mbox_fields():
    raw = b"Subject: x\r\nStatus: RO\r\nX-Status: AF\r\nX-Keywords: $Label1, work\r\n\r\nbody\r\n"
    assert sources.take_mbox_flags(raw) == (
        b"Subject: x\r\n\r\nbody\r\n",
        ("\\Seen", "\\Answered", "\\Flagged", "$Label1", "work"),
    )


def test_it_reads_thunderbird_status_bits():
    raw = b"X-Mozilla-Status: 1003\r\nX-Mozilla-Status2: 00000000\r\nSubject: x\r\n\r\nbody\r\n"
    assert sources.take_mbox_flags(raw) == (b"Subject: x\r\n\r\nbody\r\n", ("\\Seen", "\\Answered", "$Forwarded"))


def test_it_splits_mbox_on_from_lines_after_an_empty_line_only(tmp_path):
    path = tmp_path / "box"
    write_mbox(
        path,
        (b"From carol@elsewhere.test Mon Jan 15 10:30:00 2024\n", msg("one", "Hi\nFrom here it is unescaped\n>From here escaped\n")),
        (b"From - Tue Feb 20 08:00:00 2024\n", msg("two")),
    )
    skipped = sources.Skipped()
    messages = list(sources.read_mbox(path, "", max_size=10**6, skipped=skipped))
    assert [m.internaldate for m in messages] == [JAN, datetime(2024, 2, 20, 8, tzinfo=timezone.utc)]
    assert messages[0].raw.endswith(b"Hi\r\nFrom here it is unescaped\r\nFrom here escaped\r\n")
    assert messages[1].raw == msg("two").replace(b"\n", b"\r\n")


def test_it_skips_an_mbox_message_over_the_size_limit(tmp_path):
    path = tmp_path / "box"
    write_mbox(
        path,
        (b"From a Mon Jan 15 10:30:00 2024\n", msg("big", "x" * 5000 + "\n")),
        (b"From a Mon Jan 15 10:30:00 2024\n", msg("small")),
    )
    skipped = sources.Skipped()
    messages = list(sources.read_mbox(path, "", max_size=1000, skipped=skipped))
    assert [m.raw.count(b"small") for m in messages] == [2]
    assert skipped.reasons == [f"{path} message 1: larger than 1000 bytes"]


# --- Import ---------------------------------------------------------------------------


def make_maildir(root):
    """INBOX with a seen and a new message; .Work.Clients with keywords; .Sent."""
    for folder in ("", ".Work.Clients", ".Sent", ".Entw&APw-rfe"):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(root / folder / sub, exist_ok=True)
    (root / "dovecot-uidlist").write_text("3 V1 N3\n")
    (root / ".Work.Clients" / "dovecot-keywords").write_text("0 $Junk\n1 project-x\n")

    def put(folder, sub, name, raw, when):
        path = root / folder / sub / name
        path.write_bytes(raw)
        os.utime(path, (when, when))

    put("", "cur", "1700000000.M1P1.old:2,S", msg("inbox seen"), 1700000000)
    put("", "new", "1700000100.M2P1.old", msg("inbox new"), 1700000100)
    put(".Work.Clients", "cur", "1700000200.M3P1.old:2,FRb", msg("client"), 1700000200)
    put(".Work.Clients", "cur", "1700000300.M4P1.old:2,Sab", msg("spam"), 1700000300)
    put(".Sent", "cur", "1700000400.M5P1.old:2,S", msg("sent"), 1700000400)
    put(".Entw&APw-rfe", "cur", "1700000500.M6P1.old:2,D", msg("draft"), 1700000500)


def test_it_imports_a_maildir_with_folders_flags_keywords_and_dates(alice, tmp_path):
    make_maildir(tmp_path / "Maildir")
    report = actions.import_path(alice, tmp_path / "Maildir")
    assert report.imported == 6
    mail = stored(alice)
    at = lambda t: datetime.fromtimestamp(t, timezone.utc)  # noqa: E731
    assert mail["INBOX"] == [
        (msg("inbox seen").replace(b"\n", b"\r\n"), ["\\Seen"], at(1700000000)),
        (msg("inbox new").replace(b"\n", b"\r\n"), [], at(1700000100)),
    ]
    assert [(f, d) for _, f, d in mail["Work/Clients"]] == [
        (["\\Answered", "\\Flagged", "project-x"], at(1700000200)),
        (["$Junk", "\\Seen", "project-x"], at(1700000300)),
    ]
    assert [f for _, f, _ in mail["Sent"]] == [["\\Seen"]]
    assert [f for _, f, _ in mail["Entwürfe"]] == [["\\Draft"]]
    assert set(Folder.objects.filter(account=alice).values_list("name", flat=True)) >= {"Work", "Work/Clients", "Entwürfe"}


def test_a_rerun_skips_what_is_done_and_picks_up_new_mail(alice, tmp_path):
    make_maildir(tmp_path / "Maildir")
    actions.import_path(alice, tmp_path / "Maildir")
    (tmp_path / "Maildir" / "new" / "1700000600.M7P1.old").write_bytes(msg("later"))
    again = actions.import_path(alice, tmp_path / "Maildir")
    assert (again.imported, again.already) == (1, 6)
    assert Message.objects.filter(folder__account=alice).count() == 7


def test_an_interrupted_import_resumes_where_it_stopped(alice, tmp_path, monkeypatch):
    path = tmp_path / "big.mbox"
    write_mbox(path, *[(b"From a Mon Jan 15 10:30:00 2024\n", msg(f"n{i}")) for i in range(25)])
    monkeypatch.setattr(actions, "IMPORT_BATCH", 10)
    calls = []
    original = actions._store_batch

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(actions, "_store_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        actions.import_path(alice, path)
    assert Message.objects.filter(folder__account=alice).count() == 20
    monkeypatch.setattr(actions, "_store_batch", original)
    report = actions.import_path(alice, path)
    assert (report.imported, report.already) == (5, 20)
    subjects = list(Message.objects.filter(folder__account=alice).order_by("uid").values_list("subject", flat=True))
    assert subjects == [f"n{i}" for i in range(25)]


def test_identical_messages_are_each_imported_once(alice, tmp_path):
    path = tmp_path / "box"
    write_mbox(path, *[(b"From a Mon Jan 15 10:30:00 2024\n", msg("same"))] * 3)
    assert actions.import_path(alice, path).imported == 3
    assert actions.import_path(alice, path).already == 3
    assert Message.objects.filter(folder__account=alice).count() == 3


def test_it_imports_a_directory_of_mbox_files_as_folders(alice, tmp_path):
    (tmp_path / "mail" / "Work.sbd").mkdir(parents=True)
    write_mbox(tmp_path / "mail" / "Inbox", (b"From a Mon Jan 15 10:30:00 2024\n", msg("in", extra="Status: RO\n")))
    (tmp_path / "mail" / "Inbox.msf").write_bytes(b"// thunderbird index")
    write_mbox(tmp_path / "mail" / "Work", (b"From a Mon Jan 15 10:30:00 2024\n", msg("work", extra="X-Keywords: todo\n")))
    write_mbox(tmp_path / "mail" / "Work.sbd" / "Old.mbox", (b"From a Mon Jan 15 10:30:00 2024\n", msg("old")))
    report = actions.import_path(alice, tmp_path / "mail")
    assert report.skipped.reasons == []
    mail = stored(alice)
    assert {name: [f for _, f, _ in items] for name, items in mail.items()} == {
        "INBOX": [["\\Seen"]], "Work": [["todo"]], "Work/Old": [[]],
    }
    assert mail["INBOX"][0][0] == msg("in").replace(b"\n", b"\r\n")  # Status: is state, not content
    assert mail["INBOX"][0][2] == JAN


def test_it_imports_eml_and_zip_files_under_a_chosen_folder(alice, tmp_path):
    (tmp_path / "one.eml").write_bytes(msg("lone"))
    with zipfile.ZipFile(tmp_path / "mail.zip", "w") as archive:
        archive.writestr("a.eml", msg("top"))
        archive.writestr("Projects/x/b.eml", msg("deep"))
        archive.writestr("notes.txt", b"not mail")
    actions.import_path(alice, tmp_path / "one.eml")
    actions.import_path(alice, tmp_path / "mail.zip", root="Imported")
    mail = stored(alice)
    assert [d for _, _, d in mail["INBOX"]] == [JAN]  # an EML's date is its Date field
    assert {name: len(items) for name, items in mail.items()} == {"INBOX": 1, "Imported": 1, "Imported/Projects/x": 1}


def test_it_refuses_what_is_not_mail(alice, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(sources.SourceError, match="is not mbox, Maildir, EML or ZIP"):
        actions.import_path(alice, tmp_path / "notes.txt")
    with pytest.raises(sources.SourceError, match="does not exist"):
        actions.import_path(alice, tmp_path / "nope")


def test_an_import_over_quota_stops_and_keeps_what_fitted(alice, tmp_path, monkeypatch):
    from accounts import actions as accounts
    from mailstore.actions import OverQuota

    accounts.set_quota(alice.address, 2500)
    monkeypatch.setattr(actions, "IMPORT_BATCH", 1)
    path = tmp_path / "box"
    write_mbox(path, *[(b"From a Mon Jan 15 10:30:00 2024\n", msg(f"n{i}", "x" * 900 + "\n")) for i in range(5)])
    with pytest.raises(OverQuota):
        actions.import_path(alice, path)
    assert Message.objects.filter(folder__account=alice).count() == ImportedMessage.objects.count() == 2


# --- Export and round trips -------------------------------------------------------------


def varied_account(account, tmp_path):
    """Mail with flags, keywords, non-ASCII folder names, a From-line body and an attachment."""
    from mailstore.actions import append, create_folder

    create_folder(account, "Work/Entwürfe")
    attachment = (
        b"From: a@x.test\r\nSubject: =?utf-8?q?K=C3=A4se?=\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"K\xc3\xa4se\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b--\r\n"
    )
    append(account, "INBOX", msg("plain").replace(b"\n", b"\r\n"), flags=["\\Seen"], internaldate=JAN)
    append(account, "INBOX", attachment, flags=["\\Answered", "\\Flagged", "$Forwarded", "todo"], internaldate=JAN)
    append(account, "INBOX", msg("from", "From the start\n>From quoted\n").replace(b"\n", b"\r\n"), internaldate=JAN)
    append(account, "Work/Entwürfe", msg("draft").replace(b"\n", b"\r\n"), flags=["\\Draft", "\\Deleted"], internaldate=JAN)


@pytest.mark.parametrize("format", ["mbox", "maildir"])
def test_export_then_import_gives_back_the_same_mail(alice, bob, tmp_path, format):
    varied_account(alice, tmp_path)
    report = actions.export_account(alice, tmp_path / "out", format=format)
    assert report.exported == 4
    actions.import_path(bob, tmp_path / "out")
    before, after = stored(alice), stored(bob)
    assert {k: v for k, v in before.items() if v} == {k: v for k, v in after.items() if v}
    # and once more: the second export is the same files
    actions.export_account(bob, tmp_path / "again", format=format)
    files = lambda root: sorted(  # noqa: E731
        (str(p.relative_to(root)).replace("V" + str(p).split("V")[-1].split(".")[0], ""), p.read_bytes())
        for p in root.rglob("*") if p.is_file()
    )
    if format == "mbox":
        assert files(tmp_path / "out") == files(tmp_path / "again")


def test_a_maildir_export_keeps_flags_in_names_and_keywords_in_their_file(alice, tmp_path):
    varied_account(alice, tmp_path)
    actions.export_account(alice, tmp_path / "out", format="maildir")
    names = sorted(p.name.rsplit(":2,", 1)[1] for p in (tmp_path / "out" / "cur").iterdir())
    assert names == ["", "FPRa", "S"]
    assert (tmp_path / "out" / "dovecot-keywords").read_text() == "0 todo\n"
    draft = next((tmp_path / "out" / ".Work.Entw&APw-rfe" / "cur").iterdir())
    assert draft.name.endswith(":2,DT") and draft.stat().st_mtime == JAN.timestamp()
    assert b"\r\n" not in draft.read_bytes()


def test_an_mbox_export_escapes_from_lines_and_states_flags(alice, tmp_path):
    varied_account(alice, tmp_path)
    actions.export_account(alice, tmp_path / "out", format="mbox", folder="INBOX")
    text = (tmp_path / "out" / "INBOX.mbox").read_bytes()
    assert text.startswith(b"From carol@elsewhere.test Mon Jan 15 10:30:00 2024\n")
    assert b"Status: RO\n" in text and b"X-Status: AF\nX-Keywords: $Forwarded todo\n" in text
    assert b"\n>From the start\n>>From quoted\n" in text
    assert not (tmp_path / "out" / "Work").exists()


def test_export_refuses_a_missing_folder_and_a_used_directory(alice, tmp_path):
    with pytest.raises(actions.TransferError, match="folder Nope does not exist"):
        actions.export_account(alice, tmp_path / "out", format="mbox", folder="Nope")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(actions.TransferError, match="is not empty"):
        actions.export_account(alice, tmp_path / "used", format="mbox")


# --- The CLI ---------------------------------------------------------------------------


def run(*args):
    """manage.py in this process: its stdout; a refusal raises CommandError."""
    stdout = io.StringIO()
    call_command(*args, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue()


@pytest.mark.django_db
def test_the_cli_imports_exports_and_explains_refusals(tmp_path):
    run("domain", "add", "example.test")
    run("account", "add", "carol@example.test")
    make_maildir(tmp_path / "Maildir")

    done = run("mail", "import", "carol@example.test", str(tmp_path / "Maildir"))
    assert "created folder Work/Clients" in done
    assert "imported 6 messages" in done and "0 were already there" in done
    again = run("mail", "import", "carol@example.test", str(tmp_path / "Maildir"))
    assert "imported 0 messages" in again and "6 were already there" in again

    out = run("mail", "export", "carol@example.test", str(tmp_path / "out"), "--format", "mbox")
    assert "exported 6 messages" in out
    assert (tmp_path / "out" / "Work" / "Clients.mbox").exists()

    for args, error in [
        (("import", "nobody@example.test", str(tmp_path)), "account nobody@example.test does not exist"),
        (("import", "carol@example.test", str(tmp_path / "missing")), "missing does not exist"),
        (("export", "carol@example.test", str(tmp_path / "out"), "--format", "mbox"), "is not empty"),
        (("export", "carol@example.test", str(tmp_path / "x"), "--format", "maildir", "--folder", "Nope"), "folder Nope does not exist"),
    ]:
        with pytest.raises(CommandError) as refused:
            run("mail", *args)
        assert error in str(refused.value), args
        assert "\n" not in str(refused.value)


def test_the_cli_exits_as_scripts_expect(tmp_path):
    """The real process: exit status 0 and the report on stdout; 1 and one line on stderr."""
    env = datadir.child_env(datadir.prepared_data_dir(tmp_path / "data", *datadir.ALICE_AT_EXAMPLE))

    def manage(*args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=datadir.ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    make_maildir(tmp_path / "Maildir")
    done = manage("mail", "import", "alice@example.test", str(tmp_path / "Maildir"))
    assert done.returncode == 0, done.stderr
    assert "imported 6 messages" in done.stdout and "0 were already there" in done.stdout
    refused = manage("mail", "export", "alice@example.test", str(tmp_path / "x"), "--format", "maildir", "--folder", "Nope")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "folder Nope does not exist" in refused.stderr and refused.stderr.count("\n") == 1
    assert "Traceback" not in refused.stderr


def test_worker_processes_import_the_same_mail_in_the_same_order(alice, bob, tmp_path, monkeypatch):
    monkeypatch.setattr(actions, "IMPORT_BATCH", 2)  # several batches in flight at once
    make_maildir(tmp_path / "Maildir")
    in_process = actions.import_path(alice, tmp_path / "Maildir", workers=0)
    in_workers = actions.import_path(bob, tmp_path / "Maildir", workers=2)
    assert (in_workers.imported, in_workers.folders) == (in_process.imported, in_process.folders)
    assert stored(bob) == stored(alice)
    assert actions.import_path(bob, tmp_path / "Maildir", workers=2).already == 6


def test_a_refused_batch_leaves_no_bytes_behind(alice, tmp_path, monkeypatch, blob_dir):
    from accounts import actions as accounts
    from mailstore.actions import OverQuota

    monkeypatch.setattr(actions, "IMPORT_BATCH", 1)
    accounts.set_quota(alice.address, 2500)
    path = tmp_path / "box"
    write_mbox(path, *[(b"From a Mon Jan 15 10:30:00 2024\n", msg(f"n{i}", "x" * 900 + "\n")) for i in range(6)])
    with pytest.raises(OverQuota):
        actions.import_path(alice, path, workers=2)
    assert Message.objects.filter(folder__account=alice).count() == ImportedMessage.objects.count() == 2
    stored_files = [p for p in blob_dir.rglob("*") if p.is_file()]
    assert len(stored_files) == Message.objects.filter(folder__account=alice).count()


def test_worker_batches_are_synced_once_each_before_they_commit(alice, tmp_path, monkeypatch):
    from mailstore.storage import DurableFileSystemStorage

    synced = []
    monkeypatch.setattr(DurableFileSystemStorage, "sync_everything",
                        lambda self: synced.append(Message.objects.filter(folder__account=alice).count()))
    monkeypatch.setattr(actions, "IMPORT_BATCH", 2)
    make_maildir(tmp_path / "Maildir")
    actions.import_path(alice, tmp_path / "Maildir", workers=2)
    # INBOX 2, Entwürfe 1, Sent 1, Work/Clients 2: four batches, each synced with nothing of it stored yet.
    assert synced == [0, 2, 3, 4]
