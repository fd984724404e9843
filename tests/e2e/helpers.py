"""Running real mailsuite processes for end-to-end tests."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from mailsuite.supervisor import die_with_parent

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=90.0, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before opening port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


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
