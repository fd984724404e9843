"""The resolver keeps answers for their TTL, per set of configured servers, and says when a
lookup would have to leave the process."""
import dns.resolver
import pytest

from mailsuite.lib import inline
from mta import routing
from tests.dnsserver import DNSServer

ZONE = {
    "example.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject"]},
}


def lookups(server, name, rtype):
    return [q for q in server.queries if q == (name, rtype)]


def test_it_asks_once_while_the_answer_lives(settings):
    with DNSServer(ZONE, ttl=300) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        for _ in range(3):
            answer = routing.resolver().resolve("example.test", "TXT", search=False)
            assert [b"".join(r.strings) for r in answer] == [b"v=spf1 -all"]
        assert len(lookups(server, "example.test", "TXT")) == 1


def test_it_remembers_that_a_name_does_not_exist(settings):
    with DNSServer(ZONE, ttl=300) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        for _ in range(3):
            with pytest.raises(dns.resolver.NXDOMAIN):
                routing.resolver().resolve("nothere.example.test", "A", search=False)
        assert len(lookups(server, "nothere.example.test", "A")) == 1


def test_it_asks_again_when_the_ttl_is_zero(settings):
    with DNSServer(ZONE) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        routing.resolver().resolve("example.test", "TXT", search=False)
        server.set("example.test", "TXT", ["v=spf1 +all"])
        answer = routing.resolver().resolve("example.test", "TXT", search=False)
        assert [b"".join(r.strings) for r in answer] == [b"v=spf1 +all"]
        assert len(lookups(server, "example.test", "TXT")) == 2


def test_other_servers_do_not_share_answers(settings):
    with DNSServer(ZONE, ttl=300) as first, DNSServer({"example.test": {"TXT": ["other"]}}, ttl=300) as second:
        settings.MAILSUITE_DNS_SERVERS = (first.address,)
        routing.resolver().resolve("example.test", "TXT", search=False)
        settings.MAILSUITE_DNS_SERVERS = (second.address,)
        answer = routing.resolver().resolve("example.test", "TXT", search=False)
        assert [b"".join(r.strings) for r in answer] == [b"other"]


# In memory only (mailsuite.lib.inline): what the cache holds is answered, anything else
# stops with WouldBlock before a query leaves.


def test_in_memory_a_lookup_the_cache_cannot_answer_would_block(settings):
    with DNSServer(ZONE, ttl=300) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        with inline.in_memory(), pytest.raises(inline.WouldBlock):
            routing.resolver().resolve("example.test", "TXT", search=False)
        assert server.queries == []


def test_in_memory_cached_answers_are_given(settings):
    with DNSServer(ZONE, ttl=300) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        routing.resolver().resolve("example.test", "TXT", search=False)
        with pytest.raises(dns.resolver.NXDOMAIN):
            routing.resolver().resolve("nothere.example.test", "A", search=False)
        with pytest.raises(dns.resolver.NoAnswer):
            routing.resolver().resolve("example.test", "MX", search=False)
        asked = len(server.queries)
        with inline.in_memory():
            answer = routing.resolver().resolve("example.test", "TXT", search=False)
            assert [b"".join(r.strings) for r in answer] == [b"v=spf1 -all"]
            with pytest.raises(dns.resolver.NXDOMAIN):
                routing.resolver().resolve("nothere.example.test", "A", search=False)
            with pytest.raises(dns.resolver.NoAnswer):
                routing.resolver().resolve("example.test", "MX", search=False)
            with pytest.raises(inline.WouldBlock):
                routing.resolver().resolve("example.test", "A", search=False)  # a type not asked yet
        assert len(server.queries) == asked


def test_in_memory_an_expired_answer_would_block(settings):
    with DNSServer(ZONE) as server:  # TTL 0: nothing is kept
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        routing.resolver().resolve("example.test", "TXT", search=False)
        with inline.in_memory(), pytest.raises(inline.WouldBlock):
            routing.resolver().resolve("example.test", "TXT", search=False)
