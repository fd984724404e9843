"""kill -9 of the SMTP server while messages are in flight loses nothing answered 250
and leaves no half-written message visible."""
import hashlib
import signal
import smtplib
import threading
import time

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
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("mallory@elsewhere.test", ["alice@example.test"], message)
        except (OSError, smtplib.SMTPException):
            continue  # refused or cut off: the sender would retry; nothing was promised
        acked.append(msgid)


@pytest.mark.parametrize("kill_after", [0.8, 1.7, 2.9])
def test_kill_9_loses_no_acknowledged_message(alice, tmp_path, settings, kill_after):
    data_dir = tmp_path / "data"
    settings_blob_location(settings, data_dir)
    port = free_port()
    env = child_env(data_dir, MAILSUITE_HOSTNAME="mx.example.test")
    server = manage("runsmtp", "--port", str(port), "--workers", "1", env=env)
    try:
        wait_for_port(port, process=server)
        acked, stop = [], threading.Event()
        threads = [threading.Thread(target=sender, args=(port, f"t{i}", acked, stop)) for i in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(kill_after)
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

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
