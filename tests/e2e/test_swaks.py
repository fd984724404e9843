"""Debian's swaks as a real SMTP client against the MX server."""
import shutil
import subprocess

import pytest

from tests.conftest import inbox, message_bytes

pytestmark = pytest.mark.django_db(transaction=True)

if shutil.which("swaks") is None:
    pytest.fail("swaks is not installed (make test installs it from Debian)", pytrace=False)


def swaks(server, *args):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.port}", "--helo", "client.swaks.test", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_swaks_delivers(smtp_server, alice):
    code, output = swaks(smtp_server, "--from", "mallory@elsewhere.test", "--to", "alice@example.test",
                         "--header", "Subject: from swaks", "--body", "hello from swaks")
    assert code == 0, output
    [message] = inbox(alice)
    assert message.subject == "from swaks"
    assert b"hello from swaks" in message_bytes(message)


def test_swaks_with_pipelining_and_starttls(smtp_server, alice, bob):
    code, output = swaks(smtp_server, "--pipeline", "--tls", "--from", "mallory@elsewhere.test",
                         "--to", "alice@example.test,bob@example.test")
    assert code == 0, output
    assert "<~  250 2.0.0 Ok: queued as" in output or "<~* 250 2.0.0 Ok: queued as" in output
    assert len(inbox(alice)) == len(inbox(bob)) == 1
    assert b" with ESMTPS id " in message_bytes(inbox(alice)[0])


def test_swaks_sees_unknown_user_and_relay_refusals(smtp_server, alice):
    code, output = swaks(smtp_server, "--from", "mallory@elsewhere.test", "--to", "nobody@example.test")
    assert code != 0
    assert "550 5.1.1 <nobody@example.test>: no such user here" in output
    code, output = swaks(smtp_server, "--from", "mallory@elsewhere.test", "--to", "x@faraway.test")
    assert code != 0
    assert "554 5.7.1 <x@faraway.test>: relay access denied" in output


def test_swaks_8bit_body_round_trips(smtp_server, alice, tmp_path):
    raw = "From: m@elsewhere.test\r\nTo: alice@example.test\r\nSubject: 8bit\r\n\r\nÄÖÜ äöü ß — ✓\r\n".encode()
    path = tmp_path / "message.eml"
    path.write_bytes(raw[:-2])  # swaks ends the data with its own CRLF before the dot
    code, output = swaks(smtp_server, "--from", "m@elsewhere.test", "--to", "alice@example.test",
                         "--data", str(path))
    assert code == 0, output
    assert message_bytes(inbox(alice)[0]).endswith(raw)
