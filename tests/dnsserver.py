"""A real authoritative DNS server on loopback, so DNS-dependent code is tested over the wire.

    with DNSServer({
        "example.test": {"MX": [(10, "mx1.example.test")], "TXT": ["v=spf1 -all"]},
        "mx1.example.test": {"A": ["127.0.0.2"]},
    }) as dns_server:
        settings.MAILSUITE_DNS_SERVERS = (dns_server.address,)
        dns_server.set("mx1.example.test", "A", ["127.0.0.3"])  # takes effect at once
        dns_server.fail("example.test")                          # SERVFAIL from now on
        dns_server.delay("mx1.example.test", 5)                  # answer 5 s late
        assert ("example.test", "MX") in dns_server.queries

Record values, one list per type (a bare string counts as a one-item list):
  A, AAAA      "127.0.0.2", "::2"
  MX           (10, "mx1.example.test"); (0, ".") is the null MX of RFC 7505
  TXT          "v=spf1 -all", split into 255-octet character-strings if longer;
               a tuple of strings gives the character-strings explicitly
  CNAME, PTR, NS   "target.example.test"
  SOA          (mname, rname, serial, refresh, retry, expire, minimum)
  any other type   its presentation format, e.g. SRV (10, 5, 25, "mx1.example.test")
Answers carry TTL 0 unless `ttl` says otherwise: resolvers (ours caches) keep nothing, so a
`set` takes effect at once for the code under test too. Give a TTL to test caching.

Names are absolute whether or not they end in a dot, match case-insensitively, and must be
ASCII: IDNA names are given in their xn-- form, so the test states exactly which encoding
the code under test must produce.

Zones are implied by the data. The apex of a name's zone is its closest ancestor that has
an explicit SOA, else its topmost ancestor that has records; a SOA is synthesised there
when none is given. Names under no such apex are outside our data: queried directly they
get NXDOMAIN with the closest existing ancestor's (often the root's) SOA, as the root would
answer for an unknown TLD.

Implementation notes:
- One asyncio event loop in one background thread owns both sockets. The test thread only
  touches the record data, under `_lock`; an answer is computed under the lock, so a query
  sees the records before or after a `set`, never half of one.
- Values are turned into dnspython rdata when given, so a malformed record fails in the
  test that wrote it rather than as a SERVFAIL later.
- Over UDP a response larger than the client's limit (512 octets, or its EDNS payload
  capped at ours, 1232) is truncated with TC set, so a client retries over TCP.
- A delay holds one answer, not the server: other names answer at once. On one TCP
  connection queries are answered in order, so a delayed one holds those behind it.
- `stop` closes both listeners and every TCP connection and cancels delayed answers before
  the thread ends: nothing outlives the `with` block.
- Deliberately absent: wildcards, delegations (NS records are plain data, never
  referrals), additional-section processing, zone transfers, DNSSEC.
"""
import asyncio
import errno
import ipaddress
import logging
import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset

logger = logging.getLogger(__name__)

IN = dns.rdataclass.IN
CLASSIC_UDP_LIMIT = 512  # RFC 1035 §4.2.1
OUR_UDP_PAYLOAD = 1232  # DNS Flag Day 2020: the EDNS size that avoids IP fragmentation
CHARACTER_STRING_MAX = 255  # RFC 1035 §3.3: one length octet
MAX_CNAME_HOPS = 8
MAX_TCP_CONNECTIONS = 64
TCP_IDLE_SECONDS = 10  # RFC 7766 §6.2.3 suggests seconds, not minutes
BIND_ATTEMPTS = 50
THREAD_TIMEOUT_SECONDS = 10


