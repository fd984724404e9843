"""Early talkers: with a greeting delay, a client that sends before the 220 gets 554 5.5.0,
then 503 to anything but QUIT (RFC 5321 §3.1), over a raw socket; patient clients are served."""
import ipaddress
import smtplib
import socket
import time

import pytest

from mta import smtpd

pytestmark = pytest.mark.django_db(transaction=True)

DELAY = 0.3


@pytest.fixture
def delayed_greeting(settings, monkeypatch):
    settings.MAILSUITE_SMTP_GREETING_DELAY = DELAY
    monkeypatch.setattr(smtpd, "DELAY_LOOPBACK_GREETING", True)  # 127.0.0.x stands in for remote clients


def connect(server, source="127.0.0.2"):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(source, 0))
    return sock, sock.makefile("rb")


def test_a_client_talking_before_the_greeting_is_refused(delayed_greeting, smtp_server):
    sock, replies = connect(smtp_server)
    with sock, replies:
        sock.sendall(b"EHLO spam.test\r\nMAIL FROM:<x@spam.test>\r\n")  # at once, no waiting
        assert replies.readline() == b"554 5.5.0 You talked before the greeting: no service\r\n"
        assert replies.readline() == b"503 5.5.1 Bad sequence of commands: no service\r\n"  # the EHLO
        assert replies.readline() == b"503 5.5.1 Bad sequence of commands: no service\r\n"  # the MAIL
        sock.sendall(b"QUIT\r\n")
        assert replies.readline() == b"221 2.0.0 Bye\r\n"
        assert replies.readline() == b""  # closed


def test_a_refused_client_that_keeps_talking_is_dropped(delayed_greeting, smtp_server):
    sock, replies = connect(smtp_server)
    with sock, replies:
        sock.sendall(b"".join(b"NOOP\r\n" for _ in range(smtpd.EARLY_TALKER_COMMANDS + 5)))
        lines = replies.read().splitlines()  # until the server closes
    assert lines[0].startswith(b"554 5.5.0")
    assert lines[1:] == [b"503 5.5.1 Bad sequence of commands: no service"] * smtpd.EARLY_TALKER_COMMANDS


def test_a_client_that_waits_is_greeted_after_the_delay(delayed_greeting, smtp_server):
    started = time.monotonic()
    sock, replies = connect(smtp_server)
    with sock, replies:
        greeting = replies.readline()
        waited = time.monotonic() - started
        assert greeting.startswith(b"220 mx.example.test ")
        assert waited >= DELAY - 0.05
        sock.sendall(b"EHLO client.test\r\n")
        assert replies.readline() == b"250-mx.example.test\r\n"


def test_smtplib_waits_for_the_greeting_as_every_mta_does(delayed_greeting, smtp_server):
    client = smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10, source_address=("127.0.0.2", 0))
    try:
        assert client.ehlo()[0] == 250
        assert client.noop()[0] == 250
    finally:
        client.close()


def test_no_delay_for_loopback_by_default_nor_for_trusted_clients(settings, smtp_server, monkeypatch):
    settings.MAILSUITE_SMTP_GREETING_DELAY = 5
    for _ in range(2):
        sock, replies = connect(smtp_server)
        with sock, replies:
            sock.sendall(b"NOOP\r\n")  # early, but nobody is waiting to catch it
            assert replies.readline().startswith(b"220 mx.example.test ")
            assert replies.readline() == b"250 2.0.0 OK\r\n"
        monkeypatch.setattr(smtpd, "DELAY_LOOPBACK_GREETING", True)
        smtp_server.service.handler.trusted_networks = (ipaddress.ip_network("127.0.0.0/24"),)


def test_the_greeting_delay_is_off_by_default(settings):
    assert smtpd.InboundHandler().greeting_delay("192.0.2.1") == settings.MAILSUITE_SMTP_GREETING_DELAY == 0
    settings.MAILSUITE_SMTP_GREETING_DELAY = 3
    assert smtpd.InboundHandler().greeting_delay("192.0.2.1") == 3
    assert smtpd.SubmissionHandler().greeting_delay("192.0.2.1") == 0
