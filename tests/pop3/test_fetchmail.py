"""Debian's fetchmail as a real POP3 client: 500 messages over STLS, keeping them (UIDL
tells it what it has already seen) and not keeping them (deleted at QUIT)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, inbox
from tests.pop3.conftest import pop3_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

if shutil.which("fetchmail") is None:
    pytest.fail("fetchmail is not installed (make test installs it from Debian)", pytrace=False)

COUNT = 500


def message(n):
    # Lines starting with a dot, a bare-LF line end, and sizes that differ from one to the next.
    return (
        f"From: mallory@elsewhere.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@fetchmail.test>\r\n\r\n"
        f".leading dot {n}\r\n.\r\nplain {'x' * (n % 97)}\nlast line\r\n"
    ).encode()


def deliver_many(account, count):
    from mailstore.actions import Recipient, deliver

    for n in range(count):
        [outcome] = deliver(message(n), [Recipient(account, account.address)], return_path="m@elsewhere.test")
        assert outcome.error is None


def fetchmail(port, tmp_path, *, keep):
    home = tmp_path / "home"
    out = tmp_path / "out"
    home.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {port} protocol POP3 uidl auth password\n"
        f'  user "alice@example.test" there with password "{PASSWORD}" is "{os.environ.get("USER", "root")}" here\n'
        '  sslproto "tls1.2+" no sslcertck\n'
        f"  {'keep' if keep else 'no keep'} no rewrite\n"
        f"  mda \"/bin/sh -c 'cat > $(mktemp -p {out} msg.XXXXXX)'\"\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    result = subprocess.run(
        # Our own pid file: as root fetchmail would otherwise share /var/run/fetchmail.pid
        # with any other fetchmail on the machine (another test run) and refuse to start.
        ["fetchmail", "--nodetach", "--nosyslog", "--pidfile", str(home / "fetchmail.pid"), "-v", "-f", str(rc)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    return result.returncode, result.stdout + result.stderr, sorted(out.iterdir())


def subjects(paths):
    found = []
    for path in paths:
        for line in path.read_bytes().splitlines():
            if line.startswith(b"Subject: "):
                found.append(line[len("Subject: "):].decode())
                break
    return found


def test_fetchmail_keep_mode_fetches_everything_once(transactional_db, settings, alice, tmp_path):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    deliver_many(alice, COUNT)
    with pop3_servers() as server:
        code, output, files = fetchmail(server.ports["pop3"], tmp_path, keep=True)
        assert code == 0, output[-3000:]
        assert "STLS" in output
        assert sorted(subjects(files)) == sorted(f"message {n}" for n in range(COUNT))
        # fetchmail hands its MDA LF line ends; the body arrives unstuffed, byte for byte.
        body = next(path for path in files if b"Subject: message 7\n" in path.read_bytes()).read_bytes()
        assert body.endswith(b"\n\n.leading dot 7\n.\nplain xxxxxxx\nlast line\n")
        assert len(inbox(alice)) == COUNT  # kept

        # A second run: the UIDLs are the same, so nothing is new.
        code, output, again = fetchmail(server.ports["pop3"], tmp_path, keep=True)
        assert code == 1, output[-3000:]  # 1: no mail
        assert len(again) == COUNT


def test_fetchmail_no_keep_mode_deletes_what_it_fetched(transactional_db, settings, alice, tmp_path):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    deliver_many(alice, COUNT)
    with pop3_servers() as server:
        code, output, files = fetchmail(server.ports["pop3"], tmp_path, keep=False)
        assert code == 0, output[-3000:]
        assert sorted(subjects(files)) == sorted(f"message {n}" for n in range(COUNT))
        assert inbox(alice) == []
        code, output, _ = fetchmail(server.ports["pop3"], tmp_path, keep=False)
        assert code == 1, output[-3000:]
