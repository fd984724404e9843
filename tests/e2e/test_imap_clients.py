"""Real IMAP clients against the IMAP server: mbsync (isync), fetchmail and mutt from
Debian, two imaplib sessions on one folder, and IDLE across processes (runimap + runsmtp).

- mbsync keeps a Maildir in step both ways: SCRAM, COMPRESS, pipelined UID FETCH of
  whole messages, UID STORE, APPEND with flags and dates (APPENDUID), CREATE, CLOSE to
  expunge, over plain text, STARTTLS and IMAPS.
- fetchmail reads and deletes as a retriever does, by sequence number after each EXPUNGE,
  and waits in IDLE.
- mutt resynchronises from its header cache with CONDSTORE/QRESYNC (VANISHED (EARLIER)).
"""
import imaplib
import os
import re
import shutil
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mailstore import actions
from mailstore.models import Folder, Message
from tests.conftest import PASSWORD, inbox, message_bytes
from tests.e2e.helpers import child_env, free_port, manage, settings_blob_location, wait_for_port
from tests.imap.conftest import imap_servers, no_verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

for _tool in ("mbsync", "fetchmail", "mutt"):
    if shutil.which(_tool) is None:
        pytest.fail(f"{_tool} is not installed (make test installs it from Debian)", pytrace=False)

ADDRESS = "alice@example.test"
COUNT = 1000


def message(n, subject="message"):
    """Message n: sizes, 8-bit text, dots, a 'From ' line and a large one now and then."""
    body = f".leading dot {n}\r\nFrom the start of a line\r\n{'x' * (n % 113)}\r\n"
    if n % 10 == 3:
        body += "Grüße aus Köln, ça va? Ωμέγα\r\n"
    if n % 250 == 7:
        body += ("y" * 76 + "\r\n") * 4000  # about 300 KB: literals larger than any read buffer
    return (
        f"From: Bob <bob@example.test>\r\nTo: {ADDRESS}\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <{subject}-{n}@clients.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"\r\n{body}"
    ).encode()


def load(account, count, subject="message"):
    for n in range(count):
        actions.append(account, "INBOX", message(n, subject))


def server_messages(account):
    """{Message-ID: Message} of the account's INBOX."""
    return {m.message_id.strip("<>"): m for m in inbox(account)}


def server_flags(m):
    return {flag for flag, on in (("S", m.seen), ("F", m.flagged), ("R", m.answered), ("T", m.deleted), ("D", m.draft)) if on}


# --- mbsync ----------------------------------------------------------------------------------


class Maildir:
    """mbsync's near side: <root>/INBOX/{cur,new,tmp} with its .mbsyncstate."""

    def __init__(self, root):
        self.root = Path(root)
        self.inbox = self.root / "INBOX"
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, name):
        """A folder's directory. SubFolders Verbatim: Projects/2026 is <root>/Projects/2026;
        mbsync 1.4 names folders as the wire does (RFC 3501 modified UTF-7 without UTF8=ACCEPT)."""
        from imap.parser import encode_modified_utf7

        return self.inbox if name == "INBOX" else self.root / encode_modified_utf7(name).decode()

    def files(self, name="INBOX"):
        folder = self.folder(name)
        return sorted(p for sub in ("cur", "new") if (folder / sub).exists() for p in (folder / sub).iterdir())

    def by_message_id(self, name="INBOX"):
        found = {}
        for path in self.files(name):
            match = re.search(rb"^Message-ID: <([^>]+)>$", path.read_bytes(), re.M | re.I)
            assert match, f"{path.name} has no Message-ID"
            found[match.group(1).decode()] = path
        return found

    @staticmethod
    def content(path):
        """A local copy as the server sent it: mbsync adds one X-TUID field at the end of the
        header (its own bookkeeping for every message it copies) and stores LF line ends."""
        head, sep, body = path.read_bytes().partition(b"\n\n")
        lines = head.split(b"\n")
        assert re.fullmatch(rb"X-TUID: [A-Za-z0-9+/]{12}", lines[-1]), lines[-1]
        return b"\r\n".join(lines[:-1]) + sep.replace(b"\n", b"\r\n") + body.replace(b"\n", b"\r\n")

    @staticmethod
    def flags(path):
        """Maildir info flags of a file name: 'name:2,FS' → {'F', 'S'}."""
        _, _, info = path.name.partition(":2,")
        return set(info)

    @staticmethod
    def set_flags(path, flags):
        base = path.name.partition(":2,")[0]
        target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
        path.rename(target)
        return target


