"""The seed's relay designs with two real mailsuite nodes on loopback: this test's node is
the first-level (edge) server; a second node on 127.0.0.3, with its own data dir and
database, holds the mailboxes of inner.test."""
import datetime
import os
import smtplib
import sqlite3
import subprocess
import sys

import pytest

from mta import actions, delivery, queue
from mta.models import QueuedRecipient
from tests import datadir
from tests.e2e.helpers import ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

INNER = "127.0.0.3"
MESSAGE = b"From: mallory@elsewhere.test\r\nTo: user@inner.test\r\nSubject: through the edge\r\n\r\nhi\r\n"


class Node:
    """A second mailsuite node: its own data dir and SQLite database, runsmtp on INNER."""

    def __init__(self, data_dir, port):
        self.data_dir, self.port = data_dir, port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSUITE_") and k != "DATABASE_URL"}
        self.env.update(MAILSUITE_DATA_DIR=str(data_dir), MAILSUITE_HOSTNAME="inner.node.test")
        self.process = None

    def set_up(self):
        datadir.prepared_data_dir(self.data_dir, ("domain", "add", "inner.test"), ("account", "add", "user@inner.test"))

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runsmtp", "--host", INNER, "--port", str(self.port),
             "--submission-port", "0", "--smtps-port", "0", "--workers", "1"], env=self.env,
        )
        wait_for_port_on(INNER, self.port, self.process)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def mailbox(self):
        with sqlite3.connect(self.data_dir / "mailsuite.sqlite3") as db:
            return [row[0] for row in db.execute(
                "SELECT m.subject FROM mailstore_message m JOIN mailstore_folder f ON f.id = m.folder_id "
                "JOIN accounts_account a ON a.id = f.account_id WHERE a.localpart = 'user'"
            )]


def wait_for_port_on(host, port, process, timeout=90):
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the node exited")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on {host}:{port}")


@pytest.fixture
def node(tmp_path):
    node = Node(tmp_path / "inner-node", free_port(INNER))
    node.set_up()
    yield node
    node.stop()


def send_to_edge(smtp_server, recipient):
    client = smtplib.SMTP("127.0.0.1", smtp_server.port, local_hostname="sender.test", timeout=10)
    try:
        client.ehlo()
        client.mail("mallory@elsewhere.test")
        reply = client.rcpt(recipient)
        if reply[0] == 250:
            client.data(MESSAGE)
        else:
            client.rset()
        return reply
    finally:
        client.quit()


def test_the_edge_relays_to_the_second_level_node(smtp_server, node):
    actions.add_relay_domain("inner.test", INNER, node.port)
    node.start()
    assert send_to_edge(smtp_server, "user@inner.test") == (250, b"2.1.5 Ok")
    assert delivery.deliver_domain("inner.test") == 1
    assert node.mailbox() == ["through the edge"]


def test_the_edge_checks_recipients_with_the_next_hop(smtp_server, node):
    actions.add_relay_domain("inner.test", INNER, node.port, verify_recipients="callout")
    node.start()
    assert send_to_edge(smtp_server, "user@inner.test")[0] == 250
    code, text = send_to_edge(smtp_server, "nobody@inner.test")
    assert code == 550 and b"rejected by the next hop: 550 5.1.1" in text
    node.stop()
    code, text = send_to_edge(smtp_server, "other@inner.test")  # cannot ask: try later
    assert code == 450 and text.startswith(b"4.1.1 ")


def test_a_backup_mx_holds_mail_until_the_primary_returns(smtp_server, node, monkeypatch):
    clock = [queue.now()]
    monkeypatch.setattr(queue, "now", lambda: clock[0])
    actions.add_relay_domain("inner.test", INNER, node.port)
    assert send_to_edge(smtp_server, "user@inner.test")[0] == 250
    delivery.deliver_domain("inner.test")
    assert QueuedRecipient.objects.get().state == "deferred"  # the primary is down
    node.start()
    clock[0] += datetime.timedelta(minutes=10)
    assert delivery.deliver_domain("inner.test") == 1
    assert QueuedRecipient.objects.get().state == "delivered"
    assert node.mailbox() == ["through the edge"]
