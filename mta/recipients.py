"""SMTP policy for one RCPT TO: which reply, and where the mail will go.

Pure decisions over the account data; no sockets. Replies carry RFC 3463 enhanced
status codes.
"""
import time
from dataclasses import dataclass

from accounts.errors import DisabledRecipient, ExpansionTooLarge, NotLocal, UnknownRecipient
from accounts.resolve import Resolution, resolve
from mailsuite.lib.addresses import AddressError, normalize_address
from mta import forwarding
from mta.models import SmartHost


@dataclass
class Client:
    """What the server knows about the SMTP client when it decides."""

    ip: str
    authenticated: str | None = None  # the account address after SMTP AUTH
    trusted: bool = False  # in MAILSUITE_TRUSTED_NETWORKS

    @property
    def may_relay(self):
        return bool(self.authenticated) or self.trusted


@dataclass
class Decision:
    reply: str
    resolution: Resolution | None = None

    @property
    def accepted(self):
        return self.resolution is not None


def check_recipient(address, *, client, declared_size=0, cache=None):
    """Decide RCPT TO:<address>. `declared_size` is the MAIL FROM SIZE= value, if any.

    A local address's resolution is remembered in `cache` (a ResolutionCache), if given.
    """
    if forwarding.is_srs(address):
        # A bounce (or reply) to a sender we rewrote when forwarding: send it back.
        try:
            original = forwarding.reverse(address)
        except forwarding.SRSError as error:
            return Decision(f"550 5.1.1 <{address}>: {error}")
        return Decision("250 2.1.5 Ok", Resolution(address=address, external=[original], relayed=True))
    try:
        resolution = resolve(address)
    except AddressError:
        return Decision(f"501 5.1.3 <{address}>: bad recipient address syntax")
    except NotLocal:
        return _not_local(address, client)
    except UnknownRecipient:
        return Decision(f"550 5.1.1 <{address}>: no such user here")
    except DisabledRecipient:
        return Decision(f"550 5.2.1 <{address}>: mailbox disabled")
    except ExpansionTooLarge:
        return Decision(f"550 5.7.1 <{address}>: list too large to deliver to")
    if cache is not None:
        cache.put(address, resolution)
    return decide(address, resolution, declared_size)


def _not_local(address, client):
    try:
        normalized = normalize_address(address)
    except AddressError:
        return Decision(f"501 5.1.3 <{address}>: bad recipient address syntax")
    relay = SmartHost.objects.filter(domain=normalized.rpartition("@")[2], accept_relay=True).first()
    if relay is not None:
        refusal = verify_relay_recipient(relay, normalized)
        if refusal:
            return Decision(refusal)
    elif not client.may_relay:
        return Decision(f"554 5.7.1 <{address}>: relay access denied")
    return Decision("250 2.1.5 Ok", Resolution(address=normalized, external=[normalized], relayed=True))


_verified = {}  # (next hop, address) -> (expires, refusal or None): callout results


def verify_relay_recipient(relay, address):
    """None if the relay domain's next hop will take `address`, else the refusal."""
    if relay.verify_recipients == SmartHost.Verify.LIST:
        listed = {line.strip().lower() for line in relay.recipients.splitlines() if line.strip()}
        return None if address.lower() in listed else f"550 5.1.1 <{address}>: no such user here"
    if relay.verify_recipients != SmartHost.Verify.CALLOUT:
        return None
    key = (relay.host, relay.port, address.lower())
    cached = _verified.get(key)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    from mta.client import DeliveryError, verify_recipient
    from mta.routing import route_for

    try:
        reply = verify_recipient(route_for(relay.domain), address)
    except DeliveryError:
        return f"450 4.1.1 <{address}>: recipient not verified: next hop unreachable, try later"
    if reply.code < 300:
        refusal, ttl = None, 600
    elif reply.code < 500:
        refusal, ttl = f"450 4.1.1 <{address}>: recipient not verified: {reply}", 60
    else:
        refusal, ttl = f"550 5.1.1 <{address}>: recipient rejected by the next hop: {reply}", 600
    if len(_verified) > 10000:
        _verified.clear()
    _verified[key] = (time.monotonic() + ttl, refusal)
    return refusal


def decide(address, resolution, declared_size):
    """The reply for a local recipient's resolution."""
    mailboxes = list(resolution.accounts.values())
    # A message needs at least one byte of room; refuse only when no mailbox has it.
    if mailboxes and not resolution.external and all(a.over_quota_with(max(declared_size, 1)) for a in mailboxes):
        return Decision(f"452 4.2.2 <{address}>: mailbox full")
    return Decision("250 2.1.5 Ok", resolution)


class ResolutionCache:
    """Recent resolutions of local recipients, per SMTP worker process.

    Mail for one address tends to come in runs; remembering its resolution for a
    couple of seconds saves a database round trip per RCPT. Only found recipients are
    kept, never refusals, and the quota figure they carry is only an early hint:
    delivery checks the quota again, under lock. A change to an account, alias or
    domain reaches RCPT within `ttl` seconds.
    """

    def __init__(self, ttl=2.0, max_entries=10000, clock=time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.entries = {}

    def put(self, address, resolution):
        if self.ttl <= 0:
            return
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[address.lower()] = (self.clock() + self.ttl, resolution)

    def get(self, address):
        entry = self.entries.get(address.lower())
        if entry is None:
            return None
        if entry[0] < self.clock():
            del self.entries[address.lower()]
            return None
        return entry[1]
