#!/usr/bin/env python3
"""Outbound queue benchmark: messages/s that `manage.py runqueue` relays to discarding SMTP
servers on loopback, embedded broker against Redis, measured in one run.

N messages of about 2 KB, one external recipient each, spread over C destination domains
(d0.bench.test … d{C-1}.bench.test), wait on the outbound queue. A DNS server on loopback
gives every destination an MX on one of H loopback addresses (127.0.0.2 …); on each of
those a discarding SMTP server (aiosmtpd, one process per address; this file serves it
with --serve-discard) counts what it is sent. Then `manage.py runqueue` starts, and the
clock runs from its start until the last recipient row is `delivered`.

Configurations (every combination of the chosen values):
  database     sqlite (the default) or postgres (a database per measurement, created from
               a migrated and filled template beside --pg-url, dropped afterwards)
  broker       embedded (CELERY_BROKER_URL unset: kombu's filesystem transport in the data
               dir) or redis (CELERY_BROKER_URL=--redis-url, a database flushed before each
               measurement and at the end)
  threads      runqueue --concurrency

Implementation notes:
- The queue is filled once per database kind, in a template, by a `manage.py shell -c`
  script calling mta.inbound.accept() (the path SMTP and submission take), 100 messages
  per group commit; each measurement starts from a copy of that data dir (and database).
- The queue's `kick` (a task published when mail is enqueued) is switched off while
  filling, as the tests do: nothing is running then, and the embedded broker would keep
  2,000 stale tasks in the template's broker folder that Redis runs would not have. So in
  every configuration the worker finds the mail through its periodic sweep
  (MAILSUITE_QUEUE_SWEEP_SECONDS=1), which publishes one task per destination with due
  mail; the rate "from worker start" includes the worker's start-up and the first sweep.
  The "steady" rate runs from the first delivery to the last (delivered_at in the DB).
- The bench process polls the database (one GROUP BY over the recipient rows every 50 ms)
  and fails a run at once if a row is deferred or bounced rather than waiting for a retry.
- A measurement counts only if it verifies: every recipient row delivered after exactly one
  attempt, as many DeliveryAttempt rows, no extra queued message (a DSN), and the discard
  servers together received every subject exactly once.
- Measurements alternate (the configuration list starts one place further along each
  round); medians over rounds are reported, and "× embedded" is the median of per-round
  ratios to the embedded broker with the same database and threads.
- mailsuite runs from a copy of the working tree taken at start (others may edit it), or
  --in-place, or from --source DIR. Everything listens on loopback. Every process started
  here is stopped by its id (servers run in their own sessions and are stopped with their
  process group); databases are dropped, the Redis database flushed and the work directory
  removed, also on failure and on Ctrl-C/SIGTERM.
- This file is named like the stdlib's queue module; its directory is taken off sys.path
  before anything is imported, so `import queue` elsewhere still finds the stdlib's.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from bench import smtp_ingest as ingest  # noqa: E402
from bench.smtp_ingest import BenchError, Skip, Verification  # noqa: E402

DATABASE_KEYS = ("sqlite", "postgres")
BROKER_KEYS = ("embedded", "redis")
DESTINATION_SUFFIX = "bench.test"
SENDER = "bench-sender@client.test"
SUBJECT_TAG = "queue"
RELAY_HOSTNAME = "relay.bench-sender.test"  # our HELO name; never one of the MX names
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
FILL_MARKER = "BENCH-FILLED "
FILL_BATCH = 100
POLL_SECONDS = 0.05


def destination(index, destinations):
    return f"d{index % destinations}.{DESTINATION_SUFFIX}"


def mx_address(domain_index, hosts):
    return f"127.0.0.{2 + domain_index % hosts}"


def loopback_hosts(count):
    return [mx_address(i, count) for i in range(count)]


def dns_zones(destinations, hosts):
    zones = {}
    for i in range(destinations):
        domain = destination(i, destinations)
        zones[domain] = {"MX": [(10, f"mx.{domain}")]}
        zones[f"mx.{domain}"] = {"A": [mx_address(i, hosts)]}
    return zones


# Filling the queue (run inside `manage.py shell -c`) --------------------------------------

FILL_CODE = f"""
import json, os
from accounts.resolve import Resolution
from mta import inbound, queue

