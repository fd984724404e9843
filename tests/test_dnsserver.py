"""The loopback DNS server, queried over real sockets by dnspython's stub resolver.

Exact-message checks (flags, rcodes, authority sections) use dns.query directly; the rest go
through `dns.resolver.Resolver`, the client the mail routing code uses. The fixture is
called `dns_server`, not `dns`, so it does not shadow the dnspython package.
"""
import socket
import threading
import time

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.dnsserver import DNSServer

ZONE = {
    "example.test": {
        "MX": [(10, "mx1.example.test"), (20, "mx2.example.test")],
        "TXT": ["v=spf1 -all"],
        "NS": ["ns1.example.test"],
    },
    "mx1.example.test": {"A": ["127.0.0.2"], "AAAA": ["::2"]},
    "mx2.example.test": {"A": ["127.0.0.3"]},
    "www.example.test": {"CNAME": ["mx1.example.test"]},
    "mail.example.test": {"CNAME": ["www.example.test"]},
    "gone.example.test": {"CNAME": ["missing.example.test"]},
    "away.example.test": {"CNAME": ["elsewhere.invalid"]},
    "deep.sub.example.test": {"A": ["127.0.0.9"]},
    "nomail.test": {"MX": [(0, ".")]},
    "2.0.0.127.in-addr.arpa": {"PTR": ["mx1.example.test"]},
    "xn--bcher-kva.test": {"MX": [(10, "mx1.example.test")]},
}


@pytest.fixture
def dns_server():
    with DNSServer(ZONE, ttl=60) as server:
        yield server


def resolver_for(server, lifetime=2.0):
    resolver = dns.resolver.Resolver(configure=False)
    host, port = server.address
    resolver.nameservers = [host]
    resolver.nameserver_ports = {host: port}
    resolver.lifetime = lifetime
    return resolver


def lookup(server, name, rtype, **kwargs):
    return resolver_for(server, **kwargs).resolve(name, rtype)


def texts(answer):
    return sorted(rdata.to_text() for rdata in answer)


def ask_udp(server, name, rtype, **query_options):
    host, port = server.address
    query = dns.message.make_query(name, rtype, **query_options)
    return dns.query.udp(query, host, port=port, timeout=2)


def ask_tcp(server, name, rtype):
    host, port = server.address
    return dns.query.tcp(dns.message.make_query(name, rtype), host, port=port, timeout=2)


# -- answers ------------------------------------------------------------------------------


def test_it_answers_a_and_aaaa(dns_server):
    assert texts(lookup(dns_server, "mx1.example.test", "A")) == ["127.0.0.2"]
    assert texts(lookup(dns_server, "mx1.example.test", "AAAA")) == ["::2"]


def test_it_answers_mx(dns_server):
    answer = lookup(dns_server, "example.test", "MX")
    assert sorted((mx.preference, mx.exchange.to_text()) for mx in answer) == [
        (10, "mx1.example.test."),
        (20, "mx2.example.test."),
    ]


def test_it_answers_the_null_mx_of_rfc_7505(dns_server):
    (mx,) = lookup(dns_server, "nomail.test", "MX")
    assert (mx.preference, mx.exchange) == (0, dns.name.root)


def test_it_answers_txt(dns_server):
    (txt,) = lookup(dns_server, "example.test", "TXT")
    assert txt.strings == (b"v=spf1 -all",)


def test_it_answers_several_txt_records(dns_server):
    dns_server.set("example.test", "TXT", ["v=spf1 -all", "google-site-verification=abc"])
    assert sorted(txt.strings for txt in lookup(dns_server, "example.test", "TXT")) == [
        (b"google-site-verification=abc",),
        (b"v=spf1 -all",),
    ]


def test_it_splits_long_txt_into_255_octet_strings_that_join_back(dns_server):
    key = "v=DKIM1; k=rsa; p=" + "A" * 600
    dns_server.set("sel._domainkey.example.test", "TXT", [key])
    (txt,) = lookup(dns_server, "sel._domainkey.example.test", "TXT")
    assert [len(part) for part in txt.strings] == [255, 255, 108]
    assert b"".join(txt.strings).decode() == key


def test_it_takes_explicit_character_strings_as_given(dns_server):
    dns_server.set("example.test", "TXT", [("v=spf1 ", "-all")])
    (txt,) = lookup(dns_server, "example.test", "TXT")
    assert txt.strings == (b"v=spf1 ", b"-all")


