"""Readiness: may a load balancer send this node traffic? Each check says what is wrong.

- the database answers a query;
- the blob storage takes a write (and a delete) through the storage API, so object
  storage counts as well as a local disk;
- each mail service's port accepts a TCP connection on this machine;
- the outbound queue's periodic sweep has run lately (mta.queue.sweep_status): the
  heartbeat is shared, so a beat on any node counts. A fresh install with no waiting
  mail is ready before its first sweep.
"""
import logging
import socket
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0
PORT_SETTINGS = (
    ("smtp", "MAILSUITE_SMTP_PORT"),
    ("submission", "MAILSUITE_SUBMISSION_PORT"),
    ("smtps", "MAILSUITE_SMTPS_PORT"),
    ("imap", "MAILSUITE_IMAP_PORT"),
    ("imaps", "MAILSUITE_IMAPS_PORT"),
    ("pop3", "MAILSUITE_POP3_PORT"),
    ("pop3s", "MAILSUITE_POP3S_PORT"),
    ("managesieve", "MAILSUITE_MANAGESIEVE_PORT"),
)
# What ?service= may name: the ports, and "queue" for the sweep check.
SERVICES = frozenset(name for name, _ in PORT_SETTINGS) | {"queue"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def database():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # any driver error means "not reachable"
        return Check("database", False, f"{error.__class__.__name__}: {error}")
    return Check("database", True)


def storage():
    from mailstore.storage import blob_storage

    store = blob_storage()
    name = f"readyz/{uuid.uuid4().hex}"
    try:
        saved = store.save(name, ContentFile(b"ok"))
        store.delete(saved)
    except Exception as error:  # OSError locally, botocore errors for object storage
        return Check("storage", False, f"{error.__class__.__name__}: {error}")
    return Check("storage", True)


def _local_address():
    """Where to connect to reach our listeners: the bind address, loopback for a wildcard."""
    bind = settings.MAILSUITE_BIND
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def ports(services=None):
    """A Check per mail service port (`services`: names of PORT_SETTINGS, default all)."""
    host = _local_address()
    checks = []
    for name, setting in PORT_SETTINGS:
        if services is not None and name not in services:
            continue
        port = getattr(settings, setting)
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
                pass
        except OSError as error:
            checks.append(Check(f"port:{name}", False, f"{host}:{port}: {error.strerror or error}"))
        else:
            checks.append(Check(f"port:{name}", True, f"{host}:{port}"))
    return checks


def queue_sweep():
    from mta import queue

    try:
        status = queue.sweep_status()
    except Exception as error:  # the database check says why
        return Check("queue-sweep", False, f"{error.__class__.__name__}: {error}")
    if not status.ok:
        return Check("queue-sweep", False, status.problem)
    if status.last_run is None:
        return Check("queue-sweep", True, "not run yet; no mail waiting for it")
    return Check("queue-sweep", True, f"last run {int(status.age_seconds)} s ago")


def readiness(services=None):
    """Every check (`services`: names of SERVICES, default all)."""
    checks = [database(), storage(), *ports(services)]
    if services is None or "queue" in services:
        checks.append(queue_sweep())
    return checks