# As in the tests: publish no task at enqueue time; the worker's sweep finds the mail.
queue.kick = lambda domains: None
with open(os.environ["BENCH_QUEUE_MESSAGES"]) as f:
    messages = json.load(f)
refused = []
for start in range(0, len(messages), {FILL_BATCH}):
    replies = inbound.accept([
        {{"raw": raw.encode("ascii"), "mail_from": "{SENDER}", "client_ip": "127.0.0.1",
          "resolutions": [Resolution(address=rcpt, external=[rcpt], relayed=True)]}}
        for rcpt, raw in messages[start:start + {FILL_BATCH}]
    ])
    refused += [reply for reply in replies if not reply.startswith("250")]
print("{FILL_MARKER}" + json.dumps({{"queued": len(messages) - len(refused), "refused": refused[:3]}}))
"""


def write_messages(path, count, destinations, size):
    """The messages to queue, as [recipient, text] pairs; subjects are ingest's."""
    messages = []
    for i in range(count):
        raw = ingest.message_text(ingest.subject_for(SUBJECT_TAG, i), f"{SUBJECT_TAG}.{i}", size)
        messages.append([f"rcpt{i}@{destination(i, destinations)}", raw.decode("ascii")])
    path.write_text(json.dumps(messages))


# The database: a filled template, a copy per measurement, a cheap probe --------------------


class Probe:
    """Plain SQL on a measurement's database, from this process (no Django here)."""

    def __init__(self, data_dir, database_url):
        if database_url:
            import psycopg

            self.conn = psycopg.connect(database_url, autocommit=True)
        else:
            self.conn = sqlite3.connect(data_dir / "mailsuite.sqlite3", timeout=30, isolation_level=None)

    def rows(self, sql):
        return list(self.conn.execute(sql).fetchall())

    def states(self):
        return dict(self.rows("SELECT state, count(*) FROM mta_queuedrecipient GROUP BY state"))

    def failures(self, limit=3):
        return self.rows("SELECT address, state, last_error FROM mta_queuedrecipient "
                         f"WHERE state IN ('deferred', 'bounced') LIMIT {limit}")

    def delivered_span(self):
        """(first, last) delivered_at as POSIX times."""
        first, last = self.rows("SELECT min(delivered_at), max(delivered_at) FROM mta_queuedrecipient")[0]
        return _posix(first), _posix(last)

    def close(self):
        self.conn.close()


def _posix(value):
    if value is None:
        return None
    if isinstance(value, str):  # SQLite keeps UTC as text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


