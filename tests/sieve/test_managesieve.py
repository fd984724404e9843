"""ManageSieve (RFC 5804) over real loopback sockets, driven by sieve.client and raw lines."""
import socket
import ssl

import pytest

from sieve import session as session_module
from sieve.client import ManageSieveClient, ManageSieveError
from sieve.models import SieveScript
from sieve.session import ALLOWED, State
from tests.conftest import PASSWORD, ServerThread

SCRIPT = 'require "fileinto";\r\nif header :contains "subject" "report" {\r\n  fileinto "Archive";\r\n}\r\n'


def no_verify():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def managesieve_server(*, plaintext_loopback=True):
    from django.conf import settings

    from mailsuite.lib.tls import TLSContextProvider, ensure_certificate
    from sieve.server import Listener, ManageSieveService

    async def start():
        ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, "localhost")
        tls = TLSContextProvider(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY)
        service = ManageSieveService(hostname="mail.example.test", tls=tls, plaintext_loopback=plaintext_loopback)
        return {"managesieve": (service, await service.listen(Listener("127.0.0.1", 0)))}

    return ServerThread(start)


@pytest.fixture
def server(transactional_db, monkeypatch):
    monkeypatch.setattr(session_module, "FAILURE_DELAY_SECONDS", 0)
    with managesieve_server() as running:
        yield running


@pytest.fixture
def client(server, alice):
    with ManageSieveClient("127.0.0.1", server.port) as connected:
        connected.authenticate_plain("alice@example.test", PASSWORD)
        yield connected


