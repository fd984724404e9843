"""The PROXY protocol (v1 text, v2 binary) on the mail listeners: the parser over bytes,
then real servers on loopback with clients that connect from 127.0.0.9 (the balancer,
listed in MAILSUITE_PROXY_PROTOCOL_FROM) or 127.0.0.1 (anyone else)."""
import ipaddress
import smtplib
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts.models import LoginEvent
from mailsuite.lib import proxyprotocol
from mailsuite.lib.proxyprotocol import Header, ProxyProtocolError, parse
from mta.models import QueuedMessage
from mailstore.actions import read_blob
from tests.conftest import PASSWORD, smtp_servers

BALANCER = "127.0.0.9"
SIG = proxyprotocol.V2_SIGNATURE


def v2(command=1, family=0x11, addresses=b"", tlvs=b"", version=2):
    body = addresses + tlvs
    return SIG + bytes([(version << 4) | command, family]) + struct.pack(">H", len(body)) + body


def v2_tcp4(source, sport, destination="127.0.0.1", dport=25, **kwargs):
    addresses = ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed + struct.pack(">HH", sport, dport)
    return v2(addresses=addresses, **kwargs)


def v2_tcp6(source, sport, destination="::1", dport=993):
    addresses = ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed + struct.pack(">HH", sport, dport)
    return v2(family=0x21, addresses=addresses)


V1 = b"PROXY TCP4 192.0.2.55 127.0.0.1 40000 25\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 ::1 65535 143\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN ffff:f...f ffff:f...f 65535 65535\r\n"

# Parser: input, the header it holds (None: needs more), error rows below.
PARSES = [
    (V1 + b"EHLO x\r\n", Header(len(V1), ("192.0.2.55", 40000), ("127.0.0.1", 25))),
    (V1_TCP6 + b"a1 CAPABILITY\r\n", Header(len(V1_TCP6), ("2001:db8::7", 65535), ("::1", 143))),
    (b"PROXY UNKNOWN\r\n", Header(15, None)),
    (V1_UNKNOWN, Header(len(V1_UNKNOWN), None)),
    (b"", None),
    (b"PRO", None),
    (b"PROXY TCP4 192.0.2.55 127.0", None),
    (SIG[:7], None),
    (v2_tcp4("198.51.100.4", 1234)[:20], None),
    (v2_tcp4("198.51.100.4", 1234) + b"\x16\x03\x01", Header(28, ("198.51.100.4", 1234), ("127.0.0.1", 25))),
    (v2_tcp4("198.51.100.4", 1234, tlvs=b"\x04\x00\x01x"), Header(32, ("198.51.100.4", 1234), ("127.0.0.1", 25))),
    (v2_tcp6("2001:db8::7", 5), Header(52, ("2001:db8::7", 5), ("::1", 993))),
    (v2(command=0), Header(16, None)),  # LOCAL: the balancer's health check
    (v2(family=0x31, addresses=b"/tmp/x".ljust(216, b"\0")), Header(232, None)),  # AF_UNIX: keep the real address
    (v2(family=0x12, addresses=b"\0" * 12), Header(28, None)),  # UDP
]

ERRORS = [
    (b"EHLO client.test\r\n", "no PROXY protocol header"),
    (b"GET / HTTP/1.0\r\n", "no PROXY protocol header"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", r"not PROXY TCP4\|TCP6"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", r"not PROXY TCP4\|TCP6"),
    (b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n", "bad address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not an IPv4 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not an IPv6 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "without CRLF"),
    (b"PROXY " + b"x" * 120, "without CRLF"),
    (v2(version=1), "version 1"),
    (v2(command=2), "command 2"),
    (v2(family=0x11, addresses=b"\0" * 11), "too short"),
    (SIG + b"\x21\x11" + struct.pack(">H", 5000), "of 5000 octets"),
]


@pytest.mark.parametrize("data, expected", PARSES)
def test_it_parses_headers(data, expected):
    assert parse(data) == expected


@pytest.mark.parametrize("data, message", ERRORS)
def test_it_refuses_malformed_headers(data, message):
    with pytest.raises(ProxyProtocolError, match=message):
        parse(data)


@given(st.binary(max_size=300))
def test_parse_raises_nothing_but_its_own_error(data):
    try:
        parse(data)
    except ProxyProtocolError:
        pass


@given(st.binary(max_size=300))
def test_parse_raises_nothing_but_its_own_error_after_a_signature(data):
    for prefix in (SIG, b"PROXY "):
        try:
            parse(prefix + data)
        except ProxyProtocolError:
            pass


# Real servers ------------------------------------------------------------------------


def connect(port, header=b"", *, source=BALANCER):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if header:
        sock.sendall(header)
    return sock


