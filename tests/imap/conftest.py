"""IMAP servers on loopback and a transcript client for session tests."""
import imaplib
import socket
import ssl

import pytest

from tests.conftest import PASSWORD, ServerThread


def imap_servers(tls=None):
    """runimap's listeners (imap, imaps) on free loopback ports."""
    from imap.management.commands.runimap import listeners
    from imap.server import IMAPService

    async def start():
        service = IMAPService(tls=tls)
        return {listener.name: (service, await service.listen(listener)) for listener in listeners("127.0.0.1", 0, 0)}

    return _IMAPThread(start)


class _IMAPThread(ServerThread):
    async def _close(self):
        await self.service.close()


@pytest.fixture
def imap_server(transactional_db, settings):
    """IMAP and IMAPS on loopback; plaintext logins allowed from loopback, as most tests
    want. `.ports["imap"]`, `.ports["imaps"]`, `.service`."""
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    with imap_servers() as server:
        yield server


def no_verify():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Transcript:
    """A raw IMAP client: `send("a1 NOOP")` returns every line up to the tagged reply."""

    def __init__(self, port, *, tls=False):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            sock = no_verify().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.readline()

    def readline(self):
        line = self.file.readline()
        if not line:
            raise EOFError("server closed the connection")
        return line.decode("utf-8", "replace").rstrip("\r\n")

    def write(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode() + b"\r\n")

    def send(self, command):
        """Lines (untagged and tagged) in answer to `command`; literals are inlined."""
        self.write(command)
        tag = (command if isinstance(command, str) else command.decode()).split(" ", 1)[0]
        return self.until(tag)

    def until(self, tag):
        lines = []
        while True:
            line = self.readline()
            lines.append(line)
            if line.startswith(tag + " ") and tag != "+":
                return lines
            while line.endswith("}") and "{" in line:
                size = int(line[line.rindex("{") + 1 : -1].rstrip("+"))
                data = self.file.read(size).decode("utf-8", "replace")
                line = self.readline()  # what follows the literal, up to the next CRLF
                lines[-1] += "\n" + data + line

    def tagged(self, command):
        return self.send(command)[-1]

    def login(self, user="alice@example.test"):
        assert self.tagged(f'L1 LOGIN {user} "{PASSWORD}"').startswith("L1 OK")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def transcript(imap_server):
    clients = []

    def connect(*, tls=False, login=None):
        client = Transcript(imap_server.ports["imaps" if tls else "imap"], tls=tls)
        clients.append(client)
        if login:
            client.login(login)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def imap(imap_server, alice):
    """imaplib logged in as alice over STARTTLS-less loopback."""
    client = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    client.login("alice@example.test", PASSWORD)
    yield client
    try:
        client.logout()
    except Exception:
        pass
