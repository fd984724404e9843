#!/usr/bin/env python3
"""Webmail benchmark: server time of the pages a reader uses most, on a 10,000- and a
100,000-message INBOX (issue 6: p50 under 100 ms for list pages, under 300 ms for search,
at 100k).

What is measured, per folder size (`--sizes`, default 10000,100000):
  list        INBOX page 1, newest first
  list-later  a page in the middle of the folder (page = pages / 2)
  list-sorted page 1 sorted by sender (a text sort over every row)
  conv        page 1 grouped by conversation, and conv-later a page an eighth in (read
              from the folder's Conversation rows, which the mail store keeps);
              conv-new page 1 just after a message arrived (one is appended before each
              request, untimed, and they are expunged after: the store keeps its size)
  open        a message opened (the reading view: header, body, neighbours)
  search      a word in about 1 message in 1,000 (the text index), in the folder
  search-all  the same word in every folder; search-from a sender's name
Each request is made `--repeat` times (default 30; different messages and pages where it
makes sense) after one untimed warm-up, and the p50 and p95 are reported with the number
of SQL statements one such request ran, and the p50 of the CPU time the request took in
this process (its Python work; SQLite runs in the same thread): on a shared machine the
wall time also holds the waits for a core, which the CPU time leaves out.

Implementation notes:
- Server time: the requests go through Django's test client in this process, with the
  whole middleware stack, session and CSRF; no socket and no browser, so the figure is
  what the server spends, from the request object to the rendered response.
- A fresh MAILSUITE_DATA_DIR under /tmp (SQLite, WAL) or with `--database postgres` a
  fresh database beside --pg-url, dropped afterwards; the directory is removed at the end.
  `--data-dir DIR` keeps the SQLite store there and a later run reuses it (loading 100k
  messages takes minutes): only the messages it lacks are added.
- The code measured is a `git archive` of HEAD unpacked in that directory (others edit
  the working tree meanwhile), with this script as it is; `--in-place` measures the
  working tree instead, `--source DIR` another tree.
- Loading uses the mail store's bulk path (mailstore.actions.append_many, 500 messages a
  transaction, parsed by its thread pool). fsync is skipped while loading (`--fsync` keeps
  it): how fast the store is filled is not what this measures.
- The messages: 1.5-6 KB of text, 300 senders, dates one hour apart, conversations of
  four (a message and three replies carrying References), three quarters read, one in
  1,000 holding the search word.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the project's `webmail` package: take bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
DOMAIN = "bench.test"
USER = f"reader@{DOMAIN}"
PASSWORD = "bench-password-1"
NEEDLE = "zanzibarquux"
NEEDLE_EVERY = 1000
BATCH = 500
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"

_WORDS = (
    "meeting budget report invoice travel schedule project review draft contract team "
    "customer order delivery payment question answer update notes agenda lunch office "
    "holiday release server backup network printer account password training plan"
).split()
_NAMES = ["Ana", "Bruno", "Carla", "Dmitri", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas",
          "Kavya", "Luca", "Maya", "Nils", "Olga", "Pablo", "Qiu", "Rosa", "Sven", "Tariq"]


def make_message(index):
    """A deterministic message; every fourth starts a conversation, the next three reply."""
    rng = random.Random(index)
    root = index - index % 4
    sender = f"{_NAMES[index % 20]} {_NAMES[(index // 20) % 20]}"
    address = f"{_NAMES[index % 20].lower()}.{(index // 20) % 15}@example.org"
    topic = " ".join(_WORDS[(root * 7 + k) % len(_WORDS)] for k in range(3))
    subject = f"{topic} #{root}" if index == root else f"Re: {topic} #{root}"
    words = [rng.choice(_WORDS) for _ in range(200 + rng.randrange(700))]
    if index % NEEDLE_EVERY == 7:
        words.insert(len(words) // 2, NEEDLE)
    lines = [" ".join(words[k : k + 12]) for k in range(0, len(words), 12)]
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_600_000_000 + index * 3600))
    header = [
        f"From: {sender} <{address}>", f"To: {USER}", f"Subject: {subject}", f"Date: {date}",
        f"Message-ID: <m{index}@bench.example.org>", "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
    ]
    if index != root:
        header += [f"In-Reply-To: <m{index - 1}@bench.example.org>",
                   "References: " + " ".join(f"<m{k}@bench.example.org>" for k in range(root, index))]
    return ("\r\n".join(header) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n").encode()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# The measuring process (runs inside the copy, with the data dir set) --------------------------


def measure(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
    if not args.fsync:
        os.fsync = lambda fd: None  # a throwaway store: durability is not what is measured
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts import actions as accounts
    from mailstore import actions as store
    from mailstore.models import Folder, Message
    from webmail.models import Preferences

    call_command("migrate", verbosity=0)
    from accounts.models import Account

    account = Account.objects.filter(localpart=USER.split("@")[0], domain__name=DOMAIN).first()
    if account is None:
        accounts.create_domain(DOMAIN)
        account = accounts.create_account(USER, password=PASSWORD, quota=0)
    results = {"sizes": {}, "database": connection.vendor}
    # A kept data dir (--data-dir) holds what an earlier run loaded: only the rest is added.
    loaded = Message.objects.filter(folder__account=account, folder__name="INBOX").count()
    for size in args.sizes:
        if loaded > size:
            print(f"  {size:>7} skipped: the kept store holds {loaded} messages already", flush=True)
            continue
        started = time.monotonic()
        for first in range(loaded, size, BATCH):
            batch = range(first, min(first + BATCH, size))
            store.append_many(account, "INBOX", [
                (make_message(i), ("\\Seen",) if i % 4 != 3 else (), None) for i in batch
            ])
        load_seconds = time.monotonic() - started
        loaded = size
        with connection.cursor() as cursor:
            # Fresh statistics, as a long-lived database has; on PostgreSQL also what
            # autovacuum would have done by then: the visibility map (index-only scans
            # skip the table) and the GIN indexes' pending entries merged (pg_trgm).
            cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
        inbox = Folder.objects.get(account=account, name="INBOX")
        assert Message.objects.filter(folder=inbox).count() == size, "the load fell short"
        client = Client(HTTP_HOST="localhost")
        answer = client.post("/login/", {"address": USER, "password": PASSWORD})
        assert answer.status_code == 302, answer.status_code
        pages = -(-size // 50)
        rng = random.Random(size)
        base = f"/f/{inbox.pk}/"
        uids = list(Message.objects.filter(folder=inbox).values_list("uid", flat=True))

        def grouped(on):
            Preferences.objects.update_or_create(account=account, defaults={"conversations": on})

        arrived = []

        def after_arrival(path):
            """The page as the first view after a message arrived (the append is untimed)."""
            def url():
                [message] = store.append_many(account, "INBOX", [(make_message(size + len(arrived)), (), None)])
                arrived.append(message.uid)
                return path
            return url

        cases = [
            ("list", lambda: base, False),
            ("list-later", lambda: f"{base}?page={pages // 2 + rng.randrange(-5, 6)}", False),
            ("list-sorted", lambda: f"{base}?sort=from", False),
            ("conv", lambda: base, True),
            ("conv-later", lambda: f"{base}?page={pages // 8 + rng.randrange(-5, 6)}", True),
            ("conv-new", after_arrival(base), True),
            ("open", lambda: f"{base}m/{rng.choice(uids)}/", False),
            ("search", lambda: f"{base}?q={NEEDLE}", False),
            ("search-all", lambda: f"/search/?q={NEEDLE}", False),
            ("search-from", lambda: f"{base}?from={rng.choice(_NAMES)}+{rng.choice(_NAMES)}", False),
        ]
        figures = {}
        for name, url, conversations in cases:
            grouped(conversations)
            client.get(url())  # warm-up, untimed
            timings, cpu = [], []
            for _ in range(args.repeat):
                target = url()
                t0, c0 = time.perf_counter(), time.thread_time()
                response = client.get(target)
                cpu.append((time.thread_time() - c0) * 1000)
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (target, response.status_code)
            target = url()  # outside the count: conv-new's append is not the page's
            with CaptureQueriesContext(connection) as captured:
                client.get(target)
            queries = list(captured)  # now: the next request resets the connection's log
            if name in args.profile:
                _profile(client, url)
            figures[name] = {
                "p50_ms": round(statistics.median(timings), 1), "p95_ms": round(percentile(timings, 0.95), 1),
                "cpu_p50_ms": round(statistics.median(cpu), 1), "queries": len(queries),
            }
            print(f"  {size:>7} {name:<12} p50 {figures[name]['p50_ms']:7.1f} ms  p95 {figures[name]['p95_ms']:7.1f} ms"
                  f"  cpu p50 {figures[name]['cpu_p50_ms']:7.1f} ms  {figures[name]['queries']:2d} queries", flush=True)
        grouped(False)
        if arrived:
            store.expunge(inbox, arrived)
        results["sizes"][size] = {"load_seconds": round(load_seconds, 1), "figures": figures}
    print("RESULT " + json.dumps(results), flush=True)


def _profile(client, url, requests=10):
    """Where a page's time goes: cProfile over a few requests, the top functions."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(url())
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)


