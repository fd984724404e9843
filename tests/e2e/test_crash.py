"""kill -9 of the SMTP server while messages are in flight loses nothing answered 250
and leaves no half-written message visible."""
import hashlib
import os
import signal
import smtplib
import threading
import time
from pathlib import Path

import pytest

from mailstore.models import Message
from mailstore.storage import blob_storage
from tests.e2e.helpers import child_env, free_port, manage, settings_blob_location, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def sender(port, prefix, acked, stop):
    body = b"x" * 76 + b"\r\n"
    n = 0
    while not stop.is_set():
        n += 1
        msgid = f"<{prefix}.{n}@crash.test>"
        message = (
            f"From: mallory@elsewhere.test\r\nTo: alice@example.test\r\nMessage-ID: {msgid}\r\n"
            f"Subject: crash {n}\r\n\r\n"
        ).encode() + body * 600
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("mallory@elsewhere.test", ["alice@example.test"], message)
        except (OSError, smtplib.SMTPException):
            continue  # refused or cut off: the sender would retry; nothing was promised
        acked.append(msgid)


def child_pids(pid):
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append((int(entry.name), cmdline))
    return children


@pytest.mark.parametrize(
    "workers, victim, kill_after",
    [(1, "server", 0.1), (1, "server", 0.7), (1, "server", 1.6), (2, "commit-service", 0.5)],
)
def test_kill_9_loses_no_acknowledged_message(alice, tmp_path, settings, workers, victim, kill_after):
    data_dir = tmp_path / "data"
    settings_blob_location(settings, data_dir)
    port = free_port()
    env = child_env(data_dir, MAILSUITE_HOSTNAME="mx.example.test")
    # Only the port under test: the default submission ports may be another test's.
    server = manage("runsmtp", "--port", str(port), "--submission-port", "0", "--smtps-port", "0",
                    "--workers", str(workers), env=env)
    try:
        wait_for_port(port, process=server)
        acked, stop = [], threading.Event()
        threads = [threading.Thread(target=sender, args=(port, f"t{i}", acked, stop)) for i in range(6)]
        for thread in threads:
            thread.start()
        # On a busy machine the workers may take many seconds to serve a first session: the
        # clock starts once mail flows, so the kill finds mail in flight to lose.
        deadline = time.monotonic() + 120
        while len(acked) <= 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(kill_after)
        if victim == "server":
            server.send_signal(signal.SIGKILL)
            server.wait()
        else:
            [pid] = [pid for pid, cmdline in child_pids(server.pid) if "--commit-service" in cmdline]
            os.kill(pid, signal.SIGKILL)
            time.sleep(2)  # the supervisor restarts it; mail keeps flowing
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM if victim != "server" else signal.SIGKILL)
            server.wait(30)

    assert len(acked) > 5, "the server accepted too little before the kill to prove anything"
    stored = {m.message_id: m for m in Message.objects.filter(folder__account=alice).select_related("blob")}
    missing = [msgid for msgid in acked if msgid not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    storage = blob_storage()
    for message in stored.values():
        with storage.open(message.blob.name, "rb") as f:
            content = f.read()
        assert len(content) == message.blob.size
        assert hashlib.sha256(content).hexdigest() == message.blob.sha256
        assert message.size == len(message.prefix) + len(content)
    alice.refresh_from_db()
    assert alice.quota_used == sum(m.size for m in stored.values())
