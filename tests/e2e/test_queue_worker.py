"""The outbound queue on real Celery workers: the embedded broker, and Redis.

Workers run as `manage.py runqueue` processes on this test's database; mail goes to a
receiving SMTP server on 127.0.0.2 found through a DNS server on loopback.
"""
import signal
import socket
import time

import pytest

from accounts.resolve import Resolution
from mta import inbound
from mta.models import QueuedRecipient
from tests.dnsserver import DNSServer
from tests.isolation import redis_db
from tests.e2e.helpers import alive, child_env, children_of, free_port, manage, settings_blob_location
from tests.mta.sink import Behaviour, Sink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HOST = "127.0.0.2"
REDIS = ("127.0.0.1", 6379)


def redis_url():
    try:
        with socket.create_connection(REDIS, timeout=1):
            pass
    except OSError:
        pytest.skip("SKIPPED: Redis is not reachable on 127.0.0.1:6379; the Celery-on-Redis queue tests did not run")
    import redis

    client = redis.Redis(*REDIS, db=redis_db())
    client.flushdb()
    return f"redis://127.0.0.1:6379/{redis_db()}"


@pytest.fixture
def remote(settings):
    settings_blob_location(settings, settings.DATA_DIR)  # the workers read the blobs we write
    zones = {"faraway.test": {"MX": [(10, "mx.faraway.test")]}, "mx.faraway.test": {"A": [HOST]}}
    with DNSServer(zones) as dns:
        port = free_port(HOST)
        yield dns, port


def worker(settings, dns, port, *, broker=None, beat=True, lease=3, data_dir=None, **kwargs):
    env = child_env(
        data_dir or settings.DATA_DIR,
        MAILSUITE_DNS_SERVERS=f"127.0.0.1:{dns.port}",
        MAILSUITE_OUTBOUND_PORT=port,
        MAILSUITE_QUEUE_SWEEP_SECONDS=1,
        MAILSUITE_QUEUE_LEASE_SECONDS=lease,
        MAILSUITE_HOSTNAME="mx.example.test",
    )
    if broker:
        env["CELERY_BROKER_URL"] = broker
    args = ["runqueue", "--concurrency", "4"] + ([] if beat else ["--no-beat"])
    return manage(*args, env=env, **kwargs)


def queue_messages(count, subject="q"):
    for i in range(count):
        raw = f"From: alice@example.test\r\nSubject: {subject} {i}\r\n\r\nbody {i}\r\n".encode()
        resolution = Resolution(address="friend@faraway.test", external=["friend@faraway.test"])
        assert inbound.accept_message(raw, mail_from="alice@example.test", resolutions=[resolution],
                                      client_ip="127.0.0.1").startswith("250")


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def stop(*processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except Exception:
            process.kill()
            process.wait()


def subjects(sink):
    return sorted(r.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for r in sink.received)


def test_the_embedded_broker_worker_delivers_what_the_sweep_finds(settings, remote, alice):
    dns, port = remote
    queue_messages(3)  # the kick is off in tests: only the periodic sweep can find these
    with Sink(HOST, port) as sink:
        process = worker(settings, dns, port)
        try:
            assert wait_for(lambda: len(sink.received) == 3), "the worker did not deliver"
        finally:
            stop(process)
    assert subjects(sink) == ["q 0", "q 1", "q 2"]
    assert set(QueuedRecipient.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_redis_worker_on_a_new_machine_runs_the_sweep(settings, remote, alice, tmp_path):
    """A node as deployed: Redis for the broker and a data dir with nothing in it yet. Beat
    keeps its schedule in DATA_DIR/celery, which only the embedded broker used to create;
    without it beat died at start and with it the sweep, so mail whose task was lost (here:
    no task at all) and every deferred retry waited forever."""
    broker = redis_url()
    dns, port = remote
    data_dir = tmp_path / "new-node"
    settings_blob_location(settings, data_dir)  # the worker reads the blobs we write
    queue_messages(2)  # the kick is off in tests: only the periodic sweep can find these
    log_path = tmp_path / "queue.log"
    with Sink(HOST, port) as sink, open(log_path, "wb") as log:
        process = worker(settings, dns, port, broker=broker, data_dir=data_dir, stdout=log, stderr=log)
        try:
            delivered = wait_for(lambda: len(sink.received) == 2)
        finally:
            stop(process)
    assert delivered, log_path.read_text(errors="replace")[-3000:]
    assert subjects(sink) == ["q 0", "q 1"]
    assert "Process Beat" not in log_path.read_text(errors="replace")


def test_two_workers_on_redis_deliver_each_message_once(settings, remote, alice):
    broker = redis_url()
    dns, port = remote
    queue_messages(40)
    with Sink(HOST, port) as sink:
        processes = [worker(settings, dns, port, broker=broker), worker(settings, dns, port, broker=broker, beat=False)]
        try:
            assert wait_for(lambda: QueuedRecipient.objects.filter(state="delivered").count() == 40)
        finally:
            stop(*processes)
    assert subjects(sink) == sorted(f"q {i}" for i in range(40))


def test_a_worker_killed_mid_delivery_is_finished_by_the_next_exactly_once(settings, remote, alice):
    broker = redis_url()
    dns, port = remote
    queue_messages(1, subject="once")
    behaviour = Behaviour(rcpt_delay=4)
    with Sink(HOST, port, behaviour=behaviour) as sink:
        first = worker(settings, dns, port, broker=broker)
        try:
            assert wait_for(lambda: sink.connections >= 1, timeout=30), "the first worker never connected"
            time.sleep(1)  # it is now waiting for the RCPT reply
            orphans = children_of(first.pid)
            assert orphans, "runqueue should run its worker and beat as children"
            first.send_signal(signal.SIGKILL)
            first.wait()
        finally:
            stop(first)
        assert sink.received == []
        assert wait_for(lambda: not any(alive(pid) for pid in orphans), timeout=30), \
            "a kill -9 of runqueue left its children running"
        behaviour.rcpt_delay = 0
        second = worker(settings, dns, port, broker=broker)
        try:
            assert wait_for(lambda: QueuedRecipient.objects.filter(state="delivered").count() == 1, timeout=60)
        finally:
            stop(second)
    assert subjects(sink) == ["once 0"]