class DNSServer:
    """Authoritative DNS over UDP and TCP on one loopback port; see the module docstring."""

    def __init__(self, zones=None, *, ttl=0, host="127.0.0.1", port=0):
        self.ttl = ttl
        self.queries = []  # (name, type) of every question received, in order
        self.tcp_queries = []  # the subset that arrived over TCP
        self._host = host
        self._requested_port = port
        self._address = None
        self._lock = threading.Lock()
        self._records = {}  # dns.name.Name -> {rdatatype: tuple of rdata}
        self._existing = set()  # names with records and all their ancestors
        self._serial = 1
        self._failing = set()
        self._delays = {}
        self._loop = None
        self._thread = None
        self._udp = None
        self._tcp = None
        self._connections = set()
        self._pending_sends = set()
        with self._lock:
            for name, rrsets in (zones or {}).items():
                for rtype, values in rrsets.items():
                    self._store(parse_name(name), parse_type(rtype), values)
            self._reindex()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def address(self):
        """("127.0.0.1", port): the same port serves UDP and TCP."""
        if self._address is None:
            raise RuntimeError("the DNS server is not running")
        return self._address

    @property
    def port(self):
        return self.address[1]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        if self._thread is not None:
            raise RuntimeError("the DNS server is already running")
        udp, tcp = bind_udp_and_tcp(self._host, self._requested_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"dns-server-{udp.getsockname()[1]}", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(udp, tcp), self._loop).result(THREAD_TIMEOUT_SECONDS)
        except BaseException:
            udp.close()
            tcp.close()
            self.stop()
            raise
        self._address = udp.getsockname()[:2]

    def stop(self):
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(THREAD_TIMEOUT_SECONDS)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(THREAD_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                raise RuntimeError("the DNS server thread did not stop")
            self._loop.close()
            self._thread = self._loop = None
            self._address = None

    async def _open(self, udp, tcp):
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=udp)
        self._tcp = await asyncio.start_server(self._serve_tcp_connection, sock=tcp)

    async def _close(self):
        if self._tcp is not None:
            self._tcp.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        for handle in self._pending_sends:
            handle.cancel()
        self._pending_sends.clear()
        if self._udp is not None:
            self._udp.close()
        self._udp = self._tcp = None
        # Transports close their sockets in a callback scheduled by close(): let it run.
        await asyncio.sleep(0)

    # -- records and faults (called from the test thread) -------------------------------

    def set(self, name, rtype, values):
        """Replace the records of one type at `name`; an empty list removes them."""
        name, rdtype = parse_name(name), parse_type(rtype)
        with self._lock:
            self._store(name, rdtype, values)
            self._reindex()

    def remove(self, name, rtype=None):
        """Remove one type of record at `name`, or all of them; absent records are fine."""
        name = parse_name(name)
        with self._lock:
            if rtype is None:
                self._records.pop(name, None)
            else:
                self._store(name, parse_type(rtype), [])
            self._reindex()

    def fail(self, name, failing=True):
        """Answer SERVFAIL to every question about `name` (exactly this name), or stop."""
        name = parse_name(name)
        with self._lock:
            if failing:
                self._failing.add(name)
            else:
                self._failing.discard(name)

    def delay(self, name, seconds):
        """Hold answers to questions about `name` for `seconds`; 0 answers at once again."""
        name = parse_name(name)
        with self._lock:
            if seconds > 0:
                self._delays[name] = seconds
            else:
                self._delays.pop(name, None)

    def _store(self, name, rdtype, values):
        rdatas = make_rdatas(rdtype, values)
        rrsets = self._records.get(name, {})
        others = set(rrsets) - {rdtype}
        # RFC 2181 §10.1: a CNAME is the only record at its name, and there is one of it.
        if rdatas and rdtype == dns.rdatatype.CNAME and (others or len(rdatas) > 1):
            raise ValueError(f"{display(name)}: a CNAME must be the only record at its name")
        if rdatas and dns.rdatatype.CNAME in others:
            raise ValueError(f"{display(name)} has a CNAME: it can hold no other record")
        if rdatas:
            self._records[name] = {**rrsets, rdtype: rdatas}
        elif others:
            self._records[name] = {rtype: rrsets[rtype] for rtype in others}
        else:
            self._records.pop(name, None)

    def _reindex(self):
        self._existing = {ancestor for name in self._records for ancestor in self_and_ancestors(name)}
        self._serial += 1

    # -- answering (called in the server thread) ----------------------------------------

    def answer(self, wire, transport):
        """(response bytes or None for no reply, seconds to hold it) for one query."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # bytes from the network: anything unparseable is the client's fault
            return format_error(wire), 0
        if query.flags & dns.flags.QR:
            return None, 0  # never answer a response: two servers could loop forever
        response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
        delay = 0
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)  # RFC 6891 §6.1.3
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            question = query.question[0]
            self._log(question, transport)
            with self._lock:
                delay = self._delays.get(question.name, 0)
                try:
                    self._answer_question(response, question)
                except Exception:
                    logger.exception("dns server: failed to answer %s", question)
                    response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD)
                    response.set_rcode(dns.rcode.SERVFAIL)
        return self._render(response, query, transport), delay

    def _log(self, question, transport):
        entry = (display(question.name), dns.rdatatype.to_text(question.rdtype))
        self.queries.append(entry)
        if transport == "tcp":
            self.tcp_queries.append(entry)

    def _answer_question(self, response, question):
        qname, qtype = question.name, question.rdtype
        if question.rdclass != IN:
            response.set_rcode(dns.rcode.REFUSED)
        elif qname in self._failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif dns.rdatatype.is_metatype(qtype) and qtype != dns.rdatatype.ANY:
            response.set_rcode(dns.rcode.NOTIMP)  # zone transfers and the like
        else:
            response.flags |= dns.flags.AA
            self._resolve(response, qname, qtype)

    def _resolve(self, response, qname, qtype):
        """Fill in the answer, following CNAMEs within our data (RFC 1034 §4.3.2)."""
        name = qname
        visited = set()
        for _ in range(MAX_CNAME_HOPS + 1):
            rrsets = self._records.get(name)
            if rrsets is None:
                if name != qname and self._zone_apex(name) is None:
                    return  # the target is not ours: the resolver continues from the CNAME
                if name not in self._existing:
                    response.set_rcode(dns.rcode.NXDOMAIN)  # RFC 6604: rcode of the last name
                response.authority.append(self._negative_soa(name))
                return
            if qtype == dns.rdatatype.ANY:
                response.answer.extend(self._rrset(name, rdtype, rdatas) for rdtype, rdatas in rrsets.items())
                return
            if qtype in rrsets:
                response.answer.append(self._rrset(name, qtype, rrsets[qtype]))
                return
            if qtype == dns.rdatatype.SOA and self._zone_apex(name) == name:
                response.answer.append(self._rrset(name, qtype, [self._synthesised_soa(name)]))
                return
            cname = rrsets.get(dns.rdatatype.CNAME)
            if cname is None:
                response.authority.append(self._negative_soa(name))  # NODATA, RFC 2308 §2.2
                return
            response.answer.append(self._rrset(name, dns.rdatatype.CNAME, cname))
            visited.add(name)
            name = cname[0].target
            if name in visited:
                return  # a CNAME loop: give what we have, as authoritative servers do

    def _zone_apex(self, name):
        """The closest ancestor with a SOA, else the topmost with records; None if neither."""
        topmost = None
        for ancestor in self_and_ancestors(name):
            rrsets = self._records.get(ancestor)
            if rrsets is None:
                continue
            if dns.rdatatype.SOA in rrsets:
                return ancestor
            topmost = ancestor
        return topmost

    def _negative_soa(self, name):
        apex = self._zone_apex(name)
        if apex is None:  # outside our data: answer as the closest existing ancestor would
            apex = next(a for a in self_and_ancestors(name) if a in self._existing or a == dns.name.root)
        given = self._records.get(apex, {}).get(dns.rdatatype.SOA)
        soa = given[0] if given else self._synthesised_soa(apex)
        # RFC 2308 §3: a negative answer's SOA TTL is the lesser of its TTL and MINIMUM.
        return dns.rrset.from_rdata_list(apex, min(self.ttl, soa.minimum), [soa])

    def _synthesised_soa(self, apex):
        return dns.rdtypes.ANY.SOA.SOA(
            IN,
            dns.rdatatype.SOA,
            mname=dns.name.Name(("ns",) + apex.labels),
            rname=dns.name.Name(("hostmaster",) + apex.labels),
            serial=self._serial,
            refresh=3600,
            retry=600,
            expire=86400,
            minimum=self.ttl,
        )

    def _rrset(self, name, rdtype, rdatas):
        return dns.rrset.from_rdata_list(name, self.ttl, list(rdatas))

    def _render(self, response, query, transport):
        if transport == "udp":
            limit = CLASSIC_UDP_LIMIT if query.edns < 0 else min(query.payload, OUR_UDP_PAYLOAD)
            # RFC 2181 §9: what does not fit is left out and TC tells the client to use TCP.
            return response.to_wire(max_size=max(limit, CLASSIC_UDP_LIMIT), prefer_truncation=True)
        try:
            return response.to_wire(max_size=65535)
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    async def _serve_tcp_connection(self, reader, writer):
        """RFC 7766: two-octet length, then the message; several queries per connection."""
        if len(self._connections) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                    wire = await asyncio.wait_for(reader.readexactly(int.from_bytes(prefix, "big")), TCP_IDLE_SECONDS)
                except (asyncio.IncompleteReadError, TimeoutError):
                    return
                response, delay = self.answer(wire, "tcp")
                if response is None:
                    continue
                if delay:
                    await asyncio.sleep(delay)
                writer.write(len(response).to_bytes(2, "big") + response)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._connections.discard(task)
            writer.close()

    def _send_later(self, seconds, send, *args):
        def fire():
            self._pending_sends.discard(handle)
            send(*args)

        handle = self._loop.call_later(seconds, fire)
        self._pending_sends.add(handle)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server):
        self.server = server
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        response, delay = self.server.answer(data, "udp")
        if response is None:
            return
        if delay:
            self.server._send_later(delay, self.transport.sendto, response, addr)
        else:
            self.transport.sendto(response, addr)

    def error_received(self, exc):
        pass  # an ICMP error about a client that gave up waiting: nothing to do


def bind_udp_and_tcp(host, port):
    """A bound UDP socket and a bound TCP socket on the same port; port 0 picks a free one."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    for _ in range(BIND_ATTEMPTS if port == 0 else 1):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # For TCP only: on Linux, SO_REUSEADDR on UDP would let two servers share a port.
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            udp.bind((host, tcp.getsockname()[1]))
            return udp, tcp
        except OSError as exc:
            tcp.close()
            udp.close()
            if port != 0 or exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no port on {host} was free for both UDP and TCP")


