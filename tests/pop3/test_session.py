"""POP3 sessions over real loopback sockets with poplib: every command, every error row,
every command refused in every wrong state, STLS, POP3S, bounds."""
import poplib
import re
import socket
import time

import pytest

from pop3.parser import KEYWORDS
from pop3.session import ALLOWED, MAX_BAD_COMMANDS, State
from tests.conftest import PASSWORD
from tests.pop3.conftest import (
    MESSAGE,
    Client,
    connect,
    connect_pop3s,
    deliver,
    insecure_context,
    login,
    pop3_servers,
)

pytestmark = pytest.mark.django_db(transaction=True)

GREETING = re.compile(rb"\+OK pop\.example\.test POP3 server ready <\d+\.[0-9a-f]{16}@pop\.example\.test>")
CAPA_BEFORE_TLS = [
    "STLS", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "LOGIN-DELAY 0", "EXPIRE NEVER",
    "UTF8 USER", "SASL SCRAM-SHA-256", "IMPLEMENTATION mailsuite",
]
CAPA_AFTER_TLS = [
    "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "LOGIN-DELAY 0", "EXPIRE NEVER",
    "UTF8 USER", "USER", "SASL PLAIN LOGIN SCRAM-SHA-256", "IMPLEMENTATION mailsuite",
]
CAPA_TRANSACTION = [
    "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "LOGIN-DELAY 0", "EXPIRE NEVER",
    "UTF8 USER", "IMPLEMENTATION mailsuite",
]


def capa_lines(client):
    status, lines = client.multiline("CAPA")
    assert status == "+OK Capability list follows"
    return [line.decode() for line in lines]


def test_greeting_carries_an_apop_timestamp(pop3_server):
    client = connect(pop3_server, tls=False)
    assert GREETING.fullmatch(client.getwelcome())
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off"


def test_capabilities_before_tls_after_tls_and_in_transaction(pop3_server, alice):
    client = connect(pop3_server, tls=False)
    assert capa_lines(client) == CAPA_BEFORE_TLS
    client.stls(insecure_context())
    assert capa_lines(client) == CAPA_AFTER_TLS
    client.user("alice@example.test")
    client.pass_(PASSWORD)
    assert capa_lines(client) == CAPA_TRANSACTION
    client.quit()


def test_pop3s_speaks_tls_from_the_first_byte(pop3_server, alice):
    deliver(alice)
    client = connect_pop3s(pop3_server)
    assert GREETING.fullmatch(client.getwelcome())
    assert "STLS" not in client.capa() and "USER" in client.capa()
    assert client.command("STLS") == "-ERR Command not permitted when TLS active"
    client.user("alice@example.test")
    assert client.pass_(PASSWORD) == b"+OK Logged in; maildrop has 1 messages (180 octets)"
    assert client.stat() == (1, 180)
    client.quit()


def test_every_transaction_command_with_exact_replies(pop3_server, alice):
    deliver(alice)
    second = deliver(alice, MESSAGE.replace(b"hello", b"again"))
    uidvalidity = second.folder.uidvalidity
    client = login(pop3_server)
    assert client.command("STAT") == "+OK 2 360"
    assert client.multiline("LIST") == ("+OK 2 messages (360 octets)", [b"1 180", b"2 180"])
    assert client.command("LIST 2") == "+OK 2 180"
    assert client.multiline("UIDL") == (
        "+OK Unique-ID listing follows",
        [f"1 {uidvalidity}.1".encode(), f"2 {uidvalidity}.2".encode()],
    )
    assert client.command("UIDL 2") == f"+OK 2 {uidvalidity}.2"
    status, lines = client.multiline("RETR 2")
    assert status == "+OK 180 octets"
    assert lines[-3:] == [b"", b"first line", b"second line"] and b"Subject: again" in lines
    status, lines = client.multiline("TOP 1 1")
    assert status == "+OK Top of message follows"
    assert lines[-2:] == [b"", b"first line"]
    assert client.command("NOOP") == "+OK"
    assert client.command("DELE 1") == "+OK Message 1 deleted"
    assert client.command("DELE 1") == "-ERR Message 1 already deleted"
    assert client.command("STAT") == "+OK 1 180"
    assert client.multiline("LIST") == ("+OK 1 messages (180 octets)", [b"2 180"])
    assert client.multiline("UIDL") == ("+OK Unique-ID listing follows", [f"2 {uidvalidity}.2".encode()])
    assert client.command("RSET") == "+OK Maildrop has 2 messages (360 octets)"
    assert client.command("LIST 1") == "+OK 1 180"
    assert client.command("QUIT") == "+OK pop.example.test POP3 server signing off (2 messages left)"


