"""Running short synchronous work on an event loop when it needs nothing but memory.

The SMTP server's sender checks are synchronous functions that may wait for the DNS, the
database or a virus scanner, so they run in threads. Most of the time they wait for
nothing: the DNS answers are cached and the database facts remembered. A trip to a thread
and back then costs more than the check (a third of an SMTP worker's CPU per message, from
handing the interpreter lock back and forth), so the server first runs the check on the
loop itself, inside in_memory(), and goes to a thread only when the check finds that it
would have to wait.

Code that is about to wait calls must_wait() first. Inside in_memory() that raises
WouldBlock, which unwinds the check; the caller then runs the whole check again in a
thread. So a check run this way must do nothing before its first wait that it cannot do
twice (the checks compute; they log and count at the end).

WouldBlock derives from BaseException, not Exception: libraries between the check and the
lookup (pyspf, dkimpy) turn the exceptions of a lookup they call into a result ("DNS
error"), and this one must reach the caller untouched.
"""
import threading
from contextlib import contextmanager

_state = threading.local()


class WouldBlock(BaseException):
    """Raised by must_wait() inside in_memory(): the work needs I/O; run it in a thread."""


def active():
    """Whether this thread is inside in_memory()."""
    return getattr(_state, "active", False)


@contextmanager
def in_memory():
    """Within the block, code of this thread that would wait for I/O raises WouldBlock."""
    previous = active()
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


def must_wait(what):
    """Say that the caller is about to wait for `what` (a DNS query, the database…)."""
    if active():
        raise WouldBlock(what)
