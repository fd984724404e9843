#!/usr/bin/env python
"""`make test`: the whole suite on SQLite and on PostgreSQL (when it is reachable), side by side.

Each pass runs in several pytest-xdist workers (whole test files per worker, so a module's
fixtures are built once); tests/isolation.py gives every worker its own data dir and Redis
database. The first pass streams its output; the others write log files printed as each
ends, so outputs never interleave. Fails when any pass fails or collects no tests; says
plainly what it skipped.

MAILSUITE_TEST_WORKERS sets the workers per pass (default: 2 per core, as much of the suite
waits on sockets and subprocesses); MAILSUITE_TEST_SEQUENTIAL=1 runs the passes one after the
other; extra arguments go to pytest (e.g. `tests/run.py tests/imap -x`).
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
sys.path.insert(0, ROOT)
from tests import storage_pass  # noqa: E402
PG_URL = os.environ.get("MAILSUITE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# The PostgreSQL pass is for what touches storage. These suites drive real clients and a
# browser against the servers to prove interoperability; the database under them adds
# nothing the rest of the pass does not already cover, so they run once, on SQLite.
INTEROP_ONLY = [
    "tests/browser",
    "tests/api/test_docs_browser.py",
    "tests/migration/test_browser.py",
    "tests/secmail/test_browser.py",
    "tests/e2e/test_imap_clients.py",
    "tests/pop3/test_fetchmail.py",
    "tests/pop3/test_getmail.py",
]
NO_TESTS_COLLECTED = 5  # pytest's exit status
REDIS_DBS_PER_PASS = 8  # tests/isolation.py counts a pass's Redis databases down from its first


def reachable(url):
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def workers():
    value = os.environ.get("MAILSUITE_TEST_WORKERS", "")
    if value:
        if not value.isdigit():
            sys.exit(f"MAILSUITE_TEST_WORKERS={value!r}: expected a number of processes (0 = no xdist)")
        return int(value)
    return min(2 * (os.cpu_count() or 1), REDIS_DBS_PER_PASS)


class Pass:
    def __init__(self, label, env, extra, log_dir):
        self.label = label
        self.log_path = os.path.join(log_dir, label.replace(" ", "-") + ".log")
        count = workers()
        parallel = ["-n", str(count), "--dist", "loadfile"] if count else []
        self.command = [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--durations=15",
            *parallel, *extra, *sys.argv[1:],
        ]
        self.env = env
        self.process = None
        self.started = None

    def start(self, stream):
        print(f"=== {self.label}: started ({' '.join(self.command[1:])}) ===", flush=True)
        self.started = time.monotonic()
        output = None if stream else open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT)
        if output:
            output.close()

    def finish(self, stream):
        code = self.process.wait()
        report = storage_pass.read_report(self.env[storage_pass.ENV]) if storage_pass.ENV in self.env else None
        if code == NO_TESTS_COLLECTED and report and report[0] == 0 and report[1]:
            # The selection (e.g. `tests/run.py tests/imap/test_parser.py`) has no test that uses
            # a database: the SQLite pass runs it all; this pass has nothing to add.
            print(f"=== {self.label}: none of the {len(report[1])} tests selected uses a database ===", flush=True)
            code = 0
        if not stream:
            print(f"\n=== {self.label}: output ===", flush=True)
            with open(self.log_path, "rb") as log:
                shutil.copyfileobj(log, sys.stdout.buffer)
            sys.stdout.flush()
        print(f"=== {self.label}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'} "
              f"in {time.monotonic() - self.started:.0f}s ===", flush=True)
        return code


def warm_bytecode(env):
    """Compile every module once, test modules with pytest's assertion rewriting, into a cache
    outside the tree (PYTHONPYCACHEPREFIX, under .venv). Without it each of the passes' workers
    rewrote every test module while collecting, and each of the suite's manage.py children
    compiled the project from source: about 2 s of CPU a child on this machine kind, where
    PYTHONDONTWRITEBYTECODE is set."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", os.path.join(ROOT, ".venv", "pycache"))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"/(\.venv|var|node_modules)/", ROOT],
                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"],
                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    print(f"(bytecode cached in {env['PYTHONPYCACHEPREFIX']} in {time.monotonic() - started:.0f}s)", flush=True)


def main():
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    base["PYTHONUNBUFFERED"] = "1"
    warm_bytecode(base)
    work = tempfile.mkdtemp(prefix="mailsuite-test-")
    passes = []
    try:
        # Each pass gets a data dir of its own: the SQLite test database, TLS pair, blobs.
        sqlite_dir = os.path.join(work, "sqlite")
        os.makedirs(sqlite_dir)
        passes.append(Pass("tests on SQLite", {**base, "MAILSUITE_DATA_DIR": sqlite_dir, "MAILSUITE_TEST_REDIS_DB": "15"}, [], work))
        if reachable(PG_URL):
            pg_dir = os.path.join(work, "postgres")
            os.makedirs(pg_dir)
            pg_env = {**base, "MAILSUITE_DATA_DIR": pg_dir, "DATABASE_URL": PG_URL,
                      "MAILSUITE_TEST_REDIS_DB": str(15 - REDIS_DBS_PER_PASS)}
            skipped = [f"--ignore={path}" for path in INTEROP_ONLY]
            print(f"(PostgreSQL pass: the client-interoperability suites run on SQLite only: {', '.join(INTEROP_ONLY)}; "
                  "so do the tests that use no database, counted at the end of its output)")
            # tests/storage_pass.py deselects the tests that use no database and lists them here.
            pg_env[storage_pass.ENV] = os.path.join(work, "postgres-deselected.txt")
            passes.append(Pass("tests on PostgreSQL", pg_env, ["-m", "not sqlite_only", *skipped], work))
        else:
            print(f"=== SKIPPED: PostgreSQL not reachable at {PG_URL}; storage tests run on SQLite only ===", flush=True)
        sequential = os.environ.get("MAILSUITE_TEST_SEQUENTIAL") == "1" or len(passes) == 1
        results = {}
        if sequential:
            for p in passes:
                p.start(stream=True)
                results[p.label] = p.finish(stream=True)
        else:
            # The first pass streams as it runs; the others are printed when they end.
            for i, p in enumerate(passes):
                p.start(stream=i == 0)
            for i, p in enumerate(passes):
                results[p.label] = p.finish(stream=i == 0)
    finally:
        for p in passes:
            if p.process and p.process.poll() is None:
                p.process.kill()
        shutil.rmtree(work, ignore_errors=True)
    print("\nsummary: " + ", ".join(f"{label} {'ok' if code == 0 else 'FAILED'}" for label, code in results.items()))
    # pytest exits 5 when it collected nothing: that is a failure too.
    sys.exit(0 if results and all(code == 0 for code in results.values()) else 1)


if __name__ == "__main__":
    main()