class QueueSite(ingest.Mailsuite):
    """A migrated data dir (and database) with the queue filled; `manage.py runqueue` on a copy."""

    def __init__(self, database, *, pg_url, source, messages_file, expected_messages):
        super().__init__(database, workers=1, pg_url=pg_url, source=source)
        self.label = "SQLite" if database == "sqlite" else "PostgreSQL"
        self.messages_file = messages_file
        self.expected_messages = expected_messages

    def prepare(self, workdir):
        self.template = workdir / f"template-{self.key}"
        self.template.mkdir()
        url = None
        if self.key == "postgres":
            name = self._db_name("template")
            self._pg(f'CREATE DATABASE "{name}"')
            self.databases.append(name)
            url = self._db_url(name)
        self._manage("migrate", "--noinput", "-v0", data_dir=self.template, database_url=url,
                     what=f"{self.key}: manage.py migrate")
        env = self._env(self.template, url)
        env["BENCH_QUEUE_MESSAGES"] = str(self.messages_file)
        output = ingest.run_checked([ingest.venv_python(), str(self.source / "manage.py"), "shell", "-c", FILL_CODE],
                                    env=env, what=f"{self.key}: filling the queue", timeout=900)
        lines = [line for line in output.splitlines() if line.startswith(FILL_MARKER)]
        if not lines:
            raise BenchError(f"{self.key}: the fill script printed nothing: {output[-300:]}")
        filled = json.loads(lines[-1][len(FILL_MARKER):])
        if filled["queued"] != self.expected_messages:
            raise BenchError(f"{self.key}: queued {filled['queued']} of {self.expected_messages}: {filled['refused']}")

    def copy(self, rundir):
        """A fresh data dir (and database) for one measurement, from the template."""
        self.run_count += 1
        self.data_dir = rundir / "data"
        shutil.copytree(self.template, self.data_dir)
        self.database_url = None
        if self.key == "postgres":
            name = self._db_name(f"run{self.run_count}")
            self._pg(f'CREATE DATABASE "{name}" TEMPLATE "{self.databases[0]}"')
            self.databases.append(name)
            self.database_url = self._db_url(name)

    def start_worker(self, rundir, *, threads, broker_url, dns_port, smtp_port):
        env = self._env(self.data_dir, self.database_url)
        env.update(
            MAILSUITE_DNS_SERVERS=f"127.0.0.1:{dns_port}",
            MAILSUITE_OUTBOUND_PORT=str(smtp_port),
            MAILSUITE_QUEUE_SWEEP_SECONDS="1",
            MAILSUITE_HOSTNAME=RELAY_HOSTNAME,
        )
        env.pop("CELERY_BROKER_URL", None)
        if broker_url:
            env["CELERY_BROKER_URL"] = broker_url
        self.log = rundir / "worker.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [ingest.venv_python(), str(self.source / "manage.py"), "runqueue", "--concurrency", str(threads)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.source,
            )

    def log_tail(self, lines=8):
        """The worker log's ERROR/CRITICAL lines (a traceback's tail hides its cause) and its last lines."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return ""
        errors = [line for line in text if " ERROR " in line or " CRITICAL " in line][:3]
        return "\n" + "\n".join(errors + ["…"] * bool(errors) + text[-lines:])

    def worker_pids(self):
        return [self.process.pid] if self.process else []

    def probe(self):
        return Probe(self.data_dir, self.database_url)

    def verify_queue(self, probe):
        n = self.expected_messages
        states = probe.states()
        if states != {"delivered": n}:
            return Verification(False, f"recipient states {states}, expected {{'delivered': {n}}}")
        [[retried]] = probe.rows("SELECT count(*) FROM mta_queuedrecipient WHERE attempts != 1")
        [[attempts]] = probe.rows("SELECT count(*) FROM mta_deliveryattempt")
        [[queued]] = probe.rows("SELECT count(*) FROM mta_queuedmessage")
        if retried or attempts != n or queued != n:
            return Verification(False, f"{retried} rows not delivered at the first attempt, {attempts} attempts, "
                                       f"{queued} queued messages (expected 0, {n}, {n})")
        return Verification(True, f"{n} rows delivered at the first attempt")

    def drop_run_database(self):
        if self.key == "postgres" and len(self.databases) > 1:
            self._pg(f'DROP DATABASE IF EXISTS "{self.databases[-1]}" WITH (FORCE)')
            self.databases.pop()


# Brokers -----------------------------------------------------------------------------------


class Redis:
    """The Redis database the workers use as broker: ours alone, flushed around every run."""

    def __init__(self, url):
        self.url = url
        self.client = None
        self.pid = None

    def prepare(self):
        try:
            import redis
        except ImportError:
            raise Skip("the redis package is not installed in this Python") from None
        parts = urllib.parse.urlsplit(self.url)
        db = int(parts.path.strip("/") or 0)
        self.client = redis.Redis(parts.hostname or "127.0.0.1", parts.port or 6379, db=db, socket_timeout=5)
        try:
            keys = self.client.dbsize()
            info = self.client.info("server")
        except redis.RedisError as error:
            raise Skip(f"Redis at {self.url} unreachable: {error}") from None
        if keys:
            self.client = None  # not ours: never flush it
            raise BenchError(f"Redis database {db} at {self.url} already holds {keys} keys; this benchmark flushes "
                             f"its database, so give it an unused one (--redis-url), or `redis-cli -n {db} flushdb` "
                             "if they are left from an earlier run")
        if parts.hostname in (None, "127.0.0.1", "localhost") and os.path.exists(f"/proc/{info.get('process_id')}"):
            self.pid = int(info["process_id"])

    def flush(self):
        if self.client is not None:
            self.client.flushdb()

    def cpu(self):
        if self.pid is None:
            return None
        try:
            return ingest.process_tree_cpu(self.pid)
        except OSError:
            return None

    def close(self):
        try:
            self.flush()
        except Exception as error:  # keep cleaning up the rest
            print(f"warning: could not flush {self.url}: {error}", file=sys.stderr)


# The discarding SMTP servers ---------------------------------------------------------------


class Sinks:
    """One discarding aiosmtpd process per MX address, all on one port."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.processes = []
        self.count_files = []

    def start(self, rundir):
        from tests.mta.sink import free_port_on_loopback_hosts

        port = free_port_on_loopback_hosts(*self.hosts)
        for host in self.hosts:
            count_file = rundir / f"sink-{host}.json"
            log = rundir / f"sink-{host}.log"
            with open(log, "wb") as out:
                self.processes.append(subprocess.Popen(
                    [ingest.venv_python(), str(Path(__file__).resolve()), "--serve-discard", f"{host}:{port}",
                     "--count-file", str(count_file)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                ))
            self.count_files.append(count_file)
        ingest.wait_listening(port, len(self.hosts), timeout=30,
                              alive=lambda: all(p.poll() is None for p in self.processes))
        return port

    def cpu(self):
        return sum(ingest.process_tree_cpu(p.pid) for p in self.processes)

    def stop(self):
        for process in self.processes:
            ingest.stop_session(process)
        self.processes = []

    def verify(self, expected):
        subjects, messages = [], 0
        for path in self.count_files:
            try:
                counts = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                return Verification(False, f"the discard server left no count in {path.name}: {error}")
            messages += counts["messages"]
            subjects += counts["subjects"]
        check = ingest._compare_subjects(subjects, expected)
        if check.ok and messages != len(subjects):
            return Verification(False, f"discard servers counted {messages} messages but {len(subjects)} subjects")
        return Verification(check.ok, f"discard servers: {check.detail}")


def serve_discard(host, port, count_file):
    """aiosmtpd accepting and dropping every message, counting them and noting each subject.

    It offers PIPELINING, as Postfix would; the relay then sends MAIL and RCPT in one write.
    """
    from aiosmtpd.smtp import SMTP

    class DiscardHandler:
        def __init__(self):
            self.messages = 0
            self.subjects = []

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_DATA(self, server, session, envelope):
            self.messages += 1
            content = envelope.original_content
            start = content.find(b"\nSubject: ")
            end = content.find(b"\r\n", start + 1)
            self.subjects.append(content[start + 10:end].decode("ascii", "replace") if start >= 0 else "(none)")
            return "250 2.0.0 Ok: discarded"

    async def main():
        handler = DiscardHandler()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname=f"discard-{host}", data_size_limit=50 * 1024 * 1024),
            host=host, port=port, backlog=1024,
        )
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()
        Path(count_file).write_text(json.dumps({"messages": handler.messages, "subjects": handler.subjects}))

    asyncio.run(main())