@pytest.mark.parametrize(
    "line, reply",
    [
        ("LIST 3", "-ERR No such message"),
        ("LIST 0", "-ERR No such message"),
        ("UIDL 9", "-ERR No such message"),
        ("RETR 3", "-ERR No such message"),
        ("TOP 3 0", "-ERR No such message"),
        ("DELE 3", "-ERR No such message"),
        ("RETR x", "-ERR Invalid message number"),
        ("RETR", "-ERR RETR needs a message number"),
        ("TOP 1", "-ERR TOP needs a message number and a number of lines"),
        ("STAT 1", "-ERR STAT takes no arguments"),
        ("XTND XMIT", "-ERR Unknown command"),
        ("LAST", "-ERR Unknown command"),
    ],
)
def test_error_rows_in_transaction(pop3_server, alice, line, reply):
    deliver(alice)
    deliver(alice)
    client = login(pop3_server)
    assert client.command(line) == reply
    assert client.command("STAT") == "+OK 2 360"  # the session goes on
    client.quit()


def test_a_message_marked_deleted_cannot_be_referred_to(pop3_server, alice):
    deliver(alice)
    client = login(pop3_server)
    client.dele(1)
    for line in ("RETR 1", "TOP 1 0", "LIST 1", "UIDL 1"):
        assert client.command(line) == "-ERR No such message"
    assert client.command("STAT") == "+OK 0 0"
    client.quit()


# One line per command, to send it where it does not belong.
SAMPLES = {
    "CAPA": "CAPA",
    "QUIT": "QUIT",
    "USER": "USER alice@example.test",
    "PASS": "PASS secret",
    "APOP": "APOP alice@example.test " + "0" * 32,
    "AUTH": "AUTH PLAIN",
    "STLS": "STLS",
    "UTF8": "UTF8",
    "STAT": "STAT",
    "LIST": "LIST",
    "RETR": "RETR 1",
    "DELE": "DELE 1",
    "NOOP": "NOOP",
    "RSET": "RSET",
    "TOP": "TOP 1 0",
    "UIDL": "UIDL",
}


def test_the_state_table_covers_every_command_and_nothing_runs_in_update():
    assert set(SAMPLES) == set(ALLOWED) == KEYWORDS
    assert all(State.UPDATE not in states for states in ALLOWED.values())


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_every_command_is_refused_in_authorization_when_it_belongs_elsewhere(pop3_server, alice, tls):
    deliver(alice)
    client = connect(pop3_server, tls=tls)
    wrong = [name for name, states in ALLOWED.items() if State.AUTHORIZATION not in states]
    assert wrong == ["STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"]
    for name in wrong:
        assert client.command(SAMPLES[name]) == "-ERR Command not valid in this state", name
    if not tls:
        client.stls(insecure_context())
    client.user("alice@example.test")  # the session is still usable
    assert client.pass_(PASSWORD).startswith(b"+OK Logged in")
    client.quit()


def test_every_command_is_refused_in_transaction_when_it_belongs_elsewhere(pop3_server, alice):
    deliver(alice)
    client = login(pop3_server)
    wrong = [name for name, states in ALLOWED.items() if State.TRANSACTION not in states]
    assert wrong == ["USER", "PASS", "APOP", "AUTH", "STLS", "UTF8"]
    for name in wrong:
        assert client.command(SAMPLES[name]) == "-ERR Command not valid in this state", name
    assert client.command("STAT") == "+OK 1 180"
    client.quit()


