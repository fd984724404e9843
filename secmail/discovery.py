"""Finding recipients' OpenPGP keys while composing (the compose page's readiness line).

When the user turns encryption on or adds a recipient, secmail.compose.readiness asks
find_keys() for the recipients without a key: each is looked up in its domain's Web Key
Directory (secmail.wkd), and what is found is kept as a PeerKey (source WKD), so the next
question is answered from the database.

Bounds: at most MAX_LOOKUPS addresses per request, WORKERS at a time, LOOKUP_TIMEOUT
seconds per HTTP request (two requests when the advanced method's host is unreachable and
the direct one is tried; so a request waits at most about 2 × LOOKUP_TIMEOUT ×
⌈MAX_LOOKUPS / WORKERS⌉).
A miss (no key, an unusable one, or a server that did not answer) is remembered for
MISS_SECONDS in Django's cache, so typing in the To field does not ask again. Addresses
of the domains this server serves are not looked up: their keys are the local accounts'
published ones, which secmail.outgoing already finds.
The worker threads only fetch and inspect keys (HTTP and gpg); the database is written
from the request's own thread.
"""
import hashlib
from concurrent.futures import ThreadPoolExecutor

from django.core.cache import cache

from ops.domains import of_address
from secmail import actions, wkd

LOOKUP_TIMEOUT = 4
MAX_LOOKUPS = 8
WORKERS = 4
MISS_SECONDS = 3600


def _miss_key(address):
    return "secmail:wkd-miss:" + hashlib.sha256(address.encode("utf-8")).hexdigest()


def find_keys(account, addresses):
    """Look the addresses up by WKD; returns the set of those for which a key was found and kept."""
    due = []
    for address in dict.fromkeys(a.lower() for a in addresses):
        if len(due) >= MAX_LOOKUPS:
            break
        domain = address.rpartition("@")[2]
        if "." not in domain.strip(".") or of_address(address) or cache.get(_miss_key(address)):
            continue
        due.append(address)
    if not due:
        return set()
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(due)), thread_name_prefix="secmail-wkd") as pool:
        results = list(pool.map(lambda address: wkd.lookup(address, timeout=LOOKUP_TIMEOUT), due))
    found = set()
    for address, result in zip(due, results):
        if result is not None and actions.keep_wkd_key(account, address, result) is not None:
            found.add(address)
        else:
            cache.set(_miss_key(address), 1, MISS_SECONDS)
    return found