# Measurements ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    database: str
    broker: str
    threads: int

    @property
    def key(self):
        return f"{self.database}-{self.broker}-t{self.threads}"

    def label(self, sites):
        broker = "embedded broker" if self.broker == "embedded" else "Redis"
        return f"{sites[self.database].label}, {broker}, {self.threads} threads"


@dataclass
class Result:
    config: str
    database: str
    broker: str
    threads: int
    round: int
    messages: int
    elapsed: float  # worker start → last delivery
    rate: float
    steady_rate: float | None  # first delivery → last delivery
    first_delivery_s: float
    worker_cpu_pct: float
    worker_cpu_ms_per_msg: float | None  # after the first delivery, start-up left out
    sink_cpu_pct: float
    broker_cpu_pct: float | None
    busy_pct: float
    background_pct: float
    verified: bool
    detail: str


def wait_all_delivered(site, probe, expected, timeout):
    """Poll until every row is delivered; returns (cpu, delivered) when the first delivery was seen."""
    deadline = time.monotonic() + timeout
    first_seen = None
    while True:
        states = probe.states()
        delivered = states.get("delivered", 0)
        if first_seen is None and delivered:
            first_seen = (site.server_cpu(), delivered)
        if delivered >= expected:
            return first_seen
        if states.get("deferred") or states.get("bounced"):
            raise BenchError(f"delivery failed: {states}; e.g. {probe.failures()}{site.log_tail()}")
        if site.process.poll() is not None:
            raise BenchError(f"the worker exited ({site.process.returncode}) with {states}{site.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{delivered} of {expected} delivered after {timeout}s: {states}{site.log_tail()}")
        time.sleep(POLL_SECONDS)


