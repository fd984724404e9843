"""Which connection-level defences a local domain asked for (mta.models.InboundPolicy).

Every RCPT needs the answer, so each SMTP process keeps all the policies (a handful of rows:
only domains that changed a default have one) in memory and reloads them after TTL
seconds: an operator's change reaches RCPT within that time. Domain aliases share their
target's policy. `get()` is safe on the event loop while the copy is fresh (it never
touches the database then); `load()` runs the query, off the loop.
"""
import threading
import time
from dataclasses import dataclass

from django.conf import settings

TTL = 10.0  # seconds; a test seam (tests set 0: every lookup reloads)
clock = time.monotonic


@dataclass(frozen=True)
class Policy:
    greylisting: bool = False
    attachments: str = ""  # "" = the server's MAILSUITE_ATTACHMENT_POLICY

    @property
    def attachment_action(self):
        return self.attachments or settings.MAILSUITE_ATTACHMENT_POLICY


DEFAULT = Policy()
_lock = threading.Lock()
_state = {"loaded_at": None, "policies": {}}  # domain name (ASCII) -> Policy


def _fresh():
    loaded_at = _state["loaded_at"]
    return loaded_at is not None and TTL > 0 and clock() - loaded_at < TTL


def load():
    """Read every domain's policy from the database (and keep it for TTL seconds)."""
    from accounts.models import DomainAlias
    from mta.models import InboundPolicy

    policies = {}
    by_domain_id = {}
    for row in InboundPolicy.objects.select_related("domain"):
        policy = Policy(greylisting=row.greylisting, attachments=row.attachments)
        policies[row.domain.name] = by_domain_id[row.domain_id] = policy
    if by_domain_id:
        for name, target_id in DomainAlias.objects.filter(target_id__in=by_domain_id, active=True).values_list(
            "name", "target_id"
        ):
            policies[name] = by_domain_id[target_id]
    with _lock:
        _state["policies"] = policies
        _state["loaded_at"] = clock()
    return policies


def cached(domain):
    """The policy of `domain` (ASCII, lower case) if the in-memory copy is fresh, else None."""
    if not _fresh():
        return None
    return _state["policies"].get(domain, DEFAULT)


def get(domain):
    """The policy of `domain`, reloading when stale (touches the database: not on the loop)."""
    policy = cached(domain)
    if policy is None:
        policy = load().get(domain, DEFAULT)
    return policy


def forget():
    """Drop the in-memory copy (tests, and after a change made in this process)."""
    with _lock:
        _state["loaded_at"] = None
