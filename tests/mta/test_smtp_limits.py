"""Per-connection and per-client limits on the SMTP ports, and what never reaches the logs."""
import base64
import datetime
import logging
import smtplib
import socket
import ssl
import time

import pytest

from accounts import throttle
from tests.conftest import PASSWORD, smtp_servers

pytestmark = pytest.mark.django_db(transaction=True)


def greet(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock, sock.makefile("rb").readline()


def test_connections_per_client_ip_are_capped(settings):
    settings.MAILSUITE_SMTP_MAX_CONNECTIONS_PER_IP = 2
    with smtp_servers("smtp") as server:
        first, first_greeting = greet(server.port)
        second, second_greeting = greet(server.port)
        third, refusal = greet(server.port)
        assert first_greeting.startswith(b"220 ") and second_greeting.startswith(b"220 ")
        assert refusal == b"421 4.7.0 Too many connections from your address\r\n"
        assert third.recv(10) == b""
        first.close()
        time.sleep(0.2)
        fourth, greeting = greet(server.port)
        assert greeting.startswith(b"220 ")
        for sock in (second, third, fourth):
            sock.close()


def test_an_idle_session_is_dropped(settings):
    settings.MAILSUITE_SMTP_TIMEOUT = 1
    with smtp_servers("smtp") as server:
        sock, _ = greet(server.port)
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 4
        sock.close()


def test_probing_commands_are_limited_per_connection(smtp_server):
    sock, _ = greet(smtp_server.port)
    reader = sock.makefile("rb")
    sock.sendall(b"EHLO prober.test\r\n" + b"VRFY postmaster\r\n" * 11)
    while reader.readline()[3:4] == b"-":
        pass
    replies = [reader.readline() for _ in range(11)]
    assert all(reply.startswith(b"252 ") for reply in replies[:10])
    assert replies[10] == b"421 4.7.0 VRFY sent too many times\r\n"
    sock.close()


def submission_login(server, password):
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], local_hostname="laptop.test", timeout=10)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client.starttls(context=context)
    client.ehlo()
    client.user, client.password = "alice@example.test", password
    try:
        client.auth("PLAIN", client.auth_plain)  # login() would also try LOGIN after a failure
        return None
    except smtplib.SMTPAuthenticationError as error:
        return error.smtp_code
    finally:
        client.close()


def test_a_login_block_clears_after_its_time(submission_servers, alice, monkeypatch):
    clock = [throttle.now()]
    monkeypatch.setattr(throttle, "now", lambda: clock[0])
    assert [submission_login(submission_servers, "wrong") for _ in range(5)] == [535] * 5
    assert submission_login(submission_servers, PASSWORD) == 454
    clock[0] += datetime.timedelta(minutes=2)
    assert submission_login(submission_servers, PASSWORD) is None


def test_passwords_and_auth_payloads_never_reach_the_logs(submission_servers, alice, caplog):
    caplog.set_level(logging.DEBUG)  # an operator's MAILSUITE_LOG_LEVEL=DEBUG
    secret = "s3cret-Passw0rd-for-logs"
    payload = base64.b64encode(f"\0alice@example.test\0{secret}".encode()).decode()
    client = smtplib.SMTP("127.0.0.1", submission_servers.ports["submission"], local_hostname="l.test", timeout=10)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client.starttls(context=context)
    client.ehlo()
    assert client.docmd("AUTH", f"PLAIN {payload}")[0] == 535
    assert client.docmd("AUTH", "LOGIN")[0] == 334
    client.docmd(base64.b64encode(b"alice@example.test").decode())
    assert client.docmd(base64.b64encode(secret.encode()).decode())[0] == 535
    client.quit()
    assert "login failed service=smtp" in caplog.text
    for leaked in (secret, payload, base64.b64encode(secret.encode()).decode()):
        assert leaked not in caplog.text
