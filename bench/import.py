#!/usr/bin/env python3
"""Import benchmark: `manage.py mail import` of an N-message Maildir (issue 12).

Writes a Maildir of N small messages (about 1 KB each, a tenth with flags, spread over
an INBOX and two Maildir++ folders) into a temporary directory, creates an account in a
fresh SQLite data dir, then runs `manage.py mail import` on it in a subprocess and
reports messages/s and the child's peak RSS (ru_maxrss). A second run of the same import
measures the resume path (everything already there).

Target (issue 12): more than 500 messages/s, memory flat in the number of messages:
run with -n 10000 and -n 100000 and compare peak RSS.

    .venv/bin/python bench/import.py -n 10000
"""
import argparse
import os
import resource
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
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before), done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=10000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, MAILSUITE_DATA_DIR=str(tmp / "data"))
        env.pop("DATABASE_URL", None)
        make_maildir(tmp / "Maildir", options.messages)
        run(env, "migrate", "--no-input", "-v", "0")
        run(env, "domain", "add", "example.test")
        run(env, "account", "add", "bench@example.test", "--quota", "0")
        elapsed, peak, out = run(env, "mail", "import", "bench@example.test", str(tmp / "Maildir"))
        print(out.strip().splitlines()[-1])
        print(f"import: {options.messages} messages in {elapsed:.1f}s (process start included): "
              f"{options.messages / elapsed:.0f} msg/s, peak RSS {peak / 1024:.0f} MB")
        elapsed, _, out = run(env, "mail", "import", "bench@example.test", str(tmp / "Maildir"))
        print(f"rerun (all already there): {elapsed:.1f}s")


if __name__ == "__main__":
    main()