# The driver -------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="INBOX sizes, ascending (default 10000,100000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page kind (30)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--fsync", action="store_true", help="keep fsync while loading")
    parser.add_argument("--in-place", action="store_true", help="measure the working tree, not a copy of HEAD")
    parser.add_argument("--source", help="measure this tree (e.g. a git archive of another commit)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--data-dir", help="keep the loaded store in this directory and reuse it on the next run (SQLite)")
    parser.add_argument("--profile", default="", help="page kinds to profile (cProfile), comma-separated")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = sorted(int(n) for n in args.sizes.split(","))
    args.profile = [name for name in args.profile.split(",") if name]
    if args.measure:
        measure(args)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-webmail-"))
    database = None
    try:
        source = Path(args.source).resolve() if args.source else ROOT
        if not args.in_place and not args.source:
            source = work / "src"
            source.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
            shutil.copy2(Path(__file__).resolve(), source / "bench" / "webmail.py")  # this script as it is now
        data = Path(args.data_dir).resolve() if args.data_dir else work / "data"
        data.mkdir(exist_ok=True)
        env = dict(os.environ, MAILSUITE_DATA_DIR=str(data), MAILSUITE_SECURE_COOKIES="0", MAILSUITE_LOG_LEVEL="WARNING")
        env.pop("DATABASE_URL", None)
        if args.database == "postgres":
            import psycopg

            database = f"bench_webmail_{os.getpid()}"
            with psycopg.connect(args.pg_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            env["DATABASE_URL"] = args.pg_url.rsplit("/", 1)[0] + "/" + database
        argv = [sys.executable, str(source / "bench" / "webmail.py"), "--measure", "--sizes", ",".join(map(str, args.sizes)),
                "--repeat", str(args.repeat), "--profile", ",".join(args.profile)] + (["--fsync"] if args.fsync else [])
        print(f"webmail bench: {args.database}, sizes {args.sizes}, {args.repeat} requests each, code from "
              f"{'the working tree' if args.in_place else args.source or 'HEAD'} ({source})", flush=True)
        process = subprocess.run(argv, cwd=source, env=env, stdout=subprocess.PIPE, text=True)
        result = None
        for line in process.stdout.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
            else:
                print(line)
        if process.returncode != 0 or result is None:
            print("FAILED", file=sys.stderr)
            return 1
        _report(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        if database:
            import psycopg

            with psycopg.connect(args.pg_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


TARGETS = {"list": 100, "list-later": 100, "list-sorted": 100, "conv": 100, "conv-later": 100, "conv-new": 100, "search": 300, "search-all": 300, "search-from": 300}


def _report(result):
    sizes = list(result["sizes"])
    print(f"\n| page ({result['database']}) | " + " | ".join(f"{int(s):,}: p50 / p95 ms, CPU p50 ms (queries)" for s in sizes) + " | target p50 |")
    print("|---|" + "---|" * len(sizes) + "---|")
    names = list(result["sizes"][sizes[0]]["figures"])
    for name in names:
        cells = []
        for size in sizes:
            figure = result["sizes"][size]["figures"][name]
            cells.append(f"{figure['p50_ms']} / {figure['p95_ms']}, {figure.get('cpu_p50_ms', '?')} ({figure['queries']})")
        target = TARGETS.get(name)
        print(f"| {name} | " + " | ".join(cells) + f" | {f'< {target} ms' if target else '—'} |")
    print("\nloading: " + ", ".join(f"{int(s):,} in {result['sizes'][s]['load_seconds']} s" for s in sizes))


if __name__ == "__main__":
    sys.exit(main())