def mbsync(tmp_path, maildir, port, *, ssl="None", cert=None, channel=("Patterns INBOX", "Create Near"), store=()):
    """Run `mbsync -a` with a config written for this run; returns its output."""
    tls = [f"SSLType {ssl}"] + ([f"CertificateFile {cert}", "SystemCertificates no"] if cert else [])
    config = tmp_path / "mbsyncrc"
    config.write_text("\n".join([
        "IMAPAccount mailsuite", "Host 127.0.0.1", f"Port {port}", f"User {ADDRESS}", f'Pass "{PASSWORD}"', *tls, "",
        "IMAPStore remote", "Account mailsuite", "",
        "MaildirStore local", f"Path {maildir.root}/", f"Inbox {maildir.inbox}", *store, "",
        "Channel mailsuite", "Far :remote:", "Near :local:", "Expunge Both", "SyncState *", "Sync All",
        *channel, "",
    ]))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mbsync", "-V", "-c", str(config), "-a"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HOME": str(home)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output


def inbox_folder(account):
    return Folder.objects.get(account=account, name="INBOX")


def far_uids(maildir):
    """The server UIDs mbsync's state file pairs with local messages."""
    lines = (maildir.inbox / ".mbsyncstate").read_text().split("\n\n", 1)[1].splitlines()
    return sorted(int(line.split()[0]) for line in lines if line.strip())


def snapshot(maildir):
    """{file name: inode} of every local message: what a sync left alone keeps both."""
    return {path.name: path.stat().st_ino for path in maildir.files()}


