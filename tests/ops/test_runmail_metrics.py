"""Under `manage.py runmail` every daemon is its own process: /metrics, served by the web
process, shows what the SMTP and IMAP processes counted, and /readyz sees every port (and,
on a fresh install with no mail waiting, does not hold the first queue sweep against it)."""
import imaplib
import json
import os
import signal
import smtplib
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.e2e.helpers import ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.sqlite_only, pytest.mark.slow]


def test_metrics_add_up_every_daemon_of_runmail(tmp_path):
    ports = {name: free_port() for name in (
        "HTTP_PORT", "SMTP_PORT", "SUBMISSION_PORT", "SMTPS_PORT", "IMAP_PORT", "IMAPS_PORT",
        "POP3_PORT", "POP3S_PORT", "MANAGESIEVE_PORT",
    )}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSUITE_", "PROMETHEUS_")) and k != "DATABASE_URL"}
    env.update(
        MAILSUITE_DATA_DIR=str(tmp_path / "data"),
        MAILSUITE_SMTP_WORKERS="2",
        MAILSUITE_HOSTNAME="mail.example.test",
        **{f"MAILSUITE_{name}": str(port) for name, port in ports.items()},
    )
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    subprocess.run([*manage, "domain", "add", "example.test"], env=env, check=True, capture_output=True)
    subprocess.run([*manage, "account", "add", "alice@example.test"], env=env, check=True, capture_output=True)
    web = f"http://127.0.0.1:{ports['HTTP_PORT']}"

    process = subprocess.Popen([*manage, "runmail"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        for port in ports.values():
            wait_for_port(port, timeout=120, process=process)
        with smtplib.SMTP("127.0.0.1", ports["SMTP_PORT"], timeout=10) as client:
            client.sendmail("m@elsewhere.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
        imap = imaplib.IMAP4("127.0.0.1", ports["IMAP_PORT"], timeout=10)
        imap.logout()

        with urllib.request.urlopen(f"{web}/metrics", timeout=30) as response:
            text = response.read().decode()
        with urllib.request.urlopen(f"{web}/readyz", timeout=30) as response:
            ready = json.load(response)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    lines = text.splitlines()
    # wait_for_port opened one connection to each port before the mail: those count too.
    assert 'mailsuite_connections_total{protocol="smtp"} 2.0' in lines
    assert 'mailsuite_connections_total{protocol="imap"} 2.0' in lines
    assert 'mailsuite_messages_received_total{source="smtp"} 1.0' in lines
    assert ready["ready"] is True, ready
    assert sorted(ready["checks"]) == sorted(
        ["database", "storage", "port:smtp", "port:submission", "port:smtps", "port:imap", "port:imaps",
         "port:pop3", "port:pop3s", "port:managesieve", "queue-sweep"]
    )
    assert os.listdir(tmp_path / "data" / "metrics")  # the daemons' counter files