class Raw:
    """Raw lines: `send("CAPABILITY")` returns every line up to OK/NO/BYE."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.until_done()

    def until_done(self):
        lines = []
        while True:
            data = self.file.readline()
            line = data.decode("utf-8").rstrip("\r\n")
            lines.append(line)
            if line.split(" ", 1)[0] in ("OK", "NO", "BYE") or not data:
                return lines

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode() + b"\r\n")
        return self.until_done()


def test_the_greeting_lists_capabilities(server):
    raw = Raw(server.port)
    capabilities = dict(line.split(" ", 1) if " " in line else (line, "") for line in raw.greeting[:-1])
    assert capabilities['"IMPLEMENTATION"'] == '"mailsuite"'
    assert capabilities['"SASL"'] == '"PLAIN"'  # loopback with plaintext allowed
    assert '"STARTTLS"' in capabilities and capabilities['"VERSION"'] == '"1.0"'
    sieve = capabilities['"SIEVE"'].strip('"').split()
    for extension in ("fileinto", "vacation", "imap4flags", "variables", "include", "spamtestplus", "regex", "mailbox"):
        assert extension in sieve
    assert raw.greeting[-1] == 'OK "mail.example.test ManageSieve ready"'


def test_a_session_uploads_checks_activates_and_manages_scripts(client, alice):
    assert client.capabilities["SIEVE"]
    client.capability()
    assert client.capabilities["OWNER"] == "alice@example.test"
    client.havespace("main", len(SCRIPT))
    client.checkscript(SCRIPT)
    bad = client.checkscript('require "fileinto";\r\nfileinto "x"\r\n', check=False)
    assert (bad.kind, bad.text) == ("NO", "line 3, column 1: missing ';' after command fileinto")
    client.putscript("main", SCRIPT)
    client.putscript("spare", "keep;")
    assert client.listscripts() == [("main", False), ("spare", False)]
    client.setactive("main")
    assert client.listscripts() == [("main", True), ("spare", False)]
    assert client.getscript("main") == SCRIPT
    refused = client.deletescript("main", check=False)
    assert (refused.kind, refused.code) == ("NO", "ACTIVE")
    assert client.renamescript("spare", "main", check=False).code == "ALREADYEXISTS"
    client.renamescript("main", "filters")
    assert client.listscripts() == [("filters", True), ("spare", False)]
    assert client.getscript("filters") == SCRIPT
    assert client.setactive("nope", check=False).code == "NONEXISTENT"
    client.setactive("")
    client.deletescript("filters")
    assert client.listscripts() == [("spare", False)]
    assert client.logout().kind == "OK"
    assert list(SieveScript.objects.filter(account=alice).values_list("name", "text", "active")) == [("spare", "keep;", False)]


def test_an_invalid_script_is_not_stored(client, alice):
    response = client.putscript("main", 'if header :is "a" { keep; }', check=False)
    assert (response.kind, response.text) == ("NO", "line 1, column 4: header takes 2 positional arguments, not 1")
    assert not SieveScript.objects.exists()


def test_limits_are_announced_by_havespace(client, monkeypatch):
    from sieve import actions

    monkeypatch.setattr(actions, "MAX_SCRIPTS", 1)
    assert client.havespace("main", actions.MAX_SCRIPT_OCTETS + 1, check=False).code == "QUOTA/MAXSIZE"
    client.putscript("one", "keep;")
    assert client.havespace("two", 10, check=False).code == "QUOTA/MAXSCRIPTS"
    assert client.putscript("two", "keep;", check=False).code == "QUOTA/MAXSCRIPTS"
    client.havespace("one", 10)  # replacing it is fine


def test_starttls_then_plain(server, alice, transactional_db):
    with managesieve_server(plaintext_loopback=False) as strict:
        with ManageSieveClient("127.0.0.1", strict.port) as connected:
            assert connected.capabilities["SASL"] == ""
            refused = connected.authenticate_plain("alice@example.test", PASSWORD, check=False)
            assert (refused.kind, refused.code) == ("NO", "ENCRYPT-NEEDED")
            connected.starttls(no_verify())
            assert "STARTTLS" not in connected.capabilities and connected.capabilities["SASL"] == "PLAIN"
            connected.authenticate_plain("alice@example.test", PASSWORD)
            connected.putscript("main", SCRIPT)
            assert connected.listscripts() == [("main", False)]


def test_wrong_passwords_fail_and_are_counted(server, alice):
    from accounts.models import LoginEvent

    with ManageSieveClient("127.0.0.1", server.port) as connected:
        response = connected.authenticate_plain("alice@example.test", "wrong", check=False)
        assert (response.kind, response.text) == ("NO", "Authentication failed")
        connected.authenticate_plain("alice@example.test", PASSWORD)
    events = list(LoginEvent.objects.order_by("time").values_list("service", "success"))
    assert events == [("managesieve", False), ("managesieve", True)]


def test_authenticate_with_a_challenge_and_literals(server, alice):
    import base64

    raw = Raw(server.port)
    raw.sock.sendall(b'AUTHENTICATE "PLAIN"\r\n')
    assert raw.file.readline() == b'""\r\n'
    token = base64.b64encode(f"\0alice@example.test\0{PASSWORD}".encode())
    assert raw.send(b"{%d+}\r\n" % len(token) + token + b"\r\n") == ['OK "Logged in"']
    body = b"keep;\r\n"
    assert raw.send(b'PUTSCRIPT "lit" {%d+}\r\n' % len(body) + body + b"\r\n") == ["OK"]
    assert raw.send("GETSCRIPT \"lit\"") == ["{7}", "keep;", "", "OK"]
    assert raw.send('NOOP "tag1"') == ['OK (TAG "tag1") "Done"']


def test_every_command_is_refused_in_every_wrong_state(server, alice):
    """The state machine: each command outside its states gets NO and changes nothing."""
    arguments = {"HAVESPACE": '"a" 1', "PUTSCRIPT": '"a" "keep;"', "SETACTIVE": '"a"', "GETSCRIPT": '"a"',
                 "DELETESCRIPT": '"a"', "RENAMESCRIPT": '"a" "b"', "CHECKSCRIPT": '"keep;"',
                 "AUTHENTICATE": '"PLAIN" "AGFsaWNlQGV4YW1wbGUudGVzdABjb3JyZWN0IGhvcnNlIGJhdHRlcnkgc3RhcGxl"'}
    before = Raw(server.port)
    after = Raw(server.port)
    assert after.send('AUTHENTICATE "PLAIN" "AGFsaWNlQGV4YW1wbGUudGVzdABjb3JyZWN0IGhvcnNlIGJhdHRlcnkgc3RhcGxl"') == ['OK "Logged in"']
    for name, states in ALLOWED.items():
        command = f"{name} {arguments.get(name, '')}".strip()
        if State.NOT_AUTHENTICATED not in states:
            assert before.send(command) == [f'NO "{name} is not allowed before login"'], name
        if State.AUTHENTICATED not in states:
            assert after.send(command) == [f'NO "{name} is not allowed after login"'], name
    assert not SieveScript.objects.exists()


@pytest.mark.parametrize(
    "line, reply",
    [
        ("FROBNICATE", 'NO "Unknown command"'),
        ('PUTSCRIPT "a"', 'NO "Wrong number of arguments for PUTSCRIPT"'),
        ('HAVESPACE "a" "b"', 'NO "Wrong kind of argument for HAVESPACE"'),
        ('GETSCRIPT "unterminated', 'NO "Unterminated quoted string"'),
        ("GETSCRIPT x", 'NO "Expected a string or a number"'),
        ('GETSCRIPT "nope"', 'NO (NONEXISTENT) "there is no script \\"nope\\""'),
    ],
)
def test_bad_commands_get_no(client, server, line, reply):
    raw = Raw(server.port)
    raw.send('AUTHENTICATE "PLAIN" "AGFsaWNlQGV4YW1wbGUudGVzdABjb3JyZWN0IGhvcnNlIGJhdHRlcnkgc3RhcGxl"')
    assert raw.send(line) == [reply]


def test_the_protocol_parser_raises_only_protocol_errors():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sieve.protocol import ProtocolError, parse_command

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=80))
    def fuzz(data):
        try:
            parse_command(data)
        except ProtocolError:
            pass

    fuzz()


def test_sieve_connect_uploads_and_activates(server, alice, tmp_path):
    """Debian's sieve-connect, a real client, if it is installed."""
    import shutil
    import subprocess

    if shutil.which("sieve-connect") is None:
        pytest.skip("sieve-connect is not installed (apt-get install sieve-connect)")
    script_file = tmp_path / "main.sieve"
    script_file.write_text(SCRIPT)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    def run(*args):
        with open(password_file) as secret:
            return subprocess.run(
                ["sieve-connect", "--server", "127.0.0.1", "--port", str(server.port), "--user", "alice@example.test",
                 "--passwordfd", str(secret.fileno()), "--notlsverify", "--authmech", "PLAIN",
                 "--remotesieve", "main", *args],
                pass_fds=(secret.fileno(),), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )

    upload = run("--localsieve", str(script_file), "--upload")
    assert upload.returncode == 0, upload.stderr
    activate = run("--activate")
    assert activate.returncode == 0, activate.stderr
    script = SieveScript.objects.get(account=alice)
    assert (script.name, script.text, script.active) == ("main", SCRIPT, True)