def test_mbsync_syncs_a_thousand_messages_and_flags_round_trip(settings, alice, tmp_path):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    load(alice, COUNT)
    maildir = Maildir(tmp_path / "Mail")
    with imap_servers() as server:
        # 1. Everything arrives, byte for byte (a Maildir on Unix keeps LF line ends).
        mbsync(tmp_path, maildir, server.ports["imap"])
        stored = server_messages(alice)
        local = maildir.by_message_id()
        assert sorted(local) == sorted(stored)
        for message_id, path in local.items():
            assert Maildir.content(path) == message_bytes(stored[message_id]), message_id
            assert Maildir.flags(path) == set()
        assert far_uids(maildir) == sorted(m.uid for m in stored.values())
        assert f"FarUidValidity {inbox_folder(alice).uidvalidity}\n" in (maildir.inbox / ".mbsyncstate").read_text()

        # 2. Local changes go up, over STARTTLS with plaintext logins refused: seen, flagged,
        # answered; deleted files and trashed (T) messages are expunged on the server.
        settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = False
        wanted, removed = {}, set()
        for n in range(COUNT):
            message_id, path = f"message-{n}@clients.test", local[f"message-{n}@clients.test"]
            if n % 50 == 1:
                path.unlink()
                removed.add(message_id)
                continue
            flags = {flag for flag, every in (("S", 3), ("F", 7), ("R", 11)) if n % every == 0}
            if n % 50 == 2:
                flags.add("T")
                removed.add(message_id)
            if flags:
                Maildir.set_flags(path, flags)
            wanted[message_id] = flags - {"T"}
        cert = settings.MAILSUITE_TLS_CERT
        mbsync(tmp_path, maildir, server.ports["imap"], ssl="STARTTLS", cert=cert)
        stored = server_messages(alice)
        assert sorted(stored) == sorted(set(wanted) - removed)
        assert {mid: server_flags(m) for mid, m in stored.items()} == {mid: wanted[mid] for mid in stored}
        local = maildir.by_message_id()
        assert sorted(local) == sorted(stored)
        assert len(stored) == COUNT - 40

        # 3. Server changes come down, over IMAPS: flags set and cleared, messages expunged.
        folder = inbox_folder(alice)
        by_n = {int(mid.split("-")[1].split("@")[0]): m for mid, m in stored.items()}
        actions.store_flags(folder, [m.uid for n, m in by_n.items() if n % 3 == 0 and n % 2 == 0], mode="remove", flags=["\\Seen"])
        actions.store_flags(folder, [m.uid for n, m in by_n.items() if n % 5 == 0], mode="add", flags=["\\Flagged", "\\Answered"])
        actions.store_flags(folder, [m.uid for n, m in by_n.items() if n % 17 == 0], mode="set", flags=["\\Seen", "\\Draft"])
        gone = [m.uid for n, m in by_n.items() if n % 50 == 9]
        assert actions.expunge(folder, gone) == sorted(gone)
        mbsync(tmp_path, maildir, server.ports["imaps"], ssl="IMAPS", cert=cert)
        stored = server_messages(alice)
        local = maildir.by_message_id()
        assert sorted(local) == sorted(stored)
        assert {mid: Maildir.flags(path) for mid, path in local.items()} == {mid: server_flags(m) for mid, m in stored.items()}
        assert any(server_flags(m) == {"S", "D"} for m in stored.values())

        # 4. New mail on the server: the next sync fetches those and leaves the rest alone.
        before = snapshot(maildir)
        load(alice, 5, subject="late")
        settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
        mbsync(tmp_path, maildir, server.ports["imap"])
        after = snapshot(maildir)
        assert {name: after[name] for name in before} == before
        new = {name for name in after if name not in before}
        assert len(new) == 5
        local = maildir.by_message_id()
        stored = server_messages(alice)
        assert sorted(mid for mid, path in local.items() if path.name in new) == [f"late-{n}@clients.test" for n in range(5)]
        for n in range(5):
            mid = f"late-{n}@clients.test"
            assert Maildir.content(local[mid]) == message_bytes(stored[mid])

        # 5. Mail written to the Maildir goes up by APPEND, flags and all, and keeps its bytes.
        written = {}
        for n, flags in ((0, ""), (1, "S"), (2, "FS")):
            raw = message(n, subject="local")
            sub = "cur" if flags else "new"
            path = maildir.inbox / sub / f"{int(time.time())}.local{n}.example{':2,' + flags if flags else ''}"
            path.write_bytes(raw.replace(b"\r\n", b"\n"))
            written[f"local-{n}@clients.test"] = (raw, set(flags))
        mbsync(tmp_path, maildir, server.ports["imap"])
        stored = server_messages(alice)
        for mid, (raw, flags) in written.items():
            head, sep, body = message_bytes(stored[mid]).partition(b"\r\n\r\n")
            # Its copy carries mbsync's X-TUID too: how it finds the UID without UIDPLUS.
            head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.startswith(b"X-TUID: "))
            assert head + sep + body == raw
            assert server_flags(stored[mid]) == flags
        assert far_uids(maildir) == sorted(m.uid for m in stored.values())
        after = snapshot(maildir)

        # 6. And a sync with nothing to do changes nothing on either side.
        modseq = inbox_folder(alice).highestmodseq
        mbsync(tmp_path, maildir, server.ports["imap"])
        assert snapshot(maildir) == after
        assert inbox_folder(alice).highestmodseq == modseq