def received_before_close(sock):
    """What the server sent until it closed the connection (a reset, as closing with the
    client's bytes unread makes, counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return data


def closed_without_service(sock):
    """True when the server closes the connection without answering what was sent."""
    return received_before_close(sock) == b""


def smtp_through(port, header, *, source=BALANCER):
    class Proxied(smtplib.SMTP):
        def _get_socket(self, host, port, timeout):
            return connect(port, header, source=source)

    return Proxied("127.0.0.1", port, local_hostname="client.test", timeout=10)


@pytest.fixture
def proxied(settings):
    settings.MAILSUITE_PROXY_PROTOCOL_FROM = (ipaddress.ip_network(f"{BALANCER}/32"),)
    settings.MAILSUITE_HOSTNAME = "mx.example.test"
    return settings


@pytest.fixture
def smtp(proxied, transactional_db, alice):
    proxied.MAILSUITE_TRUSTED_NETWORKS = (ipaddress.ip_network("192.0.2.0/24"),)  # the real client's network
    with smtp_servers("smtp") as server:
        yield server.port


def test_smtp_policy_sees_the_client_the_balancer_speaks_for(smtp):
    client = smtp_through(smtp, V1)
    assert client.ehlo()[0] == 250
    client.mail("someone@example.test")
    # 192.0.2.55 may relay (a trusted network); the balancer's own address may not.
    assert client.rcpt("friend@faraway.test")[0] == 250
    assert client.data(b"Subject: through the balancer\r\n\r\nhi\r\n")[0] == 250
    client.quit()
    queued = QueuedMessage.objects.get()
    assert queued.received_from == "192.0.2.55"
    assert b"Received: from client.test ([192.0.2.55])\r\n" in read_blob(queued.blob)

    direct = smtp_through(smtp, b"", source="127.0.0.1")  # not a balancer: served as it is
    direct.ehlo()
    direct.mail("someone@example.test")
    assert direct.rcpt("friend@faraway.test") == (554, b"5.7.1 <friend@faraway.test>: relay access denied")
    direct.quit()


def test_smtp_takes_a_v2_header(smtp):
    client = smtp_through(smtp, v2_tcp4("192.0.2.56", 50000))
    client.ehlo()
    client.mail("someone@example.test")
    assert client.rcpt("friend@faraway.test")[0] == 250
    client.quit()


@pytest.mark.parametrize("first_bytes", [
    b"EHLO client.test\r\n",  # no header from the balancer
    b"PROXY TCP4 192.0.2.300 127.0.0.1 1 25\r\n",
    v2(version=1),
    b"PROXY " + b"9" * 200,
])
def test_a_balancer_connection_without_a_valid_header_is_closed(smtp, first_bytes):
    assert received_before_close(connect(smtp, first_bytes)) == b""  # not even a greeting


@pytest.mark.parametrize("header", [V1, v2_tcp4("192.0.2.55", 1)])
def test_a_header_from_anyone_else_closes_the_connection(smtp, header):
    sock = connect(smtp, b"", source="127.0.0.1")
    assert sock.recv(4096).startswith(b"220 ")
    sock.sendall(header + b"MAIL FROM:<someone@example.test>\r\n")
    assert closed_without_service(sock)


def login_events():
    return list(LoginEvent.objects.order_by("pk").values_list("service", "remote_ip", "reason"))


def test_imaps_logins_are_recorded_with_the_clients_address(proxied, transactional_db, alice):
    from tests.imap.conftest import imap_servers, no_verify

    with imap_servers() as server:
        sock = connect(server.ports["imaps"], v2_tcp6("2001:db8::7", 40000))
        tls = no_verify().wrap_socket(sock, server_hostname="localhost")
        stream = tls.makefile("rwb")
        assert stream.readline().startswith(b"* OK")
        stream.write(f'a1 LOGIN alice@example.test "{PASSWORD}"\r\n'.encode())
        stream.flush()
        assert stream.readline().startswith(b"a1 OK")
        tls.close()
        # A health check (v2 LOCAL) keeps the balancer's address.
        local = connect(server.ports["imap"], v2(command=0))
        assert local.recv(4096).startswith(b"* OK")
        local.close()
        plain = connect(server.ports["imap"], b"", source="127.0.0.1")
        plain.recv(4096)
        plain.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 143\r\n")
        assert closed_without_service(plain)
    assert login_events() == [("imap", "2001:db8::7", "ok")]


def test_pop3s_logins_are_recorded_with_the_clients_address(proxied, transactional_db, alice):
    import poplib

    from tests.pop3.conftest import insecure_context, pop3_servers

    with pop3_servers() as server:
        class Proxied(poplib.POP3_SSL):
            def _create_socket(self, timeout):
                sock = connect(server.ports["pop3s"], b"PROXY TCP4 198.51.100.4 127.0.0.1 41000 995\r\n")
                return self.context.wrap_socket(sock, server_hostname="localhost")

        client = Proxied("127.0.0.1", server.ports["pop3s"], context=insecure_context(), timeout=10)
        client.user("alice@example.test")
        client.pass_(PASSWORD)
        client.quit()
    assert login_events() == [("pop3", "198.51.100.4", "ok")]


def test_without_the_setting_nothing_is_read(settings, transactional_db, alice):
    settings.MAILSUITE_PROXY_PROTOCOL_FROM = ()
    with smtp_servers("smtp") as server:
        client = smtp_through(server.port, b"")
        # The balancer's line is just a command the server does not know.
        assert client.docmd("PROXY", "TCP4 192.0.2.55 127.0.0.1 40000 25")[0] == 500
        client.quit()


def test_its_setting_is_a_list_of_networks(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from mailsuite.lib.config import env_networks

    monkeypatch.setenv("MAILSUITE_PROXY_PROTOCOL_FROM", "10.0.0.0/8, 127.0.0.9/32")
    assert env_networks("MAILSUITE_PROXY_PROTOCOL_FROM") == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.9/32"),
    )
    monkeypatch.setenv("MAILSUITE_PROXY_PROTOCOL_FROM", "haproxy")
    with pytest.raises(ImproperlyConfigured, match="'haproxy' is not an IP network"):
        env_networks("MAILSUITE_PROXY_PROTOCOL_FROM")
