"""Debian's getmail6 as a real POP3 client, over POP3S (implicit TLS; getmail6 has no STLS
for POP3) with certificate checking off for the self-signed test certificate: keeping
mail (UIDL tells it what it already has, and what it read becomes \\Seen) and deleting
it."""
import shutil
import subprocess

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from tests.conftest import PASSWORD, inbox
from tests.e2e.helpers import free_port
from tests.pop3.conftest import pop3_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

if shutil.which("getmail") is None:
    pytest.fail("getmail6 is not installed (make test installs it from Debian)", pytrace=False)

COUNT = 200


def message(n):
    # Lines starting with a dot, a bare-LF line end, and sizes that differ from one to the next.
    return (
        f"From: mallory@elsewhere.test\r\nTo: alice@example.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@getmail.test>\r\n\r\n"
        f".leading dot {n}\r\n.\r\nplain {'x' * (n % 97)}\nlast line\r\n"
    ).encode()


def deliver_many(account, numbers):
    from mailstore.actions import Recipient, deliver

    for n in numbers:
        [outcome] = deliver(message(n), [Recipient(account, account.address)], return_path="m@elsewhere.test")
        assert outcome.error is None


class Collector:
    """An LMTP server's handler (aiosmtpd) keeping every message getmail hands it."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        return "250 2.0.0 Delivered"


class LMTPController(Controller):
    def factory(self):
        return LMTP(self.handler)


@pytest.fixture
def lmtp():
    """Where getmail delivers: an LMTP server on loopback. getmail's file and command
    destinations fork a child per message and can miss its exit on a busy machine (they
    install the SIGCHLD handler after fork), then wait 60 s and fail; LMTP needs no child."""
    collector = Collector()
    controller = LMTPController(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    collector.port = controller.port
    yield collector
    controller.stop()


def getmail(port, tmp_path, lmtp, *, delete):
    """One getmail run; (exit status, output, every message it has delivered so far, in order)."""
    state = tmp_path / "getmail"  # getmail keeps the UIDLs it has seen here
    state.mkdir(exist_ok=True)
    rc = state / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"  # no ca_certs: the certificate is not checked
        f"server = 127.0.0.1\nport = {port}\n"
        f"username = alice@example.test\npassword = {PASSWORD}\n"
        "[destination]\n"
        f"type = MDA_lmtp\nhost = 127.0.0.1\nport = {lmtp.port}\noverride = alice@example.test\n"
        "[options]\n"
        "read_all = false\n"  # only messages whose UIDL it has not seen
        f"delete = {'true' if delete else 'false'}\n"
        "verbose = 2\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        ["getmail", "--getmaildir", str(state), "--rcfile", str(rc)], capture_output=True, text=True, timeout=300,
    )
    return result.returncode, result.stdout + result.stderr, list(lmtp.messages)


def expected(messages):
    """What getmail passes on, sorted: each message as delivered (trace prefix first),
    unstuffed, line ends as POP3 sent them (CRLF)."""
    return sorted(bytes(m.prefix) + message(n).replace(b"\nlast", b"\r\nlast") for n, m in messages)


def test_getmail_keeps_mail_fetches_it_once_and_what_it_read_becomes_seen(
    transactional_db, settings, alice, tmp_path, lmtp
):
    from mailstore.models import Folder

    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    deliver_many(alice, range(COUNT))
    delivered = list(enumerate(inbox(alice)))
    with pop3_servers() as server:
        port = server.ports["pop3s"]
        code, output, got = getmail(port, tmp_path, lmtp, delete=False)
        assert code == 0, output[-3000:]
        assert f"{COUNT} messages" in output and "retrieved, 0 skipped" in output
        assert sorted(got) == expected(delivered)  # every message once, as delivered
        kept = inbox(alice)
        assert len(kept) == COUNT
        assert all(m.flags == ["\\Seen"] for m in kept)  # RETR, then QUIT: read, for IMAP and webmail too
        assert Folder.objects.get(account=alice, name="INBOX").unseen_count == 0

        # The UIDLs are the same in the next session: nothing is fetched again...
        code, output, again = getmail(port, tmp_path, lmtp, delete=False)
        assert code == 0, output[-3000:]
        assert "0 messages (0 bytes) retrieved" in output
        assert len(again) == COUNT
        # ...but a new message is.
        deliver_many(alice, [COUNT])
        code, output, again = getmail(port, tmp_path, lmtp, delete=False)
        assert code == 0, output[-3000:]
        assert "1 messages" in output
        assert again[COUNT:] == expected([(COUNT, inbox(alice)[-1])])


def test_getmail_deletes_what_it_fetched(transactional_db, settings, alice, tmp_path, lmtp):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    deliver_many(alice, range(COUNT))
    delivered = list(enumerate(inbox(alice)))
    with pop3_servers() as server:
        code, output, got = getmail(server.ports["pop3s"], tmp_path, lmtp, delete=True)
        assert code == 0, output[-3000:]
        assert sorted(got) == expected(delivered)
        assert inbox(alice) == []
        code, output, again = getmail(server.ports["pop3s"], tmp_path, lmtp, delete=True)
        assert code == 0, output[-3000:]
        assert "0 messages (0 bytes) retrieved" in output and len(again) == COUNT