def format_error(wire):
    """FORMERR for a message we cannot parse, if its header is there to answer."""
    if len(wire) < 12 or wire[2] & 0x80:  # too short for a header, or itself a response
        return None
    response = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    response.flags = dns.flags.QR
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()


def parse_name(name):
    if isinstance(name, dns.name.Name):
        return name.derelativize(dns.name.root)
    if not name or not name.isascii():
        raise ValueError(f"{name!r}: give names in ASCII; IDNA names in their xn-- form")
    return dns.name.from_text(name)


def parse_type(rtype):
    rdtype = dns.rdatatype.RdataType.make(rtype)
    if dns.rdatatype.is_metatype(rdtype):
        raise ValueError(f"{dns.rdatatype.to_text(rdtype)} is not a record type")
    return rdtype


def make_rdatas(rdtype, values):
    if isinstance(values, str | bytes | dns.rdata.Rdata):
        values = [values]
    rdatas = []
    for value in values:
        rdata = make_rdata(rdtype, value)
        if rdata not in rdatas:  # RFC 2181 §5: an RRset holds no duplicates
            rdatas.append(rdata)
    return tuple(rdatas)


def make_rdata(rdtype, value):
    if isinstance(value, dns.rdata.Rdata):
        if value.rdtype != rdtype:
            raise ValueError(f"{value!r} is not a {dns.rdatatype.to_text(rdtype)} record")
        return value
    if rdtype == dns.rdatatype.TXT:
        return make_txt(value)
    if isinstance(value, tuple | list):
        value = " ".join(str(part) for part in value)
    return dns.rdata.from_text(IN, rdtype, value, origin=dns.name.root, relativize=False)


def make_txt(value):
    """A str or bytes is split into 255-octet character-strings; a tuple gives them as is."""
    if isinstance(value, tuple | list):
        strings = [as_bytes(part) for part in value]
    else:
        data = as_bytes(value)
        step = CHARACTER_STRING_MAX
        strings = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(IN, dns.rdatatype.TXT, strings)


def as_bytes(text):
    return text.encode() if isinstance(text, str) else bytes(text)


def self_and_ancestors(name):
    while True:
        yield name
        if name == dns.name.root or not name.is_absolute():
            return
        name = name.parent()


def display(name):
    """The query-log form of a name: lower case, no final dot ("." for the root)."""
    return name.to_text(omit_final_dot=True).lower()
