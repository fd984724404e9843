"""Two complete mail nodes, as docs/deployment.md lays them out: each runs runsmtp, runimap
and runqueue (Celery worker and beat) on its own loopback address (127.0.0.2 and 127.0.0.3)
with a data dir of its own, and both share one PostgreSQL database, one Redis (change events
and the Celery broker) and one S3-compatible object store (moto's server) for the blobs.
Outbound mail goes to a receiving server on 127.0.0.4 found through a DNS server on loopback.

Shown here: mail accepted by node A is read over IMAP on node B, byte for byte; an IMAP IDLE
on node B hears of a delivery node A made within a couple of seconds (the IDLE safety poll
is 30 s, so only the change bus can be that quick); outbound work is done by the workers of
both nodes; and under load, stopping node A (SIGTERM), starting it again and killing node B
(kill -9) loses nothing that either node answered 250 for.
"""
import random
import signal
import smtplib
import socket
import threading
import time
from email.utils import make_msgid

import pytest
from django.conf import settings as django_settings
from django.db.models import Q

from accounts import actions as accounts
from mailstore.models import Message
from mta import queue as mta_queue
from mta.models import QueuedRecipient
from tests.conftest import PASSWORD
from tests.dnsserver import DNSServer
from tests.e2e.helpers import alive, child_env, children_of, free_port, manage
from tests.e2e.test_queue_worker import redis_url
from tests.e2e.test_relay_nodes import wait_for_port_on
from tests.mta.sink import Sink
from tests.objectstore import CREDENTIALS, ObjectStore

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NODE_A, NODE_B, SINK_HOST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
FAR_DOMAINS = [f"far{i}.test" for i in range(6)]  # one delivery task per domain: several to share out
PRODUCTION_HASHERS = ["accounts.hashers.MailArgon2PasswordHasher"]


def require_postgresql():
    if django_settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1] != "postgresql":
        pytest.skip("SKIPPED: two nodes share one PostgreSQL database and this run is on SQLite "
                    "(set DATABASE_URL=postgres://…; tests/run.py's PostgreSQL pass runs it)")


class NodeSink(Sink):
    """A Sink that also records the EHLO name of the client that delivered each message
    (aiosmtpd resolves its handler's hooks once, so the DATA hook is wrapped where it keeps them)."""

    def _protocol(self):
        protocol = super()._protocol()
        store = protocol._handle_hooks["DATA"]

        async def handle_data(server, session, envelope):
            reply = await store(server, session, envelope)
            if reply.startswith("2"):
                self.received[-1].ehlo = session.host_name  # which node delivered it
            return reply

        protocol._handle_hooks["DATA"] = handle_data
        return protocol


class Node:
    """runsmtp + runimap + runqueue on one loopback address, its own data dir."""

    def __init__(self, name, host, data_dir, shared):
        self.name, self.host, self.data_dir = name, host, data_dir
        self.smtp_port = free_port(host)
        self.imap_port = free_port(host)
        self.env = child_env(data_dir, MAILSUITE_BIND=host, MAILSUITE_HOSTNAME=f"{name}.mail.test", **shared)
        self.processes = {}
        self.starts = 0

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        commands = {
            "smtp": ["runsmtp", "--port", str(self.smtp_port), "--submission-port", "0", "--smtps-port", "0",
                     "--workers", "1"],
            "imap": ["runimap", "--port", str(self.imap_port)],
            "queue": ["runqueue", "--concurrency", "2"],
        }
        for part, args in commands.items():
            log = open(self.data_dir / f"{part}.log", "ab")
            self.processes[part] = manage(*args, env=self.env, stdout=log, stderr=log)
            log.close()

    def wait_ready(self):
        wait_for_port_on(self.host, self.smtp_port, self.processes["smtp"], timeout=90)
        wait_for_port_on(self.host, self.imap_port, self.processes["imap"], timeout=90)

    def logs(self):
        return "\n".join(f"--- {self.name} {part} ---\n" + (self.data_dir / f"{part}.log").read_text(errors="replace")[-3000:]
                         for part in self.processes)

    def queue_is_working(self):
        return (self.data_dir / "queue.log").read_bytes().count(b" ready.") >= self.starts

    def kill(self):
        """kill -9 of every process of the node; returns the pids of their children, which must die with them."""
        orphans = [pid for p in self.processes.values() for pid in children_of(p.pid)]
        for process in self.processes.values():
            process.send_signal(signal.SIGKILL)
        for process in self.processes.values():
            process.wait()
        return orphans

    def signal(self, signum):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    def stop(self, timeout=30):
        self.signal(signal.SIGTERM)
        codes = {}
        for part, process in self.processes.items():
            try:
                codes[part] = process.wait(timeout)
            except Exception:
                process.kill()
                codes[part] = process.wait()
        return codes