def measure(config, site, redis, round_no, args, workdir, dns, hosts, profiler):
    rundir = workdir / f"{config.key}-{round_no}"
    rundir.mkdir()
    expected = collections.Counter(ingest.subject_for(SUBJECT_TAG, i) for i in range(args.messages))
    sinks = Sinks(hosts)
    probe = None
    try:
        site.copy(rundir)
        smtp_port = sinks.start(rundir)
        broker_url = None
        if config.broker == "redis":
            redis.flush()
            broker_url = redis.url
        background = ingest.quiet_machine(args.max_background, args.background_wait)
        probe = site.probe()
        sink_cpu_before, broker_cpu_before = sinks.cpu(), redis.cpu() if config.broker == "redis" else None
        busy_before = ingest.cpu_busy_snapshot()
        started_wall, started = time.time(), time.monotonic()
        site.start_worker(rundir, threads=config.threads, broker_url=broker_url, dns_port=dns.port, smtp_port=smtp_port)
        if profiler:
            profiler.start(site.worker_pids(), f"{config.key}-r{round_no}")
        first_cpu, first_count = wait_all_delivered(site, probe, args.messages, args.timeout)
        seen_done = time.monotonic() - started
        busy_after = ingest.cpu_busy_snapshot()
        worker_cpu = site.server_cpu()
        sink_cpu = sinks.cpu() - sink_cpu_before
        broker_cpu = redis.cpu() - broker_cpu_before if broker_cpu_before is not None else None
        if profiler:
            profiler.stop()
        site.stop()
        first, last = probe.delivered_span()
        queue_check = site.verify_queue(probe)
    finally:
        site.stop()
        sinks.stop()
        if probe is not None:
            probe.close()
        if config.broker == "redis":
            redis.flush()
    sink_check = sinks.verify(expected)
    site.drop_run_database()
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    # delivered_at is stamped when the outcome is recorded: exact, unlike our 50 ms polls.
    elapsed = max(last - started_wall, 1e-6) if last else seen_done
    after_first = args.messages - first_count
    return Result(
        config=config.key, database=config.database, broker=config.broker, threads=config.threads, round=round_no,
        messages=args.messages, elapsed=elapsed, rate=args.messages / elapsed,
        steady_rate=(args.messages - 1) / (last - first) if last and first and last > first else None,
        first_delivery_s=first - started_wall if first else seen_done,
        worker_cpu_pct=100 * worker_cpu / seen_done,
        worker_cpu_ms_per_msg=1000 * (worker_cpu - first_cpu) / after_first if after_first else None,
        sink_cpu_pct=100 * sink_cpu / seen_done,
        broker_cpu_pct=100 * broker_cpu / seen_done if broker_cpu is not None else None,
        busy_pct=ingest.busy_percent(busy_before, busy_after),
        background_pct=background,
        verified=queue_check.ok and sink_check.ok,
        detail=f"{queue_check.detail}; {sink_check.detail}",
    )


