"""`manage.py runmail` on a fresh data dir: first-run help, every service up and counted in
/metrics, clean stop."""
import imaplib
import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import urllib.request

import pytest

from tests import datadir
from tests.e2e.helpers import ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.sqlite_only, pytest.mark.slow]


def test_runmail_starts_everything_and_stops_cleanly(tmp_path):
    http_port, smtp_port, submission_port, smtps_port = free_port(), free_port(), free_port(), free_port()
    access_ports = {
        name: free_port()
        for name in ("IMAP_PORT", "IMAPS_PORT", "POP3_PORT", "POP3S_PORT", "MANAGESIEVE_PORT")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSUITE_", "PROMETHEUS_")) and k != "DATABASE_URL"}
    env.update(
        MAILSUITE_DATA_DIR=str(tmp_path / "data"),
        MAILSUITE_HTTP_PORT=str(http_port),
        MAILSUITE_SMTP_PORT=str(smtp_port),
        MAILSUITE_SUBMISSION_PORT=str(submission_port),
        MAILSUITE_SMTPS_PORT=str(smtps_port),
        MAILSUITE_SMTP_WORKERS="2",
        **{f"MAILSUITE_{name}": str(port) for name, port in access_ports.items()},
        MAILSUITE_HOSTNAME="mail.example.test",
        PYTHONUNBUFFERED="1",
    )
    manage = [sys.executable, str(ROOT / "manage.py")]
    # As `manage.py migrate`, `domain add example.test` and `account add alice@example.test` leave it.
    datadir.prepared_data_dir(tmp_path / "data", *datadir.ALICE_AT_EXAMPLE)

    log = open(tmp_path / "runmail.log", "w+")
    process = subprocess.Popen([*manage, "runmail"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        # Six daemons start at once: on a busy machine that takes a while.
        for port in (smtp_port, submission_port, smtps_port, http_port, *access_ports.values()):
            wait_for_port(port, timeout=120, process=process, log=log.name)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP_SSL("127.0.0.1", smtps_port, context=context, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("auth")
        with smtplib.SMTP("127.0.0.1", submission_port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls") and not client.has_extn("auth")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            assert client.sendmail("m@elsewhere.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n") == {}
        imaplib.IMAP4("127.0.0.1", access_ports["IMAP_PORT"], timeout=10).logout()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/admin/login/", timeout=10) as response:
            assert response.status == 200
            assert b'name="username"' in response.read()
        # Every daemon is its own process: /metrics, served by the web process, adds up what the
        # SMTP and IMAP processes counted, and /readyz sees every port (and, on a fresh install
        # with no mail waiting, does not hold the first queue sweep against it).
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as response:
            metrics = response.read().decode().splitlines()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=30) as response:
            ready = json.load(response)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    output = log.read()
    assert "user: admin  password: " in output
    assert f"127.0.0.1:{smtp_port}" in output
    assert "all services stopped" in output
    # wait_for_port opened a connection to each port before the sessions above: those count too.
    assert 'mailsuite_connections_total{protocol="smtp"} 2.0' in metrics
    assert 'mailsuite_connections_total{protocol="submission"} 2.0' in metrics
    assert 'mailsuite_connections_total{protocol="imap"} 2.0' in metrics
    assert 'mailsuite_messages_received_total{source="smtp"} 1.0' in metrics
    assert ready["ready"] is True, ready
    assert sorted(ready["checks"]) == sorted(
        ["database", "storage", "port:smtp", "port:submission", "port:smtps", "port:imap", "port:imaps",
         "port:pop3", "port:pop3s", "port:managesieve", "queue-sweep"]
    )
    assert os.listdir(tmp_path / "data" / "metrics")  # the daemons' counter files
    # Every child is gone: the ports are free again.
    for port in (http_port, smtp_port, submission_port, smtps_port, *access_ports.values()):
        with pytest.raises(OSError):
            wait_for_port(port, timeout=0.5)

    # The admin password is printed once only: a second start does not print a new one. The
    # welcome (where it would be) comes before the supervisor starts the first daemon.
    second = subprocess.Popen([*manage, "runmail"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    output = b""
    try:
        while b"started web" not in output:
            chunk = os.read(second.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
    finally:
        second.send_signal(signal.SIGTERM)
        rest, _ = second.communicate(timeout=30)
    output += rest
    assert b"mailsuite mail.example.test" in output and b"outbound queue" in output  # the welcome
    assert output.index(b"outbound queue") < output.index(b"started web")
    assert b"password:" not in output
