"""POP3 servers on loopback, poplib clients, and mail to read.

Seams set once here: no pause after a failed login, and a lease that tests can see expire.
"""
import poplib
import ssl

import pytest

from tests.conftest import PASSWORD, ServerThread

MESSAGE = (
    b"From: Mallory <mallory@elsewhere.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"first line\r\n"
    b"second line\r\n"
)


@pytest.fixture(autouse=True)
def pop3_seams(monkeypatch):
    from pop3 import session

    monkeypatch.setattr(session, "FAILURE_DELAY_SECONDS", 0)


def insecure_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def pop3_servers(**options):
    """runpop3's services (pop3 with STLS, pop3s) on free loopback ports."""
    from pop3.management.commands.runpop3 import services

    async def start():
        running = services("127.0.0.1", {"pop3": 0, "pop3s": 0}, **options)
        for service, _ in running:
            for name, value in SERVICE_OVERRIDES.items():
                setattr(service, name, value)
        return {listener.name: (service, await service.listen(listener)) for service, listener in running}

    return ServerThread(start)


# Attributes of every POP3Service a test may change before the server starts.
SERVICE_OVERRIDES = {}


@pytest.fixture
def service_overrides(monkeypatch):
    overrides = {}
    monkeypatch.setattr("tests.pop3.conftest.SERVICE_OVERRIDES", overrides)
    return overrides


@pytest.fixture
def pop3_server(transactional_db, settings):
    """POP3 (STLS) and POP3S on 127.0.0.1; `.ports["pop3"]`, `.ports["pop3s"]`."""
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    with pop3_servers() as server:
        yield server


class Client(poplib.POP3):
    """poplib with the raw commands its API lacks (AUTH exchanges, anything malformed)."""

    def command(self, line):
        """Send one line; return the status line as text (no exception on -ERR)."""
        self._putcmd(line)
        return self._getline()[0].decode("utf-8", "replace")

    def multiline(self, line):
        """Send one line; return (status line, [lines]) with dot-unstuffing, for +OK replies."""
        self._putcmd(line)
        status, lines, _ = self._getlongresp()
        return status.decode(), lines

    def status(self):
        return self._getline()[0].decode("utf-8", "replace")


def connect(server, *, tls=True):
    client = Client("127.0.0.1", server.ports["pop3"], timeout=10)
    if tls:
        client.stls(insecure_context())
    return client


class SSLClient(Client, poplib.POP3_SSL):
    """Client over implicit TLS (POP3S)."""


def connect_pop3s(server):
    return SSLClient("127.0.0.1", server.ports["pop3s"], context=insecure_context(), timeout=10)


def login(server, address="alice@example.test", password=PASSWORD):
    client = connect(server)
    client.user(address)
    client.pass_(password)
    return client


def deliver(account, raw=MESSAGE):
    """Deliver `raw` to the account's INBOX as the MDA does; returns the Message."""
    from mailstore.actions import Recipient, deliver as mda

    [outcome] = mda(raw, [Recipient(account, account.address)], return_path="mallory@elsewhere.test")
    assert outcome.error is None
    return outcome.message


def append(account, raw):
    """Store `raw` as IMAP APPEND does (no trace prefix)."""
    from mailstore.actions import append as store

    return store(account, "INBOX", raw)