def test_garbage_gets_err_then_a_disconnect_after_repeats(pop3_server):
    client = connect(pop3_server, tls=False)
    replies = [client.command(line) for line in ["HELO x", "\x01\x02", "GET / HTTP/1.1", "STAT"] * 2]
    assert replies == [
        "-ERR Unknown command",
        "-ERR Invalid characters in command",
        "-ERR Unknown command",
        "-ERR Command not valid in this state",
    ] * 2
    assert client.command("EHLO x") == "-ERR Unknown command"
    assert client.command("EHLO y") == "-ERR Too many bad commands; closing connection"
    assert client.file.readline() == b""  # closed


def test_a_good_command_resets_the_count_of_bad_ones(pop3_server):
    client = connect(pop3_server, tls=False)
    for _ in range(3):
        for _ in range(MAX_BAD_COMMANDS - 1):
            assert client.command("BOGUS") == "-ERR Unknown command"
        assert capa_lines(client)
    client.quit()


def test_an_overlong_line_is_refused_and_discarded(pop3_server):
    client = connect(pop3_server, tls=False)
    assert client.command("CAPA " + "x" * 5000) == "-ERR Line too long"
    assert capa_lines(client) == CAPA_BEFORE_TLS
    client.quit()


def test_stls_twice_and_stls_after_login_are_refused(pop3_server, alice):
    client = connect(pop3_server)
    assert client.command("STLS") == "-ERR Command not permitted when TLS active"
    client.user("alice@example.test")
    client.pass_(PASSWORD)
    assert client.command("STLS") == "-ERR Command not valid in this state"
    client.quit()


def test_commands_pipelined_after_stls_in_plaintext_are_discarded(pop3_server):
    with socket.create_connection(("127.0.0.1", pop3_server.ports["pop3"]), timeout=10) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        raw.sendall(b"STLS\r\nCAPA\r\n")  # the CAPA is an injection attempt
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        with insecure_context().wrap_socket(raw, server_hostname="pop.example.test") as tls:
            tls.sendall(b"QUIT\r\n")
            reply = tls.makefile("rb").readline()
    assert reply == b"+OK pop.example.test POP3 server signing off\r\n"


def test_a_failed_tls_handshake_closes_the_connection(pop3_server):
    with socket.create_connection(("127.0.0.1", pop3_server.ports["pop3"]), timeout=10) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"STLS\r\n")
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        raw.sendall(b"USER plaintext\r\n")
        assert reader.read() == b""  # no reply in plaintext, and the server hung up


def test_pipelined_commands_are_answered_in_order(pop3_server, alice):
    deliver(alice)
    deliver(alice)
    client = login(pop3_server)
    client.sock.sendall(b"STAT\r\nLIST 1\r\nDELE 1\r\nSTAT\r\nRSET\r\nNOOP\r\n")
    assert [client.status() for _ in range(6)] == [
        "+OK 2 360", "+OK 1 180", "+OK Message 1 deleted", "+OK 1 180",
        "+OK Maildrop has 2 messages (360 octets)", "+OK",
    ]
    client.quit()


def test_utf8_command_and_utf8_user_names(pop3_server, alice):
    client = connect(pop3_server)
    assert client.utf8() == b"+OK UTF8 enabled"
    client.user("jörg@example.test")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        client.pass_("pässwörd")
    client.quit()


def test_connections_over_the_per_ip_cap_are_refused(transactional_db, settings, service_overrides):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    service_overrides["max_connections_per_ip"] = 2
    with pop3_servers() as server:
        first, second = connect(server, tls=False), connect(server, tls=False)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\] Too many connections from your address"):
            Client("127.0.0.1", server.ports["pop3"], timeout=10)
        first.quit()
        deadline = time.monotonic() + 5
        while True:  # the server notices the QUIT's close a moment later
            try:
                third = Client("127.0.0.1", server.ports["pop3"], timeout=10)
                break
            except poplib.error_proto:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        third.quit()
        second.quit()

