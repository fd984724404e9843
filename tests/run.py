#!/usr/bin/env python
"""`make test`: the whole suite on SQLite, then again on PostgreSQL when it is reachable.

Fails when any run fails or collects no tests; says plainly what it skipped.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlparse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_URL = os.environ.get("MAILSUITE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# The PostgreSQL pass is for what touches storage. These suites drive real clients and a
# browser against the servers to prove interoperability; the database under them adds
# nothing the rest of the pass does not already cover, so they run once, on SQLite.
INTEROP_ONLY = [
    "tests/browser",
    "tests/e2e/test_imap_clients.py",
    "tests/pop3/test_fetchmail.py",
    "tests/pop3/test_getmail.py",
]


def reachable(url):
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def run(label, env, extra):
    print(f"\n=== {label} ===", flush=True)
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--durations=15", *extra, *sys.argv[1:]]
    code = subprocess.call(command, cwd=ROOT, env=env)
    print(f"=== {label}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'} in {time.monotonic() - started:.0f}s ===", flush=True)
    return code


def main():
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # Tests get a data dir of their own: the SQLite test database, TLS pair and blobs.
    base["MAILSUITE_DATA_DIR"] = data_dir = tempfile.mkdtemp(prefix="mailsuite-test-")
    try:
        results = {"SQLite": run("tests on SQLite", base, [])}
        if reachable(PG_URL):
            pg_env = {**base, "DATABASE_URL": PG_URL}
            skipped = [f"--ignore={path}" for path in INTEROP_ONLY]
            print(f"\n(PostgreSQL pass: the client-interoperability suites ran on SQLite only: {', '.join(INTEROP_ONLY)})")
            results["PostgreSQL"] = run("tests on PostgreSQL", pg_env, ["-m", "not sqlite_only", *skipped])
        else:
            print(f"\n=== SKIPPED: PostgreSQL not reachable at {PG_URL}; storage tests ran on SQLite only ===")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print("\nsummary: " + ", ".join(f"{name} {'ok' if code == 0 else 'FAILED'}" for name, code in results.items()))
    # pytest exits 5 when it collected nothing: that is a failure too.
    sys.exit(0 if all(code == 0 for code in results.values()) else 1)


if __name__ == "__main__":
    main()