def test_mbsync_syncs_every_folder_both_ways_with_arrival_dates(settings, alice, tmp_path):
    import datetime

    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    utc = datetime.timezone.utc
    arrived = {}
    actions.create_folder(alice, "Projects/2026")
    actions.create_folder(alice, "Entwürfe")
    for n, name in enumerate(["INBOX", "INBOX", "Archive", "Projects/2026", "Projects/2026", "Entwürfe"]):
        when = datetime.datetime(2025, 1 + n, 10 + n, 8, n, 30, tzinfo=utc)
        actions.append(alice, name, message(n, subject="folder"), internaldate=when, flags=["\\Seen"] if n % 2 else [])
        arrived[f"folder-{n}@clients.test"] = (name, when)
    maildir = Maildir(tmp_path / "Mail")
    options = dict(channel=("Patterns *", "Create Both", "CopyArrivalDate yes"), store=("SubFolders Verbatim",))
    with imap_servers() as server:
        mbsync(tmp_path, maildir, server.ports["imap"], **options)
        names = {m.folder.name for m in Message.objects.filter(folder__account=alice).select_related("folder")}
        for name in names:
            local = maildir.by_message_id(name)
            stored = {m.message_id.strip("<>"): m for m in Message.objects.filter(folder__account=alice, folder__name=name)}
            assert sorted(local) == sorted(stored), name
            for mid, path in local.items():
                assert Maildir.content(path) == message_bytes(stored[mid])
                assert Maildir.flags(path) == server_flags(stored[mid])
                # CopyArrivalDate: the file's mtime is the message's INTERNALDATE.
                assert path.stat().st_mtime == arrived[mid][1].timestamp(), (mid, name)
        for name in ("Drafts", "Sent", "Junk", "Trash", "Projects"):
            assert (maildir.folder(name) / "cur").is_dir(), name

        # A folder made locally is created on the server, messages keep their arrival dates.
        notes = maildir.folder("Local/Grün")
        for sub in ("cur", "new", "tmp"):
            (notes / sub).mkdir(parents=True)
        when = datetime.datetime(2020, 2, 29, 23, 59, 58, tzinfo=utc)
        for n, (name, sub) in enumerate([("Local/Grün", "new"), ("Archive", "cur")]):
            path = maildir.folder(name) / sub / f"{1700000000 + n}.local.example{':2,F' if sub == 'cur' else ''}"
            path.write_bytes(message(n, subject="pushed").replace(b"\r\n", b"\n"))
            os.utime(path, (when.timestamp(), when.timestamp()))
        mbsync(tmp_path, maildir, server.ports["imap"], **options)
        notes_row = Folder.objects.get(account=alice, name="Local/Grün")
        [pushed] = notes_row.messages.all()
        assert pushed.internaldate == when and not pushed.flagged
        archived = Message.objects.get(folder__account=alice, folder__name="Archive", message_id="<pushed-1@clients.test>")
        assert archived.internaldate == when and archived.flagged
        assert Folder.objects.filter(account=alice, name="Local").exists()

        # Expunged on the server in a nested folder: gone locally on the next sync.
        folder = Folder.objects.get(account=alice, name="Projects/2026")
        gone = Message.objects.get(folder=folder, message_id="<folder-3@clients.test>")
        actions.expunge(folder, [gone.uid])
        mbsync(tmp_path, maildir, server.ports["imap"], **options)
        assert sorted(maildir.by_message_id("Projects/2026")) == ["folder-4@clients.test"]


# --- fetchmail -------------------------------------------------------------------------------

FETCHMAIL_COUNT = 300


SSLPROTO = {True: '"tls1.2+"', False: '""'}


