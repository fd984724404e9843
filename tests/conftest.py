"""Shared fixtures: personas, fast password hashing, a real SMTP server on loopback.

Personas: alice and bob have mailboxes in example.test; mallory is an outsider
sending from elsewhere.
"""
import asyncio
import contextlib
import os
import threading

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from hypothesis import settings as hypothesis_settings

# Property tests check behaviour, not speed: with several test processes on two cores an
# example can take seconds, and hypothesis's 200 ms deadline would fail it at random.
hypothesis_settings.register_profile("mailsuite", deadline=None)
hypothesis_settings.load_profile("mailsuite")

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session", autouse=True)
def hermetic_dns():
    """No test asks the machine's resolvers: an empty DNS server on loopback answers
    (NXDOMAIN) unless a test points MAILSUITE_DNS_SERVERS at its own."""
    from tests.dnsserver import DNSServer

    with DNSServer({}) as dns:
        previous = django_settings.MAILSUITE_DNS_SERVERS
        django_settings.MAILSUITE_DNS_SERVERS = [("127.0.0.1", dns.port)]
        yield dns
        django_settings.MAILSUITE_DNS_SERVERS = previous


@pytest.fixture(scope="session", autouse=True)
def quick_emptying():
    """Transactional tests end with DELETEs rather than `flush` (tests/emptying.py)."""
    from tests import emptying

    with pytest.MonkeyPatch.context() as patch:
        emptying.install(patch)
        yield


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = FAST_HASHERS


@pytest.fixture(autouse=True)
def blob_dir(tmp_path, settings):
    """Each test writes message bytes to its own directory (Django resets `storages` on change)."""
    location = tmp_path / "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {**settings.STORAGES["blobs"], "OPTIONS": {"location": location}},
    }
    return location


@pytest.fixture(autouse=True)
def queue_kicks(monkeypatch):
    """Tests run queue deliveries themselves; the domains enqueue() would wake workers for."""
    from mta import queue

    kicked = []
    monkeypatch.setattr(queue, "kick", kicked.extend)
    return kicked


_DKIM_KEYS = {}  # algorithm -> keys mta.dkim made in this process, reused by later tests


@pytest.fixture(autouse=True)
def dkim_keys_made_once(monkeypatch):
    """Every new domain gets DKIM keys, and a 2048-bit RSA key costs 0.1-1 s of CPU: a test's
    n-th key of an algorithm is the n-th that mta.dkim made in this process, made by its own
    generator when first needed. Keys within a test stay distinct."""
    from mta import dkim

    generate, used = dkim._generate, {}

    def made_once(algorithm):
        keys = _DKIM_KEYS.setdefault(algorithm, [])
        n = used[algorithm] = used.get(algorithm, 0) + 1
        while len(keys) < n:
            keys.append(generate(algorithm))
        return keys[n - 1]

    monkeypatch.setattr(dkim, "_generate", made_once)


@pytest.fixture
def domain(db):
    from accounts import actions

    return actions.create_domain("example.test")


@pytest.fixture
def alice(domain):
    from accounts import actions

    return actions.create_account("alice@example.test", password=PASSWORD, display_name="Alice")


@pytest.fixture
def bob(domain):
    from accounts import actions

    return actions.create_account("bob@example.test", password=PASSWORD, display_name="Bob")


@pytest.fixture(scope="module")
def manage(tmp_path_factory):
    """Run manage.py in a subprocess against a fresh, migrated data dir (tests/datadir.py):
    exit status and output exactly as scripts see them."""
    import subprocess
    import sys

    from tests import datadir

    env = datadir.child_env(datadir.migrated_data_dir(tmp_path_factory.mktemp("data")))

    def manage(*args, stdin=""):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=datadir.ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120,
        )

    return manage


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, and before it drops a PostgreSQL test database: the change bus stops
    listening and the connections that threads of in-process servers left open are ended,
    which otherwise stop the drop ("being accessed by other users") and leave the database
    behind."""
    yield
    from mailstore import events

    events.close()
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@contextlib.contextmanager
def rows_for_the_module(django_db_blocker):
    """For a module-scoped fixture whose rows (thousands, say) every test of its module reads:
    they are made once, inside a transaction that each test's own transaction nests in as a
    savepoint, and rolled back after the module's last test. Not for modules with
    transaction=True tests, which would commit and then empty the tables."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield
        transaction.set_rollback(True)


def inbox(account):
    from mailstore.models import Message

    return list(Message.objects.filter(folder__account=account, folder__name="INBOX").order_by("uid"))


def message_bytes(message):
    """The full bytes of a stored message: its per-recipient prefix, then the blob."""
    from mailstore.storage import blob_storage

    with blob_storage().open(message.blob.name, "rb") as f:
        return bytes(message.prefix) + f.read()


class ServerThread:
    """Runs asyncio servers in a thread with its own event loop.

    `start` is a coroutine function returning {name: (service, port)}; the first
    entry is also `.service` and `.port`.
    """

    def __init__(self, start):
        self._start = start
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.services = {name: service for name, (service, _) in started.items()}
        self.ports = {name: port for name, (_, port) in started.items()}
        self.service, self.port = next(iter(started.values()))
        return self

    async def _close(self):
        for service in self.services.values():
            await service.close()

    def __exit__(self, *exc):
        from mailsuite.lib.aio import shutdown_db_executor

        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        shutdown_db_executor()


def smtp_servers(*names):
    """runsmtp's services (smtp, submission, smtps) on free loopback ports."""
    from mta.management.commands.runsmtp import services

    async def start():
        running = services("127.0.0.1", {name: 0 for name in names})
        return {listener.name: (service, await service.listen(listener)) for service, listener in running}

    return ServerThread(start)


@pytest.fixture
def smtp_server(transactional_db, settings):
    """The MX SMTP server on 127.0.0.1, a free port; yields the ServerThread (has .port)."""
    settings.MAILSUITE_HOSTNAME = "mx.example.test"
    with smtp_servers("smtp") as server:
        yield server


@pytest.fixture
def submission_servers(transactional_db, settings):
    """MX, submission and SMTPS on free loopback ports: `.ports["submission"]` etc."""
    settings.MAILSUITE_HOSTNAME = "mx.example.test"
    with smtp_servers("smtp", "submission", "smtps") as server:
        yield server


def database_vendor():
    return django_settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]


def pytest_report_header(config):
    url = os.environ.get("DATABASE_URL")
    return f"database: {url or 'SQLite (default)'}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """tests/run.py's PostgreSQL pass leaves out tests that use no database (tests/storage_pass.py)."""
    from tests import storage_pass

    storage_pass.deselect_tests_without_database(config, items)


def pytest_terminal_summary(terminalreporter):
    from tests import storage_pass

    storage_pass.summary(terminalreporter)