@pytest.mark.parametrize("rtype, expected", [("A", ["127.0.0.2"]), ("AAAA", ["::2"])])
def test_it_follows_a_cname_chain_within_its_data(dns_server, rtype, expected):
    answer = lookup(dns_server, "mail.example.test", rtype)
    assert texts(answer) == expected
    assert answer.canonical_name == dns.name.from_text("mx1.example.test")
    response = answer.response
    assert [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in response.answer] == [
        ("mail.example.test.", "CNAME"),
        ("www.example.test.", "CNAME"),
        ("mx1.example.test.", rtype),
    ]


def test_it_follows_a_cname_for_mx_and_txt(dns_server):
    dns_server.set("alias.test", "CNAME", ["example.test"])
    assert len(lookup(dns_server, "alias.test", "MX")) == 2
    assert texts(lookup(dns_server, "alias.test", "TXT")) == ['"v=spf1 -all"']


def test_it_answers_a_cname_question_with_the_cname_alone(dns_server):
    response = ask_udp(dns_server, "mail.example.test", "CNAME")
    assert [rrset.to_text() for rrset in response.answer] == ["mail.example.test. 60 IN CNAME www.example.test."]


def test_a_cname_to_a_missing_name_in_our_zone_is_nxdomain_with_the_cname(dns_server):
    response = ask_udp(dns_server, "gone.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME]
    assert response.authority[0].name == dns.name.from_text("example.test")


def test_a_cname_leaving_our_data_is_answered_with_the_cname_only(dns_server):
    response = ask_udp(dns_server, "away.example.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.to_text() for rrset in response.answer] == ["away.example.test. 60 IN CNAME elsewhere.invalid."]
    assert response.authority == []


def test_it_answers_ptr(dns_server):
    answer = resolver_for(dns_server).resolve_address("127.0.0.2")
    assert texts(answer) == ["mx1.example.test."]


def test_it_answers_ns(dns_server):
    assert texts(lookup(dns_server, "example.test", "NS")) == ["ns1.example.test."]


def test_it_synthesises_a_soa_at_the_zone_apex(dns_server):
    (soa,) = lookup(dns_server, "example.test", "SOA")
    assert (soa.mname.to_text(), soa.rname.to_text(), soa.minimum) == (
        "ns.example.test.",
        "hostmaster.example.test.",
        60,
    )
    with pytest.raises(dns.resolver.NoAnswer):
        lookup(dns_server, "mx1.example.test", "SOA")  # not an apex


def test_an_explicit_soa_is_used_and_makes_its_name_an_apex(dns_server):
    dns_server.set("sub.example.test", "SOA", [("ns.sub.example.test", "admin.sub.example.test", 7, 1, 1, 1, 30)])
    (soa,) = lookup(dns_server, "sub.example.test", "SOA")
    assert soa.serial == 7
    response = ask_udp(dns_server, "nothere.sub.example.test", "A")
    assert response.authority[0].to_text() == (
        "sub.example.test. 30 IN SOA ns.sub.example.test. admin.sub.example.test. 7 1 1 1 30"
    )


def test_it_answers_any_with_every_rrset_at_the_name(dns_server):
    response = ask_tcp(dns_server, "example.test", "ANY")
    assert sorted(dns.rdatatype.to_text(rrset.rdtype) for rrset in response.answer) == ["MX", "NS", "TXT"]


# -- negative answers ---------------------------------------------------------------------


def test_a_name_that_does_not_exist_is_nxdomain_with_the_zone_soa(dns_server):
    response = ask_udp(dns_server, "nothere.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    (soa,) = response.authority
    assert (soa.name.to_text(), soa.rdtype, soa.ttl) == ("example.test.", dns.rdatatype.SOA, 60)
    with pytest.raises(dns.resolver.NXDOMAIN):
        lookup(dns_server, "nothere.example.test", "A")


def test_a_name_without_records_of_the_type_is_nodata(dns_server):
    response = ask_udp(dns_server, "mx2.example.test", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [rrset.name.to_text() for rrset in response.authority] == ["example.test."]
    with pytest.raises(dns.resolver.NoAnswer):
        lookup(dns_server, "mx2.example.test", "AAAA")


def test_an_empty_non_terminal_is_nodata_not_nxdomain(dns_server):
    response = ask_udp(dns_server, "sub.example.test", "A")  # RFC 8020: deep.sub.example.test exists
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])


def test_a_name_outside_all_data_is_nxdomain_with_the_root_soa(dns_server):
    response = ask_udp(dns_server, "nowhere.invalid", "MX")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.name for rrset in response.authority] == [dns.name.root]


# -- names --------------------------------------------------------------------------------


def test_names_match_case_insensitively(dns_server):
    assert texts(lookup(dns_server, "MX1.Example.TEST", "A")) == ["127.0.0.2"]
    dns_server.set("UPPER.example.test", "A", ["127.0.0.5"])
    assert texts(lookup(dns_server, "upper.EXAMPLE.test.", "A")) == ["127.0.0.5"]


def test_an_idna_name_is_served_in_its_ascii_form(dns_server):
    answer = lookup(dns_server, "bücher.test", "MX")  # dnspython encodes it to xn--bcher-kva
    assert texts(answer) == ["10 mx1.example.test."]
    assert dns_server.queries == [("xn--bcher-kva.test", "MX")]


def test_it_refuses_non_ascii_names_in_its_data():
    with pytest.raises(ValueError, match="xn--"):
        DNSServer({"bücher.test": {"A": ["127.0.0.1"]}})


# -- changes while running ----------------------------------------------------------------


def test_records_change_while_it_runs(dns_server):
    dns_server.set("mx2.example.test", "A", ["127.0.0.4", "127.0.0.5"])
    assert texts(lookup(dns_server, "mx2.example.test", "A")) == ["127.0.0.4", "127.0.0.5"]

    dns_server.set("new.example.test", "MX", [(5, "mx2.example.test")])
    assert texts(lookup(dns_server, "new.example.test", "MX")) == ["5 mx2.example.test."]

    dns_server.remove("mx1.example.test", "AAAA")
    with pytest.raises(dns.resolver.NoAnswer):
        lookup(dns_server, "mx1.example.test", "AAAA")

    dns_server.remove("mx1.example.test")
    with pytest.raises(dns.resolver.NXDOMAIN):
        lookup(dns_server, "mx1.example.test", "A")

    dns_server.set("mx2.example.test", "A", [])
    with pytest.raises(dns.resolver.NXDOMAIN):
        lookup(dns_server, "mx2.example.test", "A")


def test_a_cname_cannot_share_its_name(dns_server):
    with pytest.raises(ValueError, match="CNAME"):
        dns_server.set("www.example.test", "A", ["127.0.0.1"])
    with pytest.raises(ValueError, match="CNAME"):
        dns_server.set("mx1.example.test", "CNAME", ["example.test"])
    assert texts(lookup(dns_server, "mx1.example.test", "A")) == ["127.0.0.2"]  # unchanged


def test_a_malformed_record_fails_where_it_is_written(dns_server):
    with pytest.raises(dns.exception.SyntaxError):
        dns_server.set("mx1.example.test", "A", ["not-an-address"])


def test_ttl_is_configurable():
    with DNSServer(ZONE, ttl=5) as server:
        answer = lookup(server, "mx1.example.test", "A")
        assert answer.rrset.ttl == 5
        server.ttl = 300
        assert lookup(server, "mx1.example.test", "A").rrset.ttl == 300


def test_records_change_safely_under_concurrent_queries(dns_server):
    stop = threading.Event()

    def churn():
        for i in range(200):
            dns_server.set("busy.example.test", "A", [f"127.0.1.{i % 250}"])
        stop.set()

    writer = threading.Thread(target=churn)
    writer.start()
    resolver = resolver_for(dns_server)
    while not stop.is_set():
        assert len(resolver.resolve("busy.example.test", "A")) == 1
    writer.join()


# -- size limits and TCP ------------------------------------------------------------------


def test_a_large_answer_is_truncated_over_udp_and_retried_over_tcp(dns_server):
    addresses = [f"127.0.2.{i}" for i in range(1, 41)]
    dns_server.set("many.example.test", "A", addresses)

    truncated = ask_udp(dns_server, "many.example.test", "A")
    assert truncated.flags & dns.flags.TC

    answer = lookup(dns_server, "many.example.test", "A")
    assert sorted(answer, key=lambda rdata: int(rdata.address.rsplit(".", 1)[1])) == [
        dns.rdata.from_text("IN", "A", address) for address in addresses
    ]
    assert dns_server.tcp_queries == [("many.example.test", "A")]


def test_the_edns_payload_size_raises_the_udp_limit(dns_server):
    dns_server.set("many.example.test", "A", [f"127.0.2.{i}" for i in range(1, 41)])  # about 700 octets
    response = ask_udp(dns_server, "many.example.test", "A", use_edns=0, payload=1232)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 40


def test_a_big_txt_exceeding_the_edns_size_goes_over_tcp(dns_server):
    dns_server.set("big.example.test", "TXT", ["x" * 3000])
    resolver = resolver_for(dns_server)
    resolver.use_edns(0, payload=4096)  # more than we accept: capped at 1232
    (txt,) = resolver.resolve("big.example.test", "TXT")
    assert b"".join(txt.strings) == b"x" * 3000
    assert dns_server.tcp_queries == [("big.example.test", "TXT")]


def test_udp_and_tcp_share_one_port(dns_server):
    host, port = dns_server.address
    assert host == "127.0.0.1"
    assert ask_udp(dns_server, "mx1.example.test", "A").answer == ask_tcp(dns_server, "mx1.example.test", "A").answer


def test_it_answers_several_queries_on_one_tcp_connection(dns_server):
    with socket.create_connection(dns_server.address, timeout=2) as sock:
        for name in ["mx1.example.test", "mx2.example.test"]:
            dns.query.send_tcp(sock, dns.message.make_query(name, "A"), None)
            response, _ = dns.query.receive_tcp(sock, time.time() + 2)
            assert response.answer[0].name == dns.name.from_text(name)


# -- faults -------------------------------------------------------------------------------


def test_a_failing_name_gets_servfail(dns_server):
    dns_server.fail("example.test")
    assert ask_udp(dns_server, "example.test", "MX").rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.resolver.NoNameservers):
        lookup(dns_server, "example.test", "MX")
    assert texts(lookup(dns_server, "mx1.example.test", "A")) == ["127.0.0.2"]  # only that name

    dns_server.fail("example.test", False)
    assert len(lookup(dns_server, "example.test", "MX")) == 2


