#!/usr/bin/env python3
"""Import benchmark: `manage.py mail import` of an N-message Maildir (issue 12).

Writes a Maildir of N small messages (about 1 KB each, a tenth with flags, spread over
an INBOX and two Maildir++ folders) into a temporary directory, creates an account in a
fresh SQLite data dir, then runs `manage.py mail import` on it in a subprocess and
reports messages/s and the child's peak RSS (ru_maxrss). A second run of the same import
measures the resume path (everything already there).

Target (issue 12): more than 500 messages/s, memory flat in the number of messages:
run with -n 10000 and -n 100000 and compare peak RSS (the largest process of the import:
each child is waited for with wait4, so each run's figure is its own). On a shared machine
compare the CPU time per message (user + system of the command and its worker processes),
not the wall-clock rate.

--workers N is passed to `mail import` (0: everything in one process, as before the
worker processes; default: the command's own choice, one per core). --compare runs the
import with --workers 0 and then with the default on the same Maildir, each into a fresh
data dir, so that both figures come from the same minutes of a shared machine.

    .venv/bin/python bench/import.py -n 10000
    .venv/bin/python bench/import.py -n 20000 --compare
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_maildir(root, count):
    folders = ["", ".Lists", ".Lists.Python"]
    for folder in folders:
        for sub in ("cur", "new", "tmp"):
            os.makedirs(root / folder / sub, exist_ok=True)
    for i in range(count):
        folder = folders[i % 3]
        flags = ":2,S" if i % 10 else ":2,FRS"
        body = f"Message number {i}.\n" + "Some text to make a realistic small message.\n" * 16
        raw = (
            f"From: sender{i % 97}@elsewhere.test\nTo: bench@example.test\nSubject: bench message {i}\n"
            f"Date: Mon, 15 Jan 2024 10:30:00 +0000\nMessage-ID: <{i}@bench.test>\n\n{body}"
        ).encode()
        name = root / folder / "cur" / f"{1700000000 + i}.M{i}P1.bench{flags}"
        name.write_bytes(raw)


def run(env, *args):
    """(seconds, peak RSS in KB, stdout, CPU seconds) of `manage.py ARGS`; the CPU time is
    the child's and its worker processes' (reaped before it exits), user + system."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if child.returncode:
            sys.exit(f"{' '.join(args)} failed:\n{err.read().decode()}")
        return elapsed, usage.ru_maxrss, out.read().decode(), usage.ru_utime + usage.ru_stime


def import_run(tmp, count, workers, label):
    data = tmp / f"data-{label}"
    env = dict(os.environ, MAILSUITE_DATA_DIR=str(data))
    env.pop("DATABASE_URL", None)
    run(env, "migrate", "--no-input", "-v", "0")
    run(env, "domain", "add", "example.test")
    run(env, "account", "add", "bench@example.test", "--quota", "0")
    extra = [] if workers is None else ["--workers", str(workers)]
    load = os.getloadavg()[0]
    elapsed, peak, out, cpu = run(env, "mail", "import", "bench@example.test", str(tmp / "Maildir"), *extra)
    print(f"[{label}] {out.strip().splitlines()[-1]}")
    print(f"[{label}] import: {count} messages in {elapsed:.1f}s (process start included): "
          f"{count / elapsed:.0f} msg/s, peak RSS {peak / 1024:.0f} MB, load average {load:.1f} at start")
    print(f"[{label}] CPU: {cpu:.1f}s user+system, {1000 * cpu / count:.2f} ms per message (process start included)")
    elapsed, _, out, _ = run(env, "mail", "import", "bench@example.test", str(tmp / "Maildir"), *extra)
    print(f"[{label}] rerun (all already there): {elapsed:.1f}s")
    shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=10000)
    parser.add_argument("--workers", type=int, help="passed to mail import (default: its own choice)")
    parser.add_argument("--compare", action="store_true", help="--workers 0, then the default, back to back")
    options = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_maildir(tmp / "Maildir", options.messages)
        if options.compare:
            import_run(tmp, options.messages, 0, "workers 0")
            import_run(tmp, options.messages, None, "default")
        else:
            import_run(tmp, options.messages, options.workers,
                       "default" if options.workers is None else f"workers {options.workers}")


if __name__ == "__main__":
    main()