def progress_line(label, r):
    steady = f"{r.steady_rate:.0f}" if r.steady_rate else "–"
    per_msg = f"{r.worker_cpu_ms_per_msg:.2f} ms/msg" if r.worker_cpu_ms_per_msg is not None else "–"
    broker = f" Redis CPU {r.broker_cpu_pct:.0f}%" if r.broker_cpu_pct is not None else ""
    return (f"  round {r.round + 1} {label:44} {r.rate:6.0f} msg/s (steady {steady}, first after {r.first_delivery_s:.1f} s, "
            f"{r.elapsed:.1f} s)  worker CPU {r.worker_cpu_pct:.0f}% ({per_msg}) sinks {r.sink_cpu_pct:.0f}%{broker} "
            f"busy {r.busy_pct:.0f}% (idle before: {r.background_pct:.0f}%)  [{'ok' if r.verified else 'FAILED'}: {r.detail}]")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec="{:,.0f}"):
    return "–" if value is None else spec.format(value)


def summary_table(results, failed, configs, sites, args):
    """A Markdown table of medians over rounds; `failed` counts the runs that raised, per config."""
    lines = [
        "| database | broker | threads | msg/s median | min–max | × embedded | steady msg/s | first delivery s "
        "| worker CPU | worker CPU ms/msg | sinks CPU | Redis CPU | machine busy | background | runs ok |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    embedded = {(r.database, r.threads, r.round): r.rate for r in results if r.broker == "embedded" and r.verified}
    for config in configs:
        runs = [r for r in results if r.config == config.key]
        good = [r for r in runs if r.verified]
        attempted = len(runs) + failed[config.key]
        if not attempted:
            continue
        rates = [r.rate for r in good]
        ratios = [r.rate / embedded[(r.database, r.threads, r.round)] for r in good
                  if (r.database, r.threads, r.round) in embedded]
        lines.append(
            f"| {sites[config.database].label} | {'embedded' if config.broker == 'embedded' else 'Redis'} | {config.threads} | "
            f"{_fmt(_median(rates))} | {_fmt(min(rates)) if rates else '–'}–{_fmt(max(rates)) if rates else '–'} | "
            f"{_fmt(_median(ratios), '{:.2f}')} | {_fmt(_median([r.steady_rate for r in good]))} | "
            f"{_fmt(_median([r.first_delivery_s for r in good]), '{:.1f}')} | "
            f"{_fmt(_median([r.worker_cpu_pct for r in good]), '{:.0f} %')} | "
            f"{_fmt(_median([r.worker_cpu_ms_per_msg for r in good]), '{:.2f}')} | "
            f"{_fmt(_median([r.sink_cpu_pct for r in good]), '{:.0f} %')} | "
            f"{_fmt(_median([r.broker_cpu_pct for r in good]), '{:.0f} %')} | "
            f"{_fmt(_median([r.busy_pct for r in good]), '{:.0f} %')} | "
            f"{_fmt(_median([r.background_pct for r in good]), '{:.0f} %')} | {len(good)}/{attempted} |"
        )
    size = len(ingest.message_text(ingest.subject_for(SUBJECT_TAG, 0), f"{SUBJECT_TAG}.0", args.size))
    notes = [
        "",
        f"N={args.messages} messages of ~{size:,} octets, one recipient each, over {args.destinations} destination "
        f"domains with MX on {args.mx_hosts} loopback address(es), one discarding aiosmtpd process each; "
        f"{args.runs} rounds, alternating.",
        "msg/s: N / (last delivered_at − worker start), start-up and the first sweep (1 s) included; steady: "
        "(N−1) / (last − first delivered_at).",
        f"CPU columns: 100 % = one core ({os.cpu_count()} here), over worker start → all delivered; worker = runqueue "
        "and its beat child; worker CPU ms/msg counts from the first delivery (start-up left out); "
        "Redis CPU = the whole redis-server; background = machine busy just before the worker started.",
    ]
    return "\n".join(lines + notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=2000, help="messages on the queue (default 2000)")
    parser.add_argument("-c", "--destinations", type=int, default=10,
                        help="destination domains the messages are spread over (default 10)")
    parser.add_argument("--mx-hosts", type=int, default=0,
                        help="loopback addresses (127.0.0.2 …) the MX records spread over, one discard server "
                             "each (default 0 = one per destination, at most 10)")
    parser.add_argument("-r", "--runs", type=int, default=3, help="rounds; every configuration once per round (default 3)")
    parser.add_argument("-b", "--brokers", default="embedded,redis", help=f"comma-separated, from {','.join(BROKER_KEYS)}")
    parser.add_argument("-d", "--databases", default="sqlite", help=f"comma-separated, from {','.join(DATABASE_KEYS)}")
    parser.add_argument("-t", "--threads", default="8", help="comma-separated runqueue --concurrency values (default 8)")
    parser.add_argument("--size", type=int, default=2048, help="approximate message size in octets (default 2048)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
                        help="broker for the redis configurations: a database nobody else uses, flushed before "
                             f"each run and at the end (default $BENCH_REDIS_URL or {DEFAULT_REDIS_URL})")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", ingest.DEFAULT_PG_URL),
                        help=f"PostgreSQL maintenance database URL (default $BENCH_PG_URL or {ingest.DEFAULT_PG_URL})")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per measurement (default 600)")
    parser.add_argument("--max-background", type=float, default=25,
                        help="before each measurement wait for other load to drop below this %% of a core (default 25)")
    parser.add_argument("--background-wait", type=float, default=120,
                        help="seconds to wait for that before measuring anyway (default 120; 0 = never wait)")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy the worker during each run; raw stacks and a summary in DIR (slower: "
                             "don't quote those rates)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy executable for --profile")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--profile-view", choices=sorted(ingest.Profiler.VIEWS), default="gil",
                        help="gil, active or wall, as in smtp_ingest.py (default gil)")
    parser.add_argument("--in-place", action="store_true", help="run mailsuite from the working tree, not a snapshot")
    parser.add_argument("--source", type=Path, metavar="DIR", help="run mailsuite from this project tree")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    parser.add_argument("--serve-discard", metavar="HOST:PORT", help=argparse.SUPPRESS)
    parser.add_argument("--count-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_discard:
        return args
    lists = {}
    for name, allowed in (("brokers", BROKER_KEYS), ("databases", DATABASE_KEYS)):
        values = [v.strip() for v in getattr(args, name).split(",") if v.strip()]
        unknown = set(values) - set(allowed)
        if unknown or not values:
            parser.error(f"unknown {name} {sorted(unknown)}; choose from {','.join(allowed)}")
        lists[name] = list(dict.fromkeys(values))
    try:
        threads = [int(v) for v in args.threads.split(",") if v.strip()]
    except ValueError:
        parser.error("--threads takes comma-separated integers")
    if not threads or min(threads) < 1:
        parser.error("--threads values must be positive")
    if min(args.messages, args.destinations, args.runs, args.size) < 1:
        parser.error("--messages, --destinations, --runs and --size must be positive")
    if not 0 <= args.mx_hosts <= 250:
        parser.error("--mx-hosts must be between 0 and 250")
    args.mx_hosts = args.mx_hosts or min(args.destinations, 10)
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy (pip install py-spy into a scratch venv, then --py-spy PATH)")
    args.broker_list, args.database_list, args.thread_list = lists["brokers"], lists["databases"], list(dict.fromkeys(threads))
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.serve_discard:
        host, _, port = args.serve_discard.rpartition(":")
        serve_discard(host, int(port), args.count_file)
        return 0
    signal.signal(signal.SIGTERM, ingest._raise_interrupt)
    failures = 0
    with ExitStack() as cleanup:
        try:
            failures = _run(args, cleanup)
        finally:
            # Cleanup (leaving this block) must finish even if Ctrl-C is pressed again.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if failures:
        print(f"\n{failures} measurement(s) FAILED; see above", file=sys.stderr)
        return 1
    return 0


def _source_tree(args, workdir):
    if args.source:
        args.source = args.source.resolve()
        if not (args.source / "manage.py").exists():
            raise BenchError(f"--source {args.source} has no manage.py")
        return f"the tree at {args.source}"
    note = ingest.working_tree_state() + (", run in place" if args.in_place else ", snapshot taken at start")
    args.source = ROOT
    if not args.in_place:
        args.source = workdir / "source"
        shutil.copytree(ROOT, args.source, symlinks=True, ignore=shutil.ignore_patterns(*ingest.SNAPSHOT_SKIP))
        # The snapshot has no bytecode, and with PYTHONDONTWRITEBYTECODE set every worker start
        # would compile the project's modules again: compile them once, as an installed tree has them.
        ingest.run_checked([ingest.venv_python(), "-m", "compileall", "-q", str(args.source)],
                           what="compiling the snapshot")
    return note


def _run(args, cleanup):
    from tests.dnsserver import DNSServer  # needs dnspython: run this with the project's .venv python

    workdir = Path(tempfile.mkdtemp(prefix="mailsuite-queue-bench-"))
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    source_note = _source_tree(args, workdir)
    messages_file = workdir / "messages.json"
    write_messages(messages_file, args.messages, args.destinations, args.size)

    redis = Redis(args.redis_url)
    brokers = list(args.broker_list)
    if "redis" in brokers:
        try:
            redis.prepare()
            cleanup.callback(redis.close)
        except Skip as reason:
            print(f"SKIPPED redis: {reason}", file=sys.stderr)
            brokers.remove("redis")
    sites = {}
    for key in args.database_list:
        site = QueueSite(key, pg_url=args.pg_url, source=args.source, messages_file=messages_file,
                         expected_messages=args.messages)
        cleanup.callback(site.close)
        try:
            print(f"filling the {site.label} queue with {args.messages} messages …", flush=True)
            site.prepare(workdir)
        except Skip as reason:
            print(f"SKIPPED {key}: {reason}", file=sys.stderr)
            site.close()
            continue
        sites[key] = site
    configs = [Config(d, b, t) for d in sites for t in args.thread_list for b in brokers]
    if not configs:
        raise BenchError("nothing to measure")
    profiler = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = ingest.Profiler(args.py_spy, args.profile, args.profile_rate, args.profile_view)
        cleanup.callback(profiler.stop)

    hosts = loopback_hosts(args.mx_hosts)
    dns = DNSServer(dns_zones(args.destinations, args.mx_hosts))
    dns.start()
    cleanup.callback(dns.stop)

    args.source_note = source_note
    print(ingest.machine_notes([], args))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"measuring {', '.join(c.label(sites) for c in configs)}; {args.runs} rounds of {args.messages} messages "
          f"to {args.destinations} destinations", flush=True)
    results, failures, failed = [], 0, collections.Counter()
    for round_no in range(args.runs):
        shift = round_no % len(configs)
        for config in configs[shift:] + configs[:shift]:
            label = config.label(sites)
            try:
                result = measure(config, sites[config.database], redis, round_no, args, workdir, dns, hosts, profiler)
            except BenchError as error:
                failures += 1
                failed[config.key] += 1
                print(f"  round {round_no + 1} {label:44} FAILED: {error}", file=sys.stderr, flush=True)
                continue
            results.append(result)
            failures += 0 if result.verified else 1
            print(progress_line(label, result), flush=True)
    print()
    print(summary_table(results, failed, configs, sites, args))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    if profiler:
        groups = collections.defaultdict(list)
        for path in sorted(args.profile.glob("*-pid*.txt")):
            groups[path.name.rsplit("-r", 1)[0]].append(path)
        report = [f"py-spy, view {args.profile_view}, raw stacks in {args.profile}"]
        for config_key, files in groups.items():
            report.append(f"\n== {config_key}, {len(files)} profile(s):{ingest.summarize_profiles(files)}")
        (args.profile / "summary.txt").write_text("\n".join(report) + "\n")
        print("\n" + "\n".join(report))
    return failures


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"\n{error}\n(everything started here has been stopped and removed)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started here has been stopped and removed", file=sys.stderr)
        sys.exit(130)