def test_a_delayed_name_times_out_a_short_lifetime(dns_server):
    dns_server.delay("example.test", 2)
    started = time.monotonic()
    with pytest.raises(dns.resolver.LifetimeTimeout):
        lookup(dns_server, "example.test", "MX", lifetime=0.3)
    assert time.monotonic() - started < 1.5

    assert texts(lookup(dns_server, "mx1.example.test", "A", lifetime=0.3)) == ["127.0.0.2"]  # others answer

    dns_server.delay("example.test", 0)
    assert len(lookup(dns_server, "example.test", "MX", lifetime=0.3)) == 2


def test_a_short_delay_still_answers(dns_server):
    dns_server.delay("mx1.example.test", 0.2)
    started = time.monotonic()
    assert texts(lookup(dns_server, "mx1.example.test", "A")) == ["127.0.0.2"]
    assert time.monotonic() - started >= 0.2


# -- protocol hygiene ---------------------------------------------------------------------


def test_garbage_gets_formerr_or_nothing(dns_server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff", dns_server.address)
        response = dns.message.from_wire(sock.recv(512))
        assert (response.id, response.rcode()) == (0x1234, dns.rcode.FORMERR)

        sock.sendto(b"\x00", dns_server.address)  # too short to answer
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(512)


def test_queries_are_logged_in_order(dns_server):
    lookup(dns_server, "example.test", "MX")
    lookup(dns_server, "mx1.example.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        lookup(dns_server, "NotHere.example.test", "TXT")
    assert dns_server.queries == [
        ("example.test", "MX"),
        ("mx1.example.test", "A"),
        ("nothere.example.test", "TXT"),
    ]


def test_it_answers_many_queries_quickly(dns_server):
    resolver = resolver_for(dns_server)
    started = time.monotonic()
    for _ in range(500):
        resolver.resolve("mx1.example.test", "A")
    assert time.monotonic() - started < 20  # a sanity bound; a busy machine takes 5+ s
    assert len(dns_server.queries) == 500


# -- lifecycle ----------------------------------------------------------------------------


def test_it_stops_cleanly_and_frees_its_port():
    threads_before = set(threading.enumerate())
    with DNSServer(ZONE) as server:
        host, port = server.address
        server.delay("example.test", 30)
        # An answer still held back and an idle TCP connection must not outlive the server.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(dns.message.make_query("example.test", "MX").to_wire(), (host, port))
            idle = socket.create_connection((host, port), timeout=2)
            time.sleep(0.1)
    try:
        assert idle.recv(1) == b""  # the server closed it
    finally:
        idle.close()
    assert set(threading.enumerate()) == threads_before
    with pytest.raises(RuntimeError):
        server.address
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))


def test_it_can_run_on_a_chosen_port():
    with DNSServer(ZONE) as first:
        port = first.port
    with DNSServer(ZONE, port=port) as second:
        assert second.address == ("127.0.0.1", port)
        assert texts(lookup(second, "mx1.example.test", "A")) == ["127.0.0.2"]
