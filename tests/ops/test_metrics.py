"""/metrics, /healthz and /readyz, and the counters behind them, driven by real traffic:
SMTP over a loopback socket, logins through accounts.auth, the queue in the database."""
import os
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from ops import metrics
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = b"From: Mallory <mallory@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def value(name, **labels):
    return metrics.sample(name, **labels)


def scrape(client=None, **headers):
    response = (client or Client()).get("/metrics", **headers)
    return response, response.content.decode()


def test_it_counts_smtp_connections_and_received_messages(smtp_server, alice):
    connections, received = value("mailsuite_connections_total", protocol="smtp"), value(
        "mailsuite_messages_received_total", source="smtp")

    with smtplib.SMTP("127.0.0.1", smtp_server.port) as client:
        client.sendmail("mallory@elsewhere.test", ["alice@example.test"], MESSAGE)

    assert value("mailsuite_connections_total", protocol="smtp") == connections + 1
    assert value("mailsuite_messages_received_total", source="smtp") == received + 1
    _, text = scrape()
    assert 'mailsuite_messages_received_total{source="smtp"}' in text


def test_it_counts_failed_logins_per_protocol_and_reason(alice):
    from accounts.auth import authenticate

    before = value("mailsuite_auth_failures_total", protocol="imap", reason="password")

    assert authenticate("alice@example.test", "wrong", service="imap", remote_ip="192.0.2.7") is None
    assert authenticate("alice@example.test", PASSWORD, service="imap", remote_ip="192.0.2.7") is not None

    assert value("mailsuite_auth_failures_total", protocol="imap", reason="password") == before + 1


@pytest.mark.django_db(transaction=True)
def test_it_counts_delivery_outcomes_and_reads_the_queue_from_the_database(alice):
    from accounts.resolve import Resolution
    from mta import delivery, inbound

    bounced = value("mailsuite_deliveries_total", outcome="bounced", destination="remote", reason="5.1.2")
    resolution = Resolution(address="friend@nowhere.test", external=["friend@nowhere.test"])
    reply = inbound.accept_message(MESSAGE, mail_from="alice@example.test", resolutions=[resolution], client_ip="127.0.0.1")
    assert reply.startswith("250 ")

    _, text = scrape()
    assert 'mailsuite_queue_recipients{state="queued"} 1.0' in text
    assert 'mailsuite_queue_recipients{state="deferred"} 0.0' in text
    oldest = next(line for line in text.splitlines() if line.startswith("mailsuite_queue_oldest_seconds "))
    assert 0 <= float(oldest.split()[1]) < 60

    delivery.deliver_domain("nowhere.test")  # the loopback DNS says it does not exist: a bounce

    assert value("mailsuite_deliveries_total", outcome="bounced", destination="remote", reason="5.1.2") == bounced + 1
    _, text = scrape()
    assert 'mailsuite_queue_recipients{state="queued"} 0.0' in text
    assert "mailsuite_queue_oldest_seconds 0.0" in text


def test_it_times_web_requests_by_url_pattern_name(db):
    before = value("mailsuite_http_request_duration_seconds_count", method="GET", view="ops:healthz", status="2xx")

    assert Client().get("/healthz").content == b"ok\n"

    assert value("mailsuite_http_request_duration_seconds_count", method="GET", view="ops:healthz", status="2xx") == before + 1


def test_metrics_answer_loopback_clients_only_unless_a_token_is_set(db, settings):
    assert scrape()[0].status_code == 200
    assert scrape(REMOTE_ADDR="192.0.2.1")[0].status_code == 403
    # A proxy on this machine makes every client loopback: forwarded requests are not trusted.
    assert scrape(HTTP_X_FORWARDED_FOR="192.0.2.1")[0].status_code == 403

    settings.MAILSUITE_METRICS_TOKEN = "s3cret-token"
    assert scrape()[0].status_code == 401
    assert scrape(HTTP_AUTHORIZATION="Bearer wrong")[0].status_code == 401
    response, text = scrape(REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE mailsuite_queue_recipients gauge" in text


def test_counters_of_several_processes_add_up_in_multiprocess_mode(tmp_path):
    directory = metrics.prepare_multiprocess_dir(tmp_path)
    (Path(directory) / "stale.db").write_bytes(b"")
    directory = metrics.prepare_multiprocess_dir(tmp_path)  # a new run starts empty
    assert os.listdir(directory) == []
    env = {**os.environ, metrics.MULTIPROC_ENV: directory}
    code = "from ops import metrics; metrics.connection('pop3'); metrics.connection('pop3')"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)

    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    samples = [s for family in registry.collect() for s in family.samples if s.name == "mailsuite_connections_total"]
    assert [(s.labels, s.value) for s in samples] == [({"protocol": "pop3"}, 4.0)]


def test_healthz_answers_while_the_process_is_up(db):
    response = Client().get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")


def test_readyz_checks_the_database_the_storage_and_the_ports(db, settings):
    listening = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    settings.MAILSUITE_BIND = "127.0.0.1"
    settings.MAILSUITE_IMAPS_PORT = listening.getsockname()[1]
    settings.MAILSUITE_POP3S_PORT = closed_port
    with listening:
        ready = Client().get("/readyz", {"service": "imaps"})
        not_ready = Client().get("/readyz", {"service": ["imaps", "pop3s"]})

    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {
        "database": {"ok": True, "detail": ""}, "storage": {"ok": True, "detail": ""},
        "port:imaps": {"ok": True, "detail": f"127.0.0.1:{settings.MAILSUITE_IMAPS_PORT}"},
    }}
    assert not_ready.status_code == 503
    checks = not_ready.json()["checks"]
    assert checks["port:pop3s"]["ok"] is False
    assert checks["port:pop3s"]["detail"] == f"127.0.0.1:{closed_port}: Connection refused"
    assert Client().get("/readyz", {"service": "gopher"}).status_code == 400


def test_readyz_says_when_the_blob_storage_is_not_writable(db, settings, tmp_path):
    (tmp_path / "a-file").write_bytes(b"")  # no directory can be made under a file, even by root
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {**settings.STORAGES["blobs"], "OPTIONS": {"location": tmp_path / "a-file" / "blobs"}},
    }

    response = Client().get("/readyz", {"service": "imap"})

    assert response.status_code == 503
    storage = response.json()["checks"]["storage"]
    assert storage["ok"] is False and storage["detail"].startswith("NotADirectoryError")
