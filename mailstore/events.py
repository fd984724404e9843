"""Change events: what IMAP IDLE, the webmail and caches listen to.

Events are published only after the transaction that made the change commits
(publish_on_commit), so a listener that reads the database sees the change.
This bus is in-process; a cross-process bus (Redis pub/sub or PostgreSQL
LISTEN/NOTIFY) plugs in behind the same publish/subscribe functions.
"""
import logging
import threading
from dataclasses import dataclass, field

from django.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    kind: str  # "append", "flags", "expunge", "folder"
    account_id: int
    folder_id: int | None = None
    uids: tuple = field(default=())
    modseq: int | None = None


_subscribers = []
_lock = threading.Lock()


def subscribe(callback):
    """Call `callback(change)` for every published change; returns an unsubscribe function."""
    with _lock:
        _subscribers.append(callback)

    def unsubscribe():
        with _lock:
            if callback in _subscribers:
                _subscribers.remove(callback)

    return unsubscribe


def publish(change):
    with _lock:
        listeners = list(_subscribers)
    for callback in listeners:
        try:
            callback(change)
        except Exception:
            log.exception("change listener failed for %r", change)


def publish_on_commit(change):
    transaction.on_commit(lambda: publish(change))