def fetchmail(port, tmp_path, *, keep, tls):
    """Debian's fetchmail in IMAP mode; each message goes to its own file through an MDA."""
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {port} protocol IMAP auth password\n"
        f'  user "{ADDRESS}" there with password "{PASSWORD}" is "{os.environ.get("USER", "root")}" here\n'
        # tls1.2+ insists on STARTTLS; an empty sslproto turns it off.
        f"  sslproto {SSLPROTO[tls]} no sslcertck\n"
        f"  {'keep' if keep else 'no keep'} no rewrite\n"
        f"  mda \"/bin/sh -c 'cat > $(mktemp -p {out} msg.XXXXXX)'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    result = subprocess.run(
        # Its own pid file: as root, fetchmail shares /var/run/fetchmail.pid with every other
        # fetchmail on the machine (another test) and refuses to start beside one.
        ["fetchmail", "--nodetach", "--nosyslog", "--pidfile", str(home / "fetchmail.pid"), "-v", "-f", str(rc)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    return result.returncode, result.stdout + result.stderr, sorted(out.iterdir())


def message_ids(paths):
    found = []
    for path in paths:
        match = re.search(rb"^Message-ID: <([^>]+)>$", path.read_bytes(), re.M)
        found.append(match.group(1).decode())
    return sorted(found)


def test_fetchmail_keep_fetches_each_message_once_over_starttls(settings, alice, tmp_path):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = False  # STARTTLS or nothing
    load(alice, FETCHMAIL_COUNT)
    with imap_servers() as server:
        code, output, files = fetchmail(server.ports["imap"], tmp_path, keep=True, tls=True)
        assert code == 0, output[-3000:]
        assert "IMAP> A0001 STARTTLS" in output and "upgrade to TLS succeeded" in output
        assert f"{FETCHMAIL_COUNT} messages for {ADDRESS}" in output
        assert message_ids(files) == sorted(f"message-{n}@clients.test" for n in range(FETCHMAIL_COUNT))
        # The MDA gets LF line ends and fetchmail's own Received field on top of the stored bytes.
        stored = server_messages(alice)
        for path in files:
            received, _, rest = path.read_bytes().partition(b"\nFrom: Bob")
            assert received.startswith(b"Received: from 127.0.0.1")
            assert b"From: Bob" + rest == message_bytes(stored[message_ids([path])[0]]).replace(b"\r\n", b"\n")
        # Kept, and marked seen: that is how fetchmail's IMAP mode knows what it has fetched.
        assert len(stored) == FETCHMAIL_COUNT and all(m.seen for m in stored.values())

        code, output, again = fetchmail(server.ports["imap"], tmp_path, keep=True, tls=True)
        assert code == 1, output[-3000:]  # 1: no new mail
        assert len(again) == FETCHMAIL_COUNT

        load(alice, 2, subject="late")
        code, output, files = fetchmail(server.ports["imap"], tmp_path, keep=True, tls=True)
        assert code == 0, output[-3000:]
        assert len(files) == FETCHMAIL_COUNT + 2
        assert "late-1@clients.test" in message_ids(files)


def test_fetchmail_without_keep_empties_the_inbox_over_plaintext_loopback(settings, alice, tmp_path):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    load(alice, FETCHMAIL_COUNT)
    with imap_servers() as server:
        code, output, files = fetchmail(server.ports["imap"], tmp_path, keep=False, tls=False)
        assert code == 0, output[-3000:]
        assert "IMAP> A0001 LOGIN" in output  # no STARTTLS first
        assert message_ids(files) == sorted(f"message-{n}@clients.test" for n in range(FETCHMAIL_COUNT))
        assert inbox(alice) == []  # flagged \Deleted and expunged
        assert Folder.objects.get(account=alice, name="INBOX").message_count == 0

        code, output, _ = fetchmail(server.ports["imap"], tmp_path, keep=False, tls=False)
        assert code == 1, output[-3000:]


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_fetchmail_idles_over_imaps_and_hears_the_server_stop(settings, alice, tmp_path, caplog):
    import logging

    settings.MAILSUITE_IMAP_IDLE_POLL = 600  # only a change event can wake the session in time
    load(alice, 3)
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    rc = home / ".fetchmailrc"
    log = open(tmp_path / "fetchmail.log", "w+")
    with imap_servers() as server:
        rc.write_text(
            "set no bouncemail\n"
            f"poll 127.0.0.1 service {server.ports['imaps']} protocol IMAP auth password\n"
            f'  user "{ADDRESS}" there with password "{PASSWORD}" is "{os.environ.get("USER", "root")}" here\n'
            '  ssl sslproto "tls1.2+" no sslcertck idle no keep no rewrite\n'
            f"  mda \"/bin/sh -c 'cat > $(mktemp -p {out} msg.XXXXXX)'\"\n"
        )
        rc.chmod(0o600)
        fetchmail = subprocess.Popen(
            ["fetchmail", "--nodetach", "--nosyslog", "--pidfile", str(home / "fetchmail.pid"), "-v", "-f", str(rc)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)},
        )
        try:
            assert wait_until(lambda: len(list(out.iterdir())) == 3 and "IDLE" in Path(log.name).read_text(), 30)
            for n in range(2):
                actions.append(alice, "INBOX", message(n, subject="idle"))
                stored = time.monotonic()
                assert wait_until(lambda: len(list(out.iterdir())) == 4 + n, 5)
                # Heard of in IDLE, then fetched and handed to the MDA: seconds, not a poll.
                assert time.monotonic() - stored < 3, "fetchmail in IDLE heard of new mail late"
            assert wait_until(lambda: inbox(alice) == [], 5)
            # Back in IDLE before the server stops.
            assert wait_until(lambda: Path(log.name).read_text().rstrip().endswith("IMAP< + idling"), 5)
        except BaseException:
            fetchmail.kill()
            raise
    # The server stopped while fetchmail idled: it was told so, and nothing went wrong here.
    try:
        assert wait_until(lambda: "IMAP< * BYE Server shutting down" in Path(log.name).read_text(), 5)
    finally:
        fetchmail.terminate()
        fetchmail.wait(10)
    assert message_ids(sorted(out.iterdir())) == sorted(
        [f"message-{n}@clients.test" for n in range(3)] + [f"idle-{n}@clients.test" for n in range(2)]
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- several clients on one folder -----------------------------------------------------------


def imap_login(port):
    client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    client.login(ADDRESS, PASSWORD)
    return client


def untagged(client, kind):
    """What imaplib collected of one untagged response kind since last asked, as text."""
    _, data = client.response(kind)
    return [item.decode() if isinstance(item, bytes) else item for item in data if item is not None]


class Idler:
    """An imaplib session in IDLE (RFC 2177), which imaplib itself cannot do."""

    def __init__(self, client):
        self.client = client
        self.tag = client._new_tag()
        client.send(self.tag + b" IDLE\r\n")
        assert client.readline() == b"+ idling\r\n"

    def next_line(self, timeout):
        self.client.sock.settimeout(timeout)
        try:
            return self.client.readline().decode().rstrip("\r\n")
        finally:
            self.client.sock.settimeout(10)

    def done(self):
        self.client.send(b"DONE\r\n")
        lines = []
        while not lines or not lines[-1].startswith(self.tag.decode() + " "):
            lines.append(self.client.readline().decode().rstrip("\r\n"))
        assert lines[-1] == f"{self.tag.decode()} OK IDLE terminated"
        return lines[:-1]


def test_two_imaplib_clients_see_each_others_flags_and_expunges(settings, alice):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    load(alice, 6)
    uids = [m.uid for m in inbox(alice)]
    with imap_servers() as server:
        one, two = imap_login(server.ports["imap"]), imap_login(server.ports["imap"])
        assert one.select("INBOX") == ("OK", [b"6"])
        assert two.select("INBOX") == ("OK", [b"6"])

        # Polling with NOOP: flags set by the other session, then its expunge.
        assert two.uid("STORE", f"{uids[1]},{uids[4]}", "+FLAGS.SILENT", r"(\Flagged \Seen)")[0] == "OK"
        assert one.noop()[0] == "OK"
        assert sorted(untagged(one, "FETCH")) == [r"2 (FLAGS (\Seen \Flagged))", r"5 (FLAGS (\Seen \Flagged))"]
        assert two.store("3", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        assert two.expunge() == ("OK", [b"3"])
        assert one.noop()[0] == "OK"
        assert untagged(one, "FETCH") == [] and untagged(one, "EXPUNGE") == ["3"]
        assert one.fetch("1:*", "(UID FLAGS)")[1] == [
            f"1 (UID {uids[0]} FLAGS ())".encode(), f"2 (UID {uids[1]} FLAGS (\\Seen \\Flagged))".encode(),
            f"3 (UID {uids[3]} FLAGS ())".encode(), f"4 (UID {uids[4]} FLAGS (\\Seen \\Flagged))".encode(),
            f"5 (UID {uids[5]} FLAGS ())".encode(),
        ]

        # In IDLE the news arrives unasked, each within a second.
        idle = Idler(one)
        started = time.monotonic()
        assert two.store("1", "FLAGS.SILENT", r"(\Answered)")[0] == "OK"
        assert idle.next_line(2) == r"* 1 FETCH (FLAGS (\Answered))"
        assert time.monotonic() - started < 1
        started = time.monotonic()
        assert two.store("4", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        assert idle.next_line(2) == r"* 4 FETCH (FLAGS (\Seen \Flagged \Deleted))"
        assert time.monotonic() - started < 1
        started = time.monotonic()
        assert two.expunge() == ("OK", [b"4"])
        assert idle.next_line(2) == "* 4 EXPUNGE"
        assert time.monotonic() - started < 1
        started = time.monotonic()
        actions.append(alice, "INBOX", message(99, subject="while-idle"))
        assert idle.next_line(2) == "* 5 EXISTS"
        assert time.monotonic() - started < 1
        assert idle.done() == []
        assert one.uid("SEARCH", "ALL")[1] == [" ".join(str(u) for u in (uids[0], uids[1], uids[3], uids[5], uids[5] + 1)).encode()]
        for client in (one, two):
            client.logout()


# --- across processes: runimap ×2 and runsmtp on one data dir --------------------------------


def stop(*processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(20))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def test_idle_hears_within_a_second_of_what_other_processes_do(settings, alice, tmp_path):
    from accounts.actions import set_password
    from mailsuite import settings as project_settings
    from mailsuite.lib.tls import ensure_certificate

    data_dir = tmp_path / "data"
    settings_blob_location(settings, data_dir)  # runsmtp writes the blobs this test reads
    # The children check passwords with the project's hashers, not the tests' fast one.
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    set_password(ADDRESS, PASSWORD)
    # The TLS pair is made once here: three processes making it at the same first start
    # race (ensure_certificate is not atomic across processes) and one may load a key that
    # does not match the certificate.
    ensure_certificate(data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem", "mx.example.test")
    smtp_port, imap_ports = free_port(), [(free_port(), free_port()) for _ in range(2)]
    common = dict(
        MAILSUITE_HOSTNAME="mx.example.test", MAILSUITE_BIND="127.0.0.1", MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK=1,
        MAILSUITE_IMAP_IDLE_POLL=600,  # only the change bus can make the deadline
        MAILSUITE_IMAP_WORKERS=1,  # two runimap processes are the point; more would only load the machine
        PYTHONUNBUFFERED=1,
    )
    smtp = manage("runsmtp", "--workers", "1", "--submission-port", "0", "--smtps-port", "0",
                  env=child_env(data_dir, MAILSUITE_SMTP_PORT=smtp_port, **common))
    logs = [open(tmp_path / f"runimap-{i}.log", "w+") for i in range(2)]
    imaps = [
        manage("runimap", env=child_env(data_dir, MAILSUITE_IMAP_PORT=port, MAILSUITE_IMAPS_PORT=tls_port, **common),
               stdout=log, stderr=subprocess.STDOUT)
        for (port, tls_port), log in zip(imap_ports, logs)
    ]
    processes = [smtp, *imaps]
    try:
        wait_for_port(smtp_port, process=smtp)
        for process, (port, tls_port) in zip(imaps, imap_ports):
            wait_for_port(port, process=process)
            wait_for_port(tls_port, process=process)
        # The idler over IMAPS, the other session in plain text on loopback.
        idler = imaplib.IMAP4_SSL("127.0.0.1", imap_ports[0][1], ssl_context=no_verify(), timeout=10)
        idler.login(ADDRESS, PASSWORD)
        other = imap_login(imap_ports[1][0])
        assert idler.select("INBOX") == ("OK", [b"0"])
        idle = Idler(idler)

        # New mail through runsmtp: EXISTS within a second of the 250.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            for n in range(1, 4):
                client.sendmail("bob@elsewhere.test", [ADDRESS], message(n, subject="smtp"))
                answered = time.monotonic()
                assert idle.next_line(2) == f"* {n} EXISTS"
                assert time.monotonic() - answered < 1, f"EXISTS came {time.monotonic() - answered:.2f}s after the 250"

        # A flag change and an expunge made through the other runimap process.
        assert other.select("INBOX") == ("OK", [b"3"])
        started = time.monotonic()
        assert other.store("2", "+FLAGS.SILENT", r"(\Flagged \Deleted)")[0] == "OK"
        assert idle.next_line(2) == r"* 2 FETCH (FLAGS (\Flagged \Deleted))"
        assert time.monotonic() - started < 1
        started = time.monotonic()
        assert other.expunge() == ("OK", [b"2"])
        assert idle.next_line(2) == "* 2 EXPUNGE"
        assert time.monotonic() - started < 1
        assert idle.done() == []
        stored = server_messages(alice)
        assert sorted(stored) == ["smtp-1@clients.test", "smtp-3@clients.test"]
        typ, data = idler.uid("FETCH", str(stored["smtp-3@clients.test"].uid), "(BODY.PEEK[])")
        assert data[0][1] == message_bytes(stored["smtp-3@clients.test"])
        other.logout()

        # runimap stopping (SIGTERM) says BYE to a client idling over TLS, and exits cleanly.
        idle = Idler(idler)
        imaps[0].send_signal(signal.SIGTERM)
        assert idle.next_line(5) == "* BYE Server shutting down"
        assert imaps[0].wait(10) == 0
    finally:
        codes = stop(*processes)
    assert codes == [0, 0, 0]
    for log in logs:
        log.seek(0)
        assert "Traceback" not in log.read()


# --- mutt ------------------------------------------------------------------------------------


class Mutt:
    """mutt on a pseudo-terminal: keys in, the screen drained in the background. What it
    did is read back from the server, not from the screen."""

    def __init__(self, rc, home):
        import pty

        self.master, terminal = pty.openpty()
        env = {"HOME": str(home), "TERM": "vt100", "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(
            ["mutt", "-n", "-d", "2", "-F", str(rc)], stdin=terminal, stdout=terminal, stderr=terminal,
            env=env, start_new_session=True,
        )
        os.close(terminal)
        self.screen = bytearray()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def shows(self, text):
        return text.encode() in self.screen

    def keys(self, text):
        os.write(self.master, text.encode())
        time.sleep(0.3)  # mutt reads keys as they come; give each step its screen

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        os.close(self.master)


def muttrc(tmp_path, port):
    rc = tmp_path / "muttrc"
    rc.write_text("\n".join([
        f'set folder="imap://{ADDRESS.replace("@", "%40")}@127.0.0.1:{port}/"',
        'set spoolfile="+INBOX"',
        f'set imap_pass="{PASSWORD}"',
        "set ssl_starttls=no ssl_force_tls=no",
        f'set header_cache="{tmp_path}/hcache"',  # a cache is what lets QRESYNC pay off
        "set imap_condstore=yes imap_qresync=yes",
        "set move=no confirmappend=no confirmcreate=no delete=yes quit=yes beep=no wait_key=no mark_old=no",
        "set sort=mailbox-order",
        "",
    ]))
    return rc


def folder_ids(account, name):
    return sorted(m.message_id.strip("<>") for m in Message.objects.filter(folder__account=account, folder__name=name))


def test_mutt_with_a_header_cache_and_qresync(settings, alice, tmp_path):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    load(alice, 20)
    home = tmp_path / "home"
    home.mkdir()
    ids = [f"message-{n}@clients.test" for n in range(20)]
    with imap_servers() as server:
        rc = muttrc(tmp_path, server.ports["imap"])
        # First session: flag message 1, delete 2, save 3 to Archive (a copy, then a delete).
        mutt = Mutt(rc, home)
        try:
            assert wait_until(lambda: mutt.shows("message 19"), 15), mutt.screen[-2000:]
            mutt.keys("1\rF")
            mutt.keys("2\rd")
            mutt.keys("3\rs=Archive\r")
            assert wait_until(lambda: folder_ids(alice, "Archive") == [ids[2]], 10)
            mutt.keys("$")
            assert wait_until(lambda: len(inbox(alice)) == 18, 10)
            mutt.keys("q")
            assert mutt.process.wait(10) == 0
        finally:
            mutt.close()
        stored = server_messages(alice)
        assert sorted(stored) == sorted(set(ids) - {ids[1], ids[2]})
        assert [mid for mid, m in stored.items() if m.flagged] == [ids[0]]
        # mutt reads bodies with BODY.PEEK; only what it displayed would be \Seen.
        assert not any(m.seen for m in stored.values())

        # Meanwhile, elsewhere: an expunge, a flag, new mail.
        folder = inbox_folder(alice)
        actions.expunge(folder, [stored[ids[5]].uid])
        actions.store_flags(folder, [stored[ids[6]].uid], mode="add", flags=["\\Flagged"])
        actions.append(alice, "INBOX", message(0, subject="late"))

        # Second session, from the header cache: SELECT with QRESYNC must tell mutt all of
        # that. Save what it thinks is flagged to one folder, then copy all it sees to another.
        mutt = Mutt(rc, home)
        try:
            assert wait_until(lambda: mutt.shows("late 0"), 15), mutt.screen[-2000:]
            mutt.keys("T~F\r")
            mutt.keys(";s=Flagged\r")
            assert wait_until(lambda: len(folder_ids(alice, "Flagged")) >= 2, 10)
            mutt.keys("$")
            mutt.keys("T~A\r")
            mutt.keys(";C=All\r")
            assert wait_until(lambda: len(folder_ids(alice, "All")) >= 15, 10)
            mutt.keys("q")
            assert mutt.process.wait(10) == 0
        finally:
            mutt.close()
        debug = (home / ".muttdebug0").read_text(errors="replace")
        # mutt 2.2 resynchronises with UID FETCH … (CHANGEDSINCE m VANISHED) (RFC 7162 §3.2.6):
        # UIDs 2 and 3 went in its own last session, 6 elsewhere.
        assert re.search(r"> a\d+ UID FETCH 1:20 \(FLAGS\) \(CHANGEDSINCE \d+ VANISHED\)", debug)
        assert "< * VANISHED (EARLIER) 2:3,6\n" in debug
        assert folder_ids(alice, "Flagged") == sorted([ids[0], ids[6]])
        expected = sorted(set(ids) - {ids[n] for n in (0, 1, 2, 5, 6)} | {"late-0@clients.test"})
        assert folder_ids(alice, "INBOX") == expected
        assert folder_ids(alice, "All") == expected
