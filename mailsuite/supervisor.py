"""A small process supervisor: runmail and multi-worker daemons use it.

Children are started as subprocesses in our process group (so a terminal's Ctrl-C
reaches them), are sent SIGTERM by the kernel if we die without stopping them (so a
kill -9 of the supervisor leaves no orphan serving ports), are restarted with growing
backoff if they exit on their own, and on SIGINT/SIGTERM are asked to stop with
SIGTERM, then killed after a timeout.
"""
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("mailsuite.supervisor")


@dataclass
class Child:
    name: str
    argv: list
    env: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None
    failures: int = 0
    restart_at: float = 0.0
    started_at: float = 0.0


_PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent():
    """preexec_fn for Popen: the child gets SIGTERM when its parent dies (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def manage_py(*args):
    """argv that runs a manage.py command with this interpreter."""
    base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable, os.path.join(base, "manage.py"), *args]


class Supervisor:
    def __init__(self, children, *, stop_timeout=15.0, poll=0.2):
        self.children = children
        self.stop_timeout = stop_timeout
        self.poll = poll
        self.stopping = False

    def _start(self, child):
        env = {**os.environ, **child.env}
        child.process = subprocess.Popen(child.argv, env=env, preexec_fn=die_with_parent)
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def _on_signal(self, signum, frame):
        if not self.stopping:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping = True

    def run(self):
        """Supervise until SIGINT/SIGTERM; returns the exit status for the command."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping:
                time.sleep(self.poll)
                self._check_children()
            return self._stop_all()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _check_children(self):
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.restart_at and not self.stopping:
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None or self.stopping:
                continue
            # A child that ran a while before dying starts its backoff over.
            child.failures = 1 if now - child.started_at > 60 else child.failures + 1
            delay = min(30.0, 0.5 * 2 ** (child.failures - 1))
            log.error("%s exited with status %s; restarting in %.1fs", child.name, code, delay)
            child.process = None
            child.restart_at = now + delay

    def _stop_all(self):
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
        log.info("all services stopped")
        return 0
