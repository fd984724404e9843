"""Failed-login throttling shared by every protocol: per client IP and per address.

Implementation notes:
- State lives in the database (LoginThrottle), so every process on every machine sees
  the same counts. One row per (kind, key), updated in place: a failure costs one short
  transaction (insert-if-missing, lock, update), a check one indexed SELECT.
- Each row counts failures in a window that starts at its first failure. Reaching the
  threshold blocks the key for MAILSUITE_LOGIN_BLOCK_INITIAL seconds, doubled for each
  further block in a row, up to MAILSUITE_LOGIN_BLOCK_MAX; the next window starts when
  the block ends. A window that ends without a block forgets the row (failures and
  blocks in a row), so a row whose window has ended may simply be deleted.
- While a key is blocked, attempts are refused before any password check and are not
  counted: they learn nothing, and counting them would let a block feed itself.
- A success deletes the address's row (not the IP's: one right password from an IP
  says nothing about the others it tried).
- IPv6 clients are counted per network (MAILSUITE_LOGIN_IPV6_PREFIX, /64 by default):
  one host usually holds a whole /64. Loopback and trusted networks get no exemption.
- Rows are locked in one order ((kind, key) sorted), so concurrent failures on
  PostgreSQL never deadlock; on SQLite the transaction itself is exclusive.
"""
import functools
import ipaddress
import math
import operator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import LoginThrottled
from accounts.models import LoginThrottle
from mailsuite.lib.addresses import AddressError, normalize_address

# The clock: tests replace it (accounts.throttle.now = ...); callers use throttle.now().
now = timezone.now

MAX_KEY = 320


@dataclass(frozen=True)
class Policy:
    threshold: int  # failures in a window that earn a block; 0: this kind is not throttled
    window: timedelta
    first_block: timedelta
    max_block: timedelta

    def block_length(self, blocks_before):
        doubled = self.first_block * 2 ** min(blocks_before, 32)
        return min(doubled, self.max_block)


def policy(kind):
    threshold = (
        settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP
        if kind == LoginThrottle.IP
        else settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_ACCOUNT
    )
    return Policy(
        threshold=threshold,
        window=timedelta(seconds=settings.MAILSUITE_LOGIN_FAILURE_WINDOW),
        first_block=timedelta(seconds=settings.MAILSUITE_LOGIN_BLOCK_INITIAL),
        max_block=timedelta(seconds=settings.MAILSUITE_LOGIN_BLOCK_MAX),
    )


# Keys ---------------------------------------------------------------------------------


def parse_ip(remote_ip):
    """An ip_address for `remote_ip` (IPv4-mapped IPv6 unwrapped, zone dropped), or None."""
    if not remote_ip:
        return None
    try:
        ip = ipaddress.ip_address(str(remote_ip).strip().split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def ip_key(remote_ip):
    """The throttle key of a client IP: the address itself, or its /64 (by default) for IPv6."""
    ip = parse_ip(remote_ip)
    if ip is None:
        # Not an IP (a Unix socket, a proxy's odd value): count it as given, if anything.
        text = str(remote_ip or "").strip()
        return text[:MAX_KEY] or None
    if ip.version == 6:
        prefix = settings.MAILSUITE_LOGIN_IPV6_PREFIX
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    return str(ip)


def account_key(address):
    """The throttle key of an address as typed: normalised, so Alice@EXAMPLE.test counts as alice@example.test.

    Domain aliases are not followed (that would cost queries before every check): an
    address in an alias domain is counted on its own, and the per-IP count still applies.
    """
    text = str(address or "").strip()
    try:
        text = normalize_address(text)
    except AddressError:
        text = text.lower()
    return text[:MAX_KEY]


def keys_for(address, remote_ip):
    """[(kind, key)] that are throttled for this attempt, in locking order."""
    keys = []
    if policy(LoginThrottle.ACCOUNT).threshold:
        keys.append((LoginThrottle.ACCOUNT, account_key(address)))
    ip = ip_key(remote_ip)
    if ip is not None and policy(LoginThrottle.IP).threshold:
        keys.append((LoginThrottle.IP, ip))
    return sorted(keys)


def _matching(keys):
    return LoginThrottle.objects.filter(functools.reduce(operator.or_, (Q(kind=kind, key=key) for kind, key in keys)))


# Checking and counting -----------------------------------------------------------------


def check(address, remote_ip, *, at=None):
    """Raise LoginThrottled if the IP or the address is blocked now (one query).

    Returns the kinds that have a row (counted failures or a block), so that a login
    that succeeds need not clear the address's count when there is none to clear.
    """
    keys = keys_for(address, remote_ip)
    if not keys:
        return set()
    at = at or now()
    rows = list(_matching(keys).values_list("kind", "blocked_until"))
    blocks = [(kind, until) for kind, until in rows if until is not None and until > at]
    longest = max(blocks, key=lambda block: block[1], default=None)
    if longest is not None:
        kind, until = longest
        raise LoginThrottled(retry_after=max(1, math.ceil((until - at).total_seconds())), scope=kind)
    return {kind for kind, _ in rows}


def _count_failure(row, at, rules):
    """Apply one failure at `at` to `row` (locked); True if it starts a block."""
    if row.window_start + rules.window <= at:
        # The last window ended without a block: start afresh.
        row.window_start, row.failures, row.blocks = at, 0, 0
    row.failures += 1
    row.last_failure = at
    if row.failures < rules.threshold:
        return False
    until = at + rules.block_length(row.blocks)
    row.blocked_until = max(until, row.blocked_until or until)
    row.blocks += 1
    row.failures = 0
    row.window_start = row.blocked_until  # the next window starts when the block ends
    return True


def record_failure(address, remote_ip, *, at=None):
    """Count one failed login for the address and the IP; returns [(kind, key)] newly blocked.

    Runs in its own transaction, or as part of the caller's.
    """
    keys = keys_for(address, remote_ip)
    if not keys:
        return []
    at = at or now()
    with transaction.atomic(savepoint=False):
        # Insert what is missing before locking anything, in key order: concurrent
        # callers then wait for each other in one order and cannot deadlock.
        LoginThrottle.objects.bulk_create(
            [LoginThrottle(kind=kind, key=key, window_start=at, last_failure=at) for kind, key in keys],
            ignore_conflicts=True,
        )
        rows = list(_matching(keys).select_for_update().order_by("kind", "key"))
        blocked = [(row.kind, row.key) for row in rows if _count_failure(row, at, policy(row.kind))]
        LoginThrottle.objects.bulk_update(
            rows, ["window_start", "failures", "blocks", "blocked_until", "last_failure"]
        )
    return blocked


def record_success(address):
    """A right password for `address`: forget its failures and blocks (the IP's stay)."""
    if policy(LoginThrottle.ACCOUNT).threshold:
        LoginThrottle.objects.filter(kind=LoginThrottle.ACCOUNT, key=account_key(address)).delete()


def active_blocks(at=None):
    """The rows blocked now."""
    return LoginThrottle.objects.filter(blocked_until__gt=at or now())


def expired(at=None):
    """Rows whose window has ended: they carry nothing and may be deleted."""
    at = at or now()
    longest_window = timedelta(seconds=settings.MAILSUITE_LOGIN_FAILURE_WINDOW)
    return LoginThrottle.objects.filter(window_start__lte=at - longest_window)
