"""Running real mailsuite processes for end-to-end tests."""
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from mailsuite.supervisor import die_with_parent
from tests import isolation

ROOT = Path(__file__).resolve().parents[2]


# Ports for servers a test starts later, taken below the kernel's ephemeral range (32768 and up
# by default), so no outgoing connection can take one between its choice and its bind. Each test
# process (both passes' xdist workers: tests/isolation.py numbers them 0-15) has a block of its own.
_PORT_BLOCK, _PORT_BASE = 1300, 10000
_next_port = itertools.count()


def free_port(*hosts):
    """A port no test process of this run has been given, free now on every host given (default 127.0.0.1)."""
    first = _PORT_BASE + _PORT_BLOCK * (isolation.redis_db() % 16)
    for _ in range(_PORT_BLOCK):
        port = first + next(_next_port) % _PORT_BLOCK
        try:
            for host in hosts or ("127.0.0.1",):
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port in {first}-{first + _PORT_BLOCK - 1}")


def wait_for_port(port, timeout=90.0, process=None, log=None):
    """Wait until something listens on 127.0.0.1:port; a failure shows the end of the server's `log` file."""
    def tail():
        return "\n" + Path(log).read_text(errors="replace")[-4000:] if log else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before opening port {port}{tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s{tail()}")


def test_database_url():
    """A DATABASE_URL for a child process that points at the database this test uses."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(data_dir, **extra):
    """Environment for a mailsuite child process sharing this test's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSUITE_")}
    env.pop("DATABASE_URL", None)
    env["MAILSUITE_DATA_DIR"] = str(data_dir)
    env["DATABASE_URL"] = test_database_url()
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(*args, env, **kwargs):
    """A manage.py child that the kernel stops if this test process dies."""
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT,
                            preexec_fn=die_with_parent, **kwargs)


def children_of(pid):
    """Process ids of pid's direct children (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def settings_blob_location(settings_fixture, data_dir):
    settings_fixture.STORAGES = {
        **settings.STORAGES,
        "blobs": {**settings.STORAGES["blobs"], "OPTIONS": {"location": Path(data_dir) / "blobs"}},
    }
