"""Virus scanning over clamd's INSTREAM protocol, against a loopback server that speaks it
(tests/antispam/clamd_server.py): verdicts, failures, and what SMTP answers for each."""
import os
import tempfile

import pytest

from antispam import clamd, inbound_policy
from mailstore.models import Message
from tests.antispam.clamd_server import EICAR, FakeClamd, closed_port
from tests.antispam.conftest import message, send


@pytest.fixture(autouse=True)
def fresh_policies(monkeypatch):
    monkeypatch.setattr(inbound_policy, "TTL", 0)
    yield
    inbound_policy.forget()


@pytest.fixture
def scanner():
    with FakeClamd() as server:
        yield server


@pytest.mark.parametrize("text, parsed", [
    ("unix.sock/x", ("unix", "unix.sock/x")),
    ("/run/clamav/clamd.ctl", ("unix", "/run/clamav/clamd.ctl")),
    ("127.0.0.1:3310", ("tcp", ("127.0.0.1", 3310))),
    ("clamav.internal:3310", ("tcp", ("clamav.internal", 3310))),
    ("[::1]:3310", ("tcp", ("::1", 3310))),
])
def test_parse_address(text, parsed):
    assert clamd.parse_address(text) == parsed


@pytest.mark.parametrize("text", ["clamav", "host:", "host:99999", ":3310"])
def test_parse_address_refuses(text):
    with pytest.raises(ValueError):
        clamd.parse_address(text)


@pytest.mark.parametrize("reply, verdict", [
    (b"stream: OK\0", clamd.CLEAN),
    (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", clamd.Verdict(True, "Win.Test.EICAR_HDB-1")),
    (b"stream: Some Name With Spaces FOUND\n", clamd.Verdict(True, "Some Name With Spaces")),
])
def test_parse_reply(reply, verdict):
    assert clamd.parse_reply(reply) == verdict


def test_parse_reply_failures():
    with pytest.raises(clamd.TooLarge):
        clamd.parse_reply(b"INSTREAM size limit exceeded. ERROR\0")
    for reply in (b"stream: lstat() failed. ERROR\0", b"UNKNOWN COMMAND\0", b"garbage"):
        with pytest.raises(clamd.ScannerUnavailable):
            clamd.parse_reply(reply)


def test_it_scans_in_chunks_and_gets_the_verdict(scanner, monkeypatch):
    monkeypatch.setattr(clamd, "CHUNK", 1000)
    big = b"x" * 5500 + EICAR
    assert clamd.scan(big, address=scanner.address) == clamd.Verdict(True, "Win.Test.EICAR_HDB-1")
    assert clamd.scan(b"hello", address=scanner.address) is clamd.CLEAN
    assert clamd.scan(b"", address=scanner.address) is clamd.CLEAN
    assert scanner.streams == [big, b"hello", b""]
    assert clamd.ping(address=scanner.address)


def test_it_speaks_over_a_unix_socket():
    with tempfile.TemporaryDirectory() as directory:
        with FakeClamd(unix_path=os.path.join(directory, "clamd.sock")) as server:
            assert clamd.scan(EICAR, address=server.address).infected


def test_failures_are_scanner_unavailable(scanner):
    with pytest.raises(clamd.ScannerUnavailable):
        clamd.scan(b"x", address=closed_port())
    with pytest.raises(clamd.ScannerUnavailable):
        clamd.scan(b"x", address="/nonexistent/clamd.sock")
    scanner.delay = 1.0
    with pytest.raises(clamd.ScannerUnavailable):
        clamd.scan(b"x", address=scanner.address, timeout=0.2)
    assert not clamd.ping(address=closed_port())


def test_a_stream_over_the_scanners_limit_is_too_large(scanner):
    scanner.max_stream = 10_000
    with pytest.raises(clamd.TooLarge):
        clamd.scan(b"y" * 200_000, address=scanner.address)


# Over SMTP ------------------------------------------------------------------------------

smtp_session = pytest.mark.django_db(transaction=True)


def delivered(account):
    return Message.objects.filter(folder__account=account).count()


@pytest.fixture
def scanning(settings, scanner):
    settings.MAILSUITE_CLAMD = scanner.address
    settings.MAILSUITE_CLAMD_TIMEOUT = 2
    return scanner


@smtp_session
def test_an_infected_message_is_refused(scanning, smtp_server, alice):
    assert send(smtp_server, message(body=EICAR + b"\r\n")) == (
        554, "5.7.1 Message refused: virus found (Win.Test.EICAR_HDB-1)",
    )
    assert send(smtp_server, message())[0] == 250
    assert delivered(alice) == 1
    assert len(scanning.streams) == 2


@smtp_session
def test_nothing_is_delivered_unscanned_while_the_scanner_is_down(settings, smtp_server, alice):
    settings.MAILSUITE_CLAMD = closed_port()
    assert send(smtp_server, message()) == (451, "4.7.1 Virus scanner unavailable; please try again later")
    assert delivered(alice) == 0


@smtp_session
def test_a_slow_scanner_is_a_temporary_failure(scanning, smtp_server, alice, settings):
    settings.MAILSUITE_CLAMD_TIMEOUT = 1
    scanning.delay = 2.0
    assert send(smtp_server, message())[0] == 451
    assert delivered(alice) == 0


@smtp_session
def test_a_message_too_large_to_scan_is_refused_for_good(scanning, smtp_server, alice):
    scanning.max_stream = 1000
    assert send(smtp_server, message(body=(b"z" * 70 + b"\r\n") * 100)) == (
        552, "5.3.4 Message too large to be scanned for viruses",
    )
