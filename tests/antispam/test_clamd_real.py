"""Virus scanning against a real ClamAV daemon (Debian's clamav-daemon), started for these
tests on a UNIX socket with a tiny signature database of our own (the EICAR test file and
a marker string), so it starts in about a second and needs no download."""
import base64
import hashlib
import os
import shutil
import subprocess
import time

import pytest

from antispam import clamd, inbound_policy
from mailstore.models import Message
from tests.antispam.clamd_server import EICAR
from tests.antispam.conftest import message, send

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
MARKER = b"MAILSUITE-TEST-VIRUS-MARKER"
STREAM_LIMIT = 1024 * 1024

pytestmark = pytest.mark.skipif(not os.path.exists(CLAMD), reason="clamd is not installed (Debian: clamav-daemon)")


@pytest.fixture(scope="module")
def real_clamd(tmp_path_factory):
    home = tmp_path_factory.mktemp("clamd")
    (home / "db").mkdir()
    (home / "db" / "test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Mailsuite.Test.EICAR\n")
    (home / "db" / "test.ndb").write_text(f"Mailsuite.Test.Marker:0:*:{MARKER.hex()}\n")
    sock = home / "clamd.sock"
    (home / "clamd.conf").write_text(
        "Foreground yes\n"
        f"DatabaseDirectory {home / 'db'}\n"
        f"LocalSocket {sock}\n"
        f"LogFile {home / 'clamd.log'}\n"
        f"StreamMaxLength {STREAM_LIMIT}\n"
    )
    process = subprocess.Popen([CLAMD, "-c", str(home / "clamd.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not clamd.ping(address=str(sock), timeout=1):
            assert process.poll() is None, (home / "clamd.log").read_text() if (home / "clamd.log").exists() else "clamd exited"
            assert time.monotonic() < deadline, "clamd did not answer PING within 30 s"
            time.sleep(0.1)
        yield str(sock)
    finally:
        process.terminate()
        process.wait(10)


def test_real_clamd_verdicts(real_clamd):
    assert clamd.scan(b"hello", address=real_clamd) is clamd.CLEAN
    assert clamd.scan(EICAR, address=real_clamd) == clamd.Verdict(True, "Mailsuite.Test.EICAR.UNOFFICIAL")
    assert clamd.scan(b"text " + MARKER + b" text", address=real_clamd).signature == "Mailsuite.Test.Marker.UNOFFICIAL"
    with pytest.raises(clamd.TooLarge):
        clamd.scan(b"z" * (STREAM_LIMIT + 1), address=real_clamd)


def _attachment(data, filename):
    return (
        b"From: Sam <sam@sender.test>\r\nTo: alice@example.test\r\nSubject: Quarterly numbers\r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <v1@sender.test>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=" + filename + b"\r\n\r\n"
        + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--b--\r\n"
    )


@pytest.mark.django_db(transaction=True)
def test_an_infected_attachment_is_refused_over_smtp(real_clamd, settings, smtp_server, alice, monkeypatch):
    monkeypatch.setattr(inbound_policy, "TTL", 0)
    settings.MAILSUITE_CLAMD = real_clamd
    # clamd decodes the MIME parts itself: the base64 EICAR in a harmless-looking .txt is found.
    assert send(smtp_server, _attachment(EICAR, b"notes.txt")) == (
        554, "5.7.1 Message refused: virus found (Mailsuite.Test.EICAR.UNOFFICIAL)",
    )
    assert send(smtp_server, message())[0] == 250
    assert Message.objects.filter(folder__account=alice).count() == 1
