"""Admin changelists and API lists/searches at scale: p50/p95 per page.

Fills a fresh database (SQLite in a temporary data dir, or PostgreSQL with --pg-url: a
database made for the run and dropped after) with --accounts accounts (default 100,000)
and --aliases aliases (default 1,000,000, one target each) over --domains domains, then
times each page --runs times in-process through Django's test client, as a superadmin
and as a domain admin of the first domain. Target: p50 under 150 ms. Beside the wall
time, the request's CPU time in this process (SQLite runs in it), which a machine busy
with other work does not inflate.

    .venv/bin/python bench/admin.py                      # the full size, SQLite
    .venv/bin/python bench/admin.py --accounts 10000 --aliases 100000 --runs 10
    .venv/bin/python bench/admin.py --pg-url postgres://postgres@127.0.0.1:5432/postgres
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCH = 5000


def parse():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--aliases", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pg-url", help="PostgreSQL server URL; a database is made for the run and dropped")
    return parser.parse_args()


def setup(args):
    data_dir = tempfile.mkdtemp(prefix="bench-admin-")
    os.environ["MAILSUITE_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
    database = None
    if args.pg_url:
        import psycopg

        database = f"bench_admin_{os.getpid()}"
        with psycopg.connect(args.pg_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        os.environ["DATABASE_URL"] = args.pg_url.rsplit("/", 1)[0] + "/" + database
    else:
        os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    return data_dir, database


def teardown(args, database):
    if database:
        from django.db import connections

        connections.close_all()
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}"')


def fill(args):
    """Rows written directly (bulk_create): this measures reading, not the write path."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from accounts.models import Account, Alias, AliasTarget, Domain, DomainAdmin
    from api import actions as api_actions

    started = time.monotonic()
    Domain.objects.bulk_create(Domain(name=f"d{i:04}.example") for i in range(args.domains))
    domains = list(Domain.objects.order_by("name"))
    for start in range(0, args.accounts, BATCH):
        Account.objects.bulk_create(
            Account(domain=domains[i % len(domains)], localpart=f"user{i:07}", quota=2**30, quota_used=i)
            for i in range(start, min(start + BATCH, args.accounts))
        )
    for start in range(0, args.aliases, BATCH):
        made = Alias.objects.bulk_create(
            Alias(domain=domains[i % len(domains)], localpart=f"list{i:07}")
            for i in range(start, min(start + BATCH, args.aliases))
        )
        AliasTarget.objects.bulk_create(
            AliasTarget(alias=alias, address=f"user{n % max(1, args.accounts):07}@{alias.domain.name}")
            for n, alias in enumerate(made, start)
        )
    users = get_user_model()
    root = users.objects.create_superuser("root", "root@admin.invalid", "x")
    alice = users.objects.create_user("alice", "alice@admin.invalid", "x", is_staff=True)
    DomainAdmin.objects.create(user=alice, domain=domains[0])
    _, root_token = api_actions.create_token("root", ["*"])
    _, alice_token = api_actions.create_token("alice", ["*"])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # both databases plan with statistics, as a live one would have
    print(f"filled {args.accounts} accounts, {args.aliases} aliases in {args.domains} domains "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    return {"root": (root, root_token), "alice": (alice, alice_token)}


PAGES = [
    ("admin", "account list", "/admin/accounts/account/"),
    ("admin", "account search user00042", "/admin/accounts/account/?q=user00042"),
    ("admin", "account search user0099999 (last)", "/admin/accounts/account/?q=user0099999"),
    ("admin", "account search @d0001.example", "/admin/accounts/account/?q=%40d0001.example"),
    ("admin", "alias list", "/admin/accounts/alias/"),
    ("admin", "alias search list00042", "/admin/accounts/alias/?q=list00042"),
    ("admin", "alias search list0999999 (last)", "/admin/accounts/alias/?q=list0999999"),
    ("admin", "alias search by target user0099999", "/admin/accounts/alias/?q=user0099999"),
    ("admin", "audit log", "/admin/accounts/auditentry/"),
    ("api", "accounts", "/api/v1/accounts/"),
    ("api", "accounts search user00042", "/api/v1/accounts/?search=user00042"),
    ("api", "accounts search user0099999 (last)", "/api/v1/accounts/?search=user0099999"),
    ("api", "accounts of a domain", "/api/v1/accounts/?domain=d0001.example"),
    ("api", "aliases", "/api/v1/aliases/"),
    ("api", "aliases search list00042", "/api/v1/aliases/?search=list00042"),
    ("api", "aliases search list0999999 (last)", "/api/v1/aliases/?search=list0999999"),
    ("api", "stats", "/api/v1/stats/"),
    ("api", "stats counted afresh", "/api/v1/stats/?uncached"),
]


def measure(args, people):
    from django.test import Client

    from api import views

    cache_seconds = views.STATS_CACHE_SECONDS
    rows = []
    for who, (user, token) in people.items():
        admin = Client()
        admin.force_login(user)
        for kind, name, url in PAGES:
            # The superadmin's stats are counted at most every STATS_CACHE_SECONDS; "afresh" counts each time.
            views.STATS_CACHE_SECONDS = 0 if url.endswith("?uncached") else cache_seconds
            client, headers = (admin, {}) if kind == "admin" else (Client(), {"HTTP_AUTHORIZATION": f"Bearer {token}"})
            response = client.get(url, **headers)  # warm-up, and a check
            assert response.status_code == 200, (who, url, response.status_code)
            times, cpu = [], []
            for _ in range(args.runs):
                started, started_cpu = time.perf_counter(), time.process_time()
                client.get(url, **headers)
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - started_cpu) * 1000)
            times.sort()
            p50, p95 = statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]
            rows.append((who, kind, name, p50, p95, statistics.median(cpu)))
            print(f"{who:6} {kind:5} {name:38} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  CPU p50 {rows[-1][5]:6.1f} ms"
                  f"{'' if p50 < 150 else '  OVER 150 ms'}", flush=True)
    return rows


def main():
    args = parse()
    data_dir, database = setup(args)
    try:
        rows = measure(args, fill(args))
    finally:
        teardown(args, database)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    over = [row for row in rows if row[3] >= 150]
    print(f"{len(rows) - len(over)} of {len(rows)} pages under 150 ms at p50")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