@pytest.fixture
def cluster(settings, tmp_path):
    """Two nodes (not yet started), the object store, the sink, and the accounts they serve."""
    require_postgresql()
    broker = redis_url()  # skips, with its reason, when Redis is not reachable
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS  # the nodes verify what we store here
    zones = {domain: {"MX": [(10, "mx.far.test")]} for domain in FAR_DOMAINS}
    zones["mx.far.test"] = {"A": [SINK_HOST]}
    with ObjectStore() as store, DNSServer(zones) as dns, NodeSink(SINK_HOST, free_port(SINK_HOST)) as sink:
        shared = {
            **CREDENTIALS,
            "MAILSUITE_BLOB_STORAGE": store.url,
            "MAILSUITE_EVENT_BUS": broker,
            "CELERY_BROKER_URL": broker,
            "MAILSUITE_DNS_SERVERS": f"127.0.0.1:{dns.port}",
            "MAILSUITE_OUTBOUND_PORT": sink.port,
            "MAILSUITE_TRUSTED_NETWORKS": "127.0.0.1/32",  # the test's client relays without AUTH
            "MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK": "1",
            "MAILSUITE_QUEUE_SWEEP_SECONDS": "1",
            "MAILSUITE_QUEUE_LEASE_SECONDS": "10",  # a killed node's leases free up soon (yet outlast a slow delivery)
            "MAILSUITE_SMTP_WORKERS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        accounts.create_domain("example.test")
        alice = accounts.create_account("alice@example.test", password=PASSWORD)
        nodes = [Node("node-a", NODE_A, tmp_path / "node-a", shared), Node("node-b", NODE_B, tmp_path / "node-b", shared)]
        try:
            yield nodes, store, sink, alice
        finally:
            for node in nodes:
                node.signal(signal.SIGTERM)
            for node in nodes:
                node.stop()


def start(nodes):
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()


def send(node, recipient, subject, *, timeout=10):
    """One message over its own connection; True when the node answered 250."""
    raw = (f"From: alice@example.test\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
           f"Message-ID: {make_msgid(domain='example.test')}\r\n\r\n{subject} body\r\n").encode()
    with smtplib.SMTP(node.host, node.smtp_port, local_hostname="client.test", timeout=timeout) as client:
        return client.sendmail("alice@example.test", [recipient], raw) == {}


def inbox_subjects(account):
    return sorted(Message.objects.filter(folder__account=account, folder__name="INBOX").values_list("subject", flat=True))


def sink_subjects(sink):
    return sorted(r.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for r in sink.received)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


class IMAPLine:
    """A raw IMAP client for IDLE (imaplib has none)."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.readline()  # greeting

    def readline(self):
        line = self.file.readline()
        if not line:
            raise EOFError("the server closed the connection")
        return line.rstrip(b"\r\n").decode()

    def command(self, tag, text):
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        lines = [self.readline()]
        while not lines[-1].startswith(f"{tag} "):
            lines.append(self.readline())
        assert lines[-1].startswith(f"{tag} OK"), lines
        return lines

    def close(self):
        self.sock.close()


def fetch_over_imap(node, uid):
    import imaplib

    imap = imaplib.IMAP4(node.host, node.imap_port, timeout=10)
    try:
        imap.login("alice@example.test", PASSWORD)
        imap.select("INBOX", readonly=True)
        status, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
        assert status == "OK", data
        return data[0][1]
    finally:
        imap.logout()


def sender_under_load(nodes, accepted, stop, prefix):
    """Keeps sending, like clients behind a load balancer: alternately local and outbound
    mail, to whichever node answers; `accepted` collects (subject, recipient) of each 250."""
    number = 0
    while not stop.is_set():
        recipient = "alice@example.test" if number % 2 == 0 else f"bob@{FAR_DOMAINS[number % len(FAR_DOMAINS)]}"
        subject = f"{prefix} {number}"
        number += 1
        for node in random.sample(nodes, len(nodes)):
            try:
                if send(node, recipient, subject, timeout=5):
                    accepted.append((subject, recipient))
                    break
            except (OSError, smtplib.SMTPException):
                continue  # that node is going away: the balancer tries the other


def test_two_nodes_share_mail_events_and_queue_and_survive_a_stop(cluster):
    nodes, store, sink, alice = cluster
    node_a, node_b = nodes
    start(nodes)

    # Mail accepted by node A is read over IMAP on node B, byte for byte from the bucket.
    assert send(node_a, "alice@example.test", "through a")
    message = Message.objects.select_related("blob").get(folder__account=alice)
    assert message.blob.name in store.keys()
    assert fetch_over_imap(node_b, message.uid) == bytes(message.prefix) + store.objects()[message.blob.name]
    assert not list((node_a.data_dir / "blobs").rglob("*")) and not list((node_b.data_dir / "blobs").rglob("*"))

    # An IDLE on node B hears of node A's delivery through the change bus.
    idle = IMAPLine(node_b.host, node_b.imap_port)
    try:
        idle.command("a1", f"LOGIN alice@example.test \"{PASSWORD}\"")
        idle.command("a2", "SELECT INBOX")
        idle.sock.sendall(b"a3 IDLE\r\n")
        assert idle.readline().startswith("+ ")
        sent_at = time.monotonic()
        assert send(node_a, "alice@example.test", "idle news")
        line = idle.readline()
        heard_after = time.monotonic() - sent_at
        assert line == "* 2 EXISTS", line
        assert heard_after < 5, f"IDLE on node B heard of node A's delivery only after {heard_after:.1f}s"
        idle.sock.sendall(b"DONE\r\n")
        while not idle.readline().startswith("a3 "):
            pass
    finally:
        idle.close()

    # Queue work spreads over both nodes' workers.
    assert wait_for(lambda: node_a.queue_is_working() and node_b.queue_is_working(), 60), node_a.logs() + node_b.logs()
    outbound = [(f"out {i}", f"bob@{FAR_DOMAINS[i % len(FAR_DOMAINS)]}") for i in range(12)]
    for i, (subject, recipient) in enumerate(outbound):
        assert send(nodes[i % 2], recipient, subject)
    assert wait_for(lambda: len(sink.received) >= len(outbound), 60), node_a.logs() + node_b.logs()
    assert sink_subjects(sink) == sorted(subject for subject, _ in outbound)
    delivered_by = {r.ehlo for r in sink.received}
    assert delivered_by == {"node-a.mail.test", "node-b.mail.test"}, delivered_by

    # Under load: node A stops (SIGTERM) and B takes all the mail; A comes back; then B is
    # killed (kill -9, its queue leases still held) and A takes over. Nothing either node
    # answered 250 for is lost.
    sink.received.clear()
    accepted, stop = [], threading.Event()
    senders = [threading.Thread(target=sender_under_load, args=(nodes, accepted, stop, f"load{t}")) for t in range(2)]
    for thread in senders:
        thread.start()
    try:
        assert wait_for(lambda: len(accepted) >= 6, 60)
        codes = node_a.stop()
        assert codes == {"smtp": 0, "imap": 0, "queue": 0}, node_a.logs()
        more_than = len(accepted) + 4
        node_a.start()
        assert wait_for(lambda: len(accepted) >= more_than, 60), "node B took no mail after A stopped"
        node_a.wait_ready()
        assert wait_for(node_a.queue_is_working, 60), node_a.logs()
        orphans = node_b.kill()
        more_than = len(accepted) + 4
        assert wait_for(lambda: len(accepted) >= more_than, 60), "node A took no mail after B died"
    finally:
        stop.set()
        for thread in senders:
            thread.join(30)
    assert wait_for(lambda: not any(alive(pid) for pid in orphans), 30), "a kill -9 left node B's children running"
    local = sorted(subject for subject, recipient in accepted if recipient == "alice@example.test")
    far = sorted(subject for subject, recipient in accepted if recipient != "alice@example.test")
    assert set(local) <= set(inbox_subjects(alice))
    # Everything accepted reaches its destination, what B's dead leases held too (at least
    # once): B's leases run out (MAILSUITE_QUEUE_LEASE_SECONDS) and the surviving node's sweep
    # hands those recipients out again; no task announces them. An attempt cut short by the
    # stop, or one that timed out because this process (the sink, the DNS server and the
    # object store all run here) is starved of CPU, defers its recipient by minutes of
    # backoff, as designed: the wait makes such recipients due again, as an operator's
    # `queue flush` would, but leaves it to the nodes' sweep to find them.
    far_delivered = lambda: set(far) <= set(sink_subjects(sink))  # noqa: E731
    assert settle_queue(lambda: far_delivered() and not undelivered().exists(), 180), diagnosis(far, sink, nodes)
    for node in nodes:
        assert b"Process Beat" not in (node.data_dir / "queue.log").read_bytes(), node.logs()


def undelivered():
    return QueuedRecipient.objects.exclude(state="delivered")


def settle_queue(done, timeout):
    """Wait until done() or `timeout` seconds; deferred recipients no worker holds are made
    due whenever there are some (with no task sent: only the periodic sweep finds them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        at = mta_queue.now()
        QueuedRecipient.objects.filter(state="deferred", next_attempt_at__gt=at).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=at)
        ).update(next_attempt_at=at)
        time.sleep(1)
    return done()


def diagnosis(far, sink, nodes):
    """What the queue says of everything not delivered, for the failure message."""
    from django.utils import timezone

    from mta.models import DeliveryAttempt

    lines = [f"missing at the sink: {sorted(set(far) - set(sink_subjects(sink)))}", f"now: {timezone.now()}"]
    for row in undelivered().select_related("message"):
        lines.append(
            f"{row.message.queue_id} <{row.address}> {row.state} attempts={row.attempts} next={row.next_attempt_at} "
            f"lease={row.lease_owner or '-'} until {row.lease_until} last_error={row.last_error!r}"
        )
        lines += [f"    {a.started} {a.outcome} {a.host} {a.reply!r}" for a in DeliveryAttempt.objects.filter(recipient=row)]
    return "\n".join(lines) + "\n" + "\n".join(node.logs() for node in nodes)
