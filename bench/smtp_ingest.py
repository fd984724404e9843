#!/usr/bin/env python3
"""SMTP ingest benchmark: mailsuite against Postfix and a bare aiosmtpd, one client, one run.

N messages of about 2 KB go from C concurrent SMTP sessions to one local mailbox, in two
modes: a new connection per message ("new") and connections reused for several messages
("reuse"). Servers, each on a loopback high port:

  sqlite     mailsuite runsmtp on SQLite (the default database)
  postgres   mailsuite runsmtp on PostgreSQL (a fresh database per measurement)
  postfix    Debian's Postfix in a throwaway instance, virtual(8) into one maildir; the
             rate counts until every file is in new/ (end to end), its accept rate is
             reported beside it
  aiosmtpd   a bare aiosmtpd that discards every message (one Python process's
             protocol ceiling); this file serves it with --serve-discard

Implementation notes:
- Every server is driven by the same client: the asyncio SMTP client below, lock-step (no
  pipelining, like Postfix's smtp-source), run in --client-procs forked processes so its
  timing and CPU use are its own. Its CPU use is reported: a client near 100 % of a core
  would be the bottleneck. Modes src-new/src-reuse drive the same servers with Postfix's
  smtp-source (C) instead, as a cross-check of the client.
- Measurements alternate: each round runs every mode on every server, starting the server
  list one place further along each round; medians over rounds are reported, and ratios to
  Postfix are the median of the per-round ratios (runs here differ by up to ±20 %).
- Each measurement starts from fresh state (copied data directory, a new PostgreSQL
  database from a migrated template, a new Postfix instance), sends --warmup messages
  untimed, then the timed N. mailsuite runs from a copy of the working tree taken at start
  (others may edit it meanwhile), or from --source DIR.
- A measurement counts only if the mail is really there afterwards: mailsuite's mailbox
  holds exactly the expected subjects (one row each) and as many blob files, Postfix's
  new/ holds exactly the expected files, the discard server counted them. An error or a
  missing message marks the run FAILED and the command exits non-zero.
- Everything listens on 127.0.0.1. Every process this script starts is stopped by its id
  (servers run in their own sessions and are stopped with their whole process group),
  PostgreSQL databases are dropped and the work directory removed, also on Ctrl-C/SIGTERM.
"""
import argparse
import asyncio
import collections
import email.utils
import json
import math
import multiprocessing
import os
import platform
import pwd
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DOMAIN = "bench.test"
RECIPIENT = f"user@{DOMAIN}"
SENDER = "bench-sender@client.test"
CLIENT_NAME = "bench-client.test"
SERVER_KEYS = ("sqlite", "postgres", "postfix", "aiosmtpd")
MODE_KEYS = ("new", "reuse", "src-new", "src-reuse")
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
VERIFY_MARKER = "BENCH-VERIFY "
SNAPSHOT_SKIP = (".venv", "var", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "node_modules")


def venv_python():
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


class Skip(Exception):
    """A server that cannot run on this machine (reported, not fatal)."""


class BenchError(Exception):
    """A measurement that could not be made."""


# Messages ---------------------------------------------------------------------------

_WORDS = (
    "mail queue delivery mailbox header envelope relay domain message folder quota "
    "transport archive sender recipient subject latency durable commit server client "
    "session reply status network storage bounce filter"
).split()


def _body_lines(seed, size):
    """Text lines whose CRLF-terminated length is exactly `size` octets (at least one line)."""
    lines, total, i = [], 0, seed
    while total < size:
        words = [_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(10)]
        line = " ".join(words).capitalize() + "."
        lines.append(line)
        total += len(line) + 2
        i += 1
    excess = total - size
    if lines and excess:
        lines[-1] = lines[-1][: max(1, len(lines[-1]) - excess)]
    return lines


def subject_for(tag, index):
    return f"bench {tag} {index}"


def message_text(subject, message_id, size):
    """A plain-text message of about `size` octets, CRLF line ends, no terminating dot."""
    headers = [
        f"From: Bench Sender <{SENDER}>",
        f"To: <{RECIPIENT}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Message-ID: <{message_id}@{CLIENT_NAME}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]
    head = "\r\n".join(headers) + "\r\n\r\n"
    body = "".join(line + "\r\n" for line in _body_lines(len(message_id), max(3, size - len(head))))
    return (head + body).encode("ascii")  # no line starts with ".", so no dot-stuffing


def data_payload(tag, index, size):
    return message_text(subject_for(tag, index), f"{tag}.{index}", size) + b".\r\n"


# The client -------------------------------------------------------------------------


class SessionError(Exception):
    pass


class ReplyReader(asyncio.Protocol):
    """Collects complete (possibly multi-line) SMTP replies from the server."""

    def __init__(self):
        self.transport = None
        self._buffer = bytearray()
        self._lines = []
        self._replies = collections.deque()
        self._waiter = None
        self._lost = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._lines.append(line)
            if line[3:4] != b"-":  # RFC 5321 §4.2.1: "-" continues a reply
                self._replies.append(b"".join(self._lines))
                self._lines = []
        self._wake()

    def connection_lost(self, exc):
        self._lost = exc or ConnectionResetError("server closed the connection")
        self._wake()

    def _wake(self):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def expect(self, code):
        while not self._replies:
            if self._lost is not None:
                raise SessionError(f"connection lost waiting for {code.decode()}: {self._lost}")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        reply = self._replies.popleft()
        if not reply.startswith(code):
            raise SessionError(f"expected {code.decode()}, got {reply.decode('utf-8', 'replace').strip()!r}")


@dataclass
class ClientTally:
    latencies: list = field(default_factory=list)
    delivered: int = 0
    errors: int = 0
    error_samples: list = field(default_factory=list)

    def fail(self, index, error):
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"message {index}: {error}")


_EHLO = f"EHLO {CLIENT_NAME}\r\n".encode()
_MAIL = f"MAIL FROM:<{SENDER}>\r\n".encode()
_RCPT = f"RCPT TO:<{RECIPIENT}>\r\n".encode()


async def _session_loop(port, take_index, per_session, payloads, tally):
    """One client: sessions of up to `per_session` messages until no index is left.

    A message's latency runs from the start of its transaction (connect, for the first
    message of a session; MAIL FROM for the others) to the 250 after its data.
    """
    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    while (index := take_index()) is not None:
        started = perf()
        try:
            transport, reader = await loop.create_connection(ReplyReader, HOST, port)
        except OSError as error:
            tally.fail(index, f"connect: {error}")
            continue
        try:
            await reader.expect(b"220")
            transport.write(_EHLO)
            await reader.expect(b"250")
            sent = 0
            while True:
                transport.write(_MAIL)
                await reader.expect(b"250")
                transport.write(_RCPT)
                await reader.expect(b"25")  # 250, or 251 (RFC 5321 §3.4)
                transport.write(b"DATA\r\n")
                await reader.expect(b"354")
                transport.write(payloads[index])
                await reader.expect(b"250")
                tally.latencies.append(perf() - started)
                tally.delivered += 1
                sent += 1
                if sent >= per_session or (index := take_index()) is None:
                    break
                started = perf()
            try:
                transport.write(b"QUIT\r\n")
                await reader.expect(b"221")
            except SessionError:
                pass  # the mail is in; a rude goodbye does not matter
        except SessionError as error:
            tally.fail(index, error)
        finally:
            transport.close()


async def _run_clients(port, indices, clients, per_session, payloads, timeout):
    tally = ClientTally()
    pending = iter(indices)

    def take_index():
        return next(pending, None)

    jobs = [_session_loop(port, take_index, per_session, payloads, tally) for _ in range(clients)]
    try:
        await asyncio.wait_for(asyncio.gather(*jobs), timeout)
    except asyncio.TimeoutError:
        tally.fail("-", f"timed out after {timeout}s")
    return tally


def _client_process(port, indices, clients, per_session, payloads, timeout, barrier, conn):
    """Body of one forked client process: wait for the others, run, report."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler is not ours
    try:
        barrier.wait(timeout=60)
        wall_start, start = time.time(), time.monotonic()
        usage = os.times()
        tally = asyncio.run(_run_clients(port, indices, clients, per_session, payloads, timeout))
        end = time.monotonic()
        after = os.times()
        conn.send(
            {
                "wall_start": wall_start,
                "start": start,
                "end": end,
                "cpu": (after.user - usage.user) + (after.system - usage.system),
                "latencies": tally.latencies,
                "delivered": tally.delivered,
                "errors": tally.errors,
                "error_samples": tally.error_samples,
            }
        )
    except BaseException as error:  # the parent must hear about it, whatever it was
        conn.send({"crash": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"})
    finally:
        conn.close()


def _split(items, parts):
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (1 if p < extra else 0)
        out.append(items[start:end])
        start = end
    return out


@dataclass
class ClientRun:
    elapsed: float
    wall_start: float
    latencies: list
    delivered: int
    errors: int
    error_samples: list
    cpu: float  # seconds of client CPU over all its processes


class Clients:
    """Forks the client processes (tracked, so cleanup can stop them by pid)."""

    def __init__(self):
        self.live = []

    def run(self, port, payloads, *, clients, procs, per_session, timeout):
        procs = max(1, min(procs, clients))
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(procs)
        index_parts = _split(list(range(len(payloads))), procs)
        client_parts = [len(p) for p in _split(list(range(clients)), procs)]
        pipes = []
        for indices, count in zip(index_parts, client_parts):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_client_process,
                args=(port, indices, count, per_session, payloads, timeout, barrier, sender),
                daemon=True,
            )
            process.start()
            sender.close()
            self.live.append(process)
            pipes.append((process, receiver))
        reports = []
        for process, receiver in pipes:
            if not receiver.poll(timeout + 90):
                raise BenchError(f"client process {process.pid} did not report")
            try:
                report = receiver.recv()
            except EOFError:
                raise BenchError(f"client process {process.pid} died without a report") from None
            process.join(10)
            if "crash" in report:
                raise BenchError(f"client process crashed: {report['crash']}")
            reports.append(report)
        self.stop()
        return ClientRun(
            elapsed=max(r["end"] for r in reports) - min(r["start"] for r in reports),
            wall_start=min(r["wall_start"] for r in reports),
            latencies=[x for r in reports for x in r["latencies"]],
            delivered=sum(r["delivered"] for r in reports),
            errors=sum(r["errors"] for r in reports),
            error_samples=[s for r in reports for s in r["error_samples"]][:5],
            cpu=sum(r["cpu"] for r in reports),
        )

    def stop(self):
        for process in self.live:
            if process.is_alive():
                process.terminate()
            process.join(5)
        self.live = []


def run_smtp_source(port, message_file, *, count, clients, reuse, timeout):
    """Postfix's smtp-source with the same message; it reports no per-message latency."""
    argv = ["smtp-source", "-4", "-s", str(clients), "-m", str(count), "-F", str(message_file),
            "-f", SENDER, "-t", RECIPIENT, "-M", CLIENT_NAME]
    if reuse:
        argv.append("-d")
    argv.append(f"{HOST}:{port}")
    before = os.times()
    wall_start, start = time.time(), time.monotonic()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"smtp-source did not finish in {timeout}s") from None
    elapsed = time.monotonic() - start
    after = os.times()
    errors = 0 if result.returncode == 0 else 1
    samples = [] if not errors else [(result.stderr or result.stdout).strip()[:300]]
    return ClientRun(
        elapsed=elapsed,
        wall_start=wall_start,
        latencies=[],
        delivered=count if not errors else 0,
        errors=errors,
        error_samples=samples,
        cpu=(after.children_user - before.children_user) + (after.children_system - before.children_system),
    )


# Process and system helpers ---------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def listening_sockets(port):
    """How many IPv4 sockets listen on `port` (one per SO_REUSEPORT worker)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_listening(port, expected, *, timeout, alive=lambda: True, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening_sockets(port) >= expected:
            return
        if not alive():
            break
        time.sleep(0.05)
    tail = ""
    if log and Path(log).exists():
        tail = "\n" + "\n".join(Path(log).read_text(errors="replace").splitlines()[-15:])
    raise BenchError(f"server did not open {expected} listening socket(s) on {HOST}:{port}{tail}")


def _proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # The command name may contain spaces and parentheses: split after the last ")".
    return data[data.rindex(")") + 2 :].split()


def group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_proc_stat(entry)[2]) == pgid:
                    members.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return members


def process_tree_cpu(pid):
    """CPU seconds (user + system) of `pid` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children[int(_proc_stat(entry)[1])].append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            stat = _proc_stat(current)
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / ticks
        todo += children.get(current, [])
    return total


def child_pids(pid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_proc_stat(entry)[1]) == pid:
                    pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def stop_session(process, *, timeout=25):
    """Stop a server started in its own session: SIGTERM the leader, then whatever is left."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in group_members(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cpu_busy_snapshot():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values), idle


def busy_percent(before, after):
    total = after[0] - before[0]
    idle = after[1] - before[1]
    cores = os.cpu_count() or 1
    return 100.0 * cores * (total - idle) / total if total else 0.0  # 100 % = one core


def quiet_machine(limit, patience, *, sample=0.5):
    """Busy % (of one core) with our servers idle; waits up to `patience` s for it to drop below `limit`.

    Other people's jobs on a 2-core machine skew every figure, so each run records the
    background load it started under (the table reports it).
    """
    deadline = time.monotonic() + patience
    announced = False
    while True:
        before = cpu_busy_snapshot()
        time.sleep(sample)
        busy = busy_percent(before, cpu_busy_snapshot())
        if busy <= limit or time.monotonic() >= deadline:
            return busy
        if not announced:
            print(f"  (background load {busy:.0f} % of a core; waiting up to {patience:.0f}s for it to drop below {limit:.0f} %)",
                  flush=True)
            announced = True


def run_checked(argv, *, env=None, what, timeout=300, cwd=None):
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


# Servers ----------------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    detail: str


class Target:
    key = ""
    label = ""
    settles = False  # accepts before it delivers: wait for delivery after the client

    def prepare(self, workdir):
        pass

    def start(self, rundir):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def server_cpu(self):
        return None

    def worker_pids(self):
        return []

    def wait_delivered(self, expected, timeout):
        return None

    def verify(self, expected):
        raise NotImplementedError

    def close(self):
        pass


def _compare_subjects(found, expected):
    found = collections.Counter(found)
    if found == expected:
        return Verification(True, f"{sum(found.values())} messages, each subject once")
    missing = expected - found
    extra = found - expected
    return Verification(
        False,
        f"found {sum(found.values())}, expected {sum(expected.values())}; "
        f"missing {sum(missing.values())} (e.g. {list(missing)[:3]}), extra {sum(extra.values())} (e.g. {list(extra)[:3]})",
    )


VERIFY_CODE = f"""
import json
from mailstore.models import Message
rows = Message.objects.filter(
    folder__account__localpart="user", folder__account__domain__name="{DOMAIN}", folder__name="INBOX"
)
print("{VERIFY_MARKER}" + json.dumps(list(rows.values_list("subject", flat=True))))
"""


class Mailsuite(Target):
    """manage.py runsmtp on a copy of a migrated data directory (and database)."""

    def __init__(self, database, *, workers, pg_url, source):
        self.key = database
        self.source = source  # the project tree whose manage.py runs
        self.workers = workers
        self.pg_url = pg_url
        self.label = f"mailsuite/{'SQLite' if database == 'sqlite' else 'PostgreSQL'} ({workers} worker{'s' * (workers != 1)})"
        self.template = None
        self.databases = []  # PostgreSQL databases we created (template first)
        self.process = None
        self.data_dir = None
        self.database_url = None
        self.run_count = 0

    def _env(self, data_dir, database_url):
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env["MAILSUITE_DATA_DIR"] = str(data_dir)
        if database_url:
            env["DATABASE_URL"] = database_url
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _manage(self, *args, data_dir, database_url, what):
        # cwd: Python puts the working directory first on the path here, so it must be the tree we run.
        return run_checked([venv_python(), str(self.source / "manage.py"), *args], env=self._env(data_dir, database_url),
                           what=what, cwd=self.source)

    def _pg(self, sql):
        try:
            import psycopg
        except ImportError:
            raise Skip("psycopg is not installed in this Python") from None
        try:
            with psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql)
        except psycopg.OperationalError as error:
            raise Skip(f"PostgreSQL at {self.pg_url} unreachable: {str(error).strip()}") from None

    def _db_url(self, name):
        return urllib.parse.urlsplit(self.pg_url)._replace(path="/" + name).geturl()

    def _db_name(self, suffix):
        return f"mailsuite_bench_{os.getpid()}_{suffix}"

    def prepare(self, workdir):
        self.template = workdir / f"template-{self.key}"
        self.template.mkdir()
        url = None
        if self.key == "postgres":
            name = self._db_name("template")
            self._pg(f'CREATE DATABASE "{name}"')
            self.databases.append(name)
            url = self._db_url(name)
        for args, what in (
            (("migrate", "--noinput", "-v0"), "migrate"),
            (("tls", "ensure"), "tls ensure"),
            (("domain", "add", DOMAIN), "domain add"),
            (("account", "add", RECIPIENT, "--quota", "0"), "account add"),
        ):
            self._manage(*args, data_dir=self.template, database_url=url, what=f"{self.key}: manage.py {what}")

    def start(self, rundir):
        self.run_count += 1
        self.data_dir = rundir / "data"
        shutil.copytree(self.template, self.data_dir)
        self.database_url = None
        if self.key == "postgres":
            name = self._db_name(f"run{self.run_count}")
            self._pg(f'CREATE DATABASE "{name}" TEMPLATE "{self.databases[0]}"')
            self.databases.append(name)
            self.database_url = self._db_url(name)
        port = free_port()
        log = rundir / "server.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [venv_python(), str(self.source / "manage.py"), "runsmtp", "--host", HOST, "--port", str(port),
                 "--workers", str(self.workers)],
                env=self._env(self.data_dir, self.database_url),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.source,
            )
        wait_listening(port, self.workers, timeout=60, alive=lambda: self.process.poll() is None, log=log)
        return port

    def worker_pids(self):
        if self.process is None:
            return []
        return child_pids(self.process.pid) if self.workers > 1 else [self.process.pid]

    def server_cpu(self):
        return process_tree_cpu(self.process.pid) if self.process else None

    def stop(self):
        stop_session(self.process)
        self.process = None

    def verify(self, expected):
        output = self._manage("shell", "-c", VERIFY_CODE, data_dir=self.data_dir,
                              database_url=self.database_url, what=f"{self.key}: verify")
        lines = [line for line in output.splitlines() if line.startswith(VERIFY_MARKER)]
        if not lines:
            return Verification(False, f"verification printed nothing: {output[-300:]}")
        subjects = json.loads(lines[-1][len(VERIFY_MARKER):])
        check = _compare_subjects(subjects, expected)
        blobs = sum(len(files) for _, _, files in os.walk(self.data_dir / "blobs"))
        if check.ok and blobs != len(subjects):
            return Verification(False, f"{len(subjects)} rows but {blobs} blob files")
        if self.key == "postgres" and self.databases[-1] != self.databases[0]:
            self._pg(f'DROP DATABASE IF EXISTS "{self.databases[-1]}" WITH (FORCE)')
            self.databases.pop()
        return Verification(check.ok, check.detail + (f", {blobs} blob files" if check.ok else ""))

    def close(self):
        self.stop()
        for name in reversed(self.databases):
            try:
                self._pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as error:  # keep cleaning up the rest
                print(f"warning: could not drop database {name}: {error}", file=sys.stderr)
        self.databases = []


POSTFIX_MAIN_CF = """\
# Throwaway benchmark instance written by bench/smtp_ingest.py: loopback only, relays nothing.
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
myhostname = postfix-bench.localhost
mydomain = localhost
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
biff = no
append_dot_mydomain = no
# A non-default log file must sit under maillog_file_prefixes.
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
alias_maps =
alias_database =
local_recipient_maps =
message_size_limit = 52428800
# Smaller than message_size_limit would make virtual(8) accept and never deliver.
virtual_mailbox_limit = 0
virtual_mailbox_domains = static:ALL
virtual_mailbox_base = {base}/mail
virtual_mailbox_maps = static:box/
# Root may not own delivered mail: deliver as nobody.
virtual_minimum_uid = 1
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
default_transport = error:this benchmark instance relays nothing
relay_transport = error:this benchmark instance relays nothing
"""

# Chroot off everywhere: the queue lives under /tmp with no chroot jail set up.
POSTFIX_SERVICES = """\
{host}:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
local      unix  - n n - - local
virtual    unix  - n n - - virtual
lmtp       unix  - - n - - lmtp
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


class Postfix(Target):
    key = "postfix"
    label = "Postfix → maildir (end to end)"
    settles = True

    def __init__(self):
        self.base = None
        self.master_pid = None

    def prepare(self, workdir):
        if not shutil.which("postfix"):
            raise Skip("postfix is not installed (apt-get install postfix)")
        if os.geteuid() != 0:
            raise Skip("a throwaway Postfix instance needs root")
        self.version = subprocess.run(["postconf", "-dh", "mail_version"], capture_output=True, text=True).stdout.strip()
        self.label = f"Postfix {self.version} → maildir (end to end)"

    @property
    def conf(self):
        return self.base / "conf"

    @property
    def maildir_new(self):
        return self.base / "mail" / "box" / "new"

    def start(self, rundir):
        self.base = rundir / "postfix"
        for sub in ("conf", "queue", "data", "mail"):
            (self.base / sub).mkdir(parents=True)
        nobody = pwd.getpwnam("nobody")
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.base / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.base / "mail", nobody.pw_uid, nobody.pw_gid)
        port = free_port()
        (self.conf / "main.cf").write_text(POSTFIX_MAIN_CF.format(base=self.base, uid=nobody.pw_uid, gid=nobody.pw_gid))
        (self.conf / "master.cf").write_text(POSTFIX_SERVICES.format(host=HOST, port=port))
        run_checked(["postfix", "-c", str(self.conf), "start"], what="postfix start", timeout=60)
        pid_file = self.base / "queue" / "pid" / "master.pid"
        wait_listening(port, 1, timeout=30, log=self.base / "maillog")
        self.master_pid = int(pid_file.read_text().split()[0])
        return port

    def _instance_pids(self):
        """Processes of this instance: Postfix passes the config dir to its daemons in MAIL_CONFIG."""
        marker = f"MAIL_CONFIG={self.conf}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if marker in f.read().split(b"\0"):
                            pids.append(int(entry))
                except OSError:
                    pass
        return pids

    def server_cpu(self):
        return None  # its daemons come and go; the machine's busy figure covers it

    def delivered_count(self):
        try:
            return len(os.listdir(self.maildir_new))
        except FileNotFoundError:
            return 0

    def wait_delivered(self, expected, timeout):
        """Wait until new/ holds `expected` files; return the wall time the last one landed."""
        deadline = time.monotonic() + timeout
        while self.delivered_count() < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"Postfix delivered {self.delivered_count()} of {expected} in {timeout}s")
            time.sleep(0.02)
        # rename(2) into new/ sets the file's ctime: the newest ctime is when delivery finished.
        with os.scandir(self.maildir_new) as entries:
            return max(entry.stat().st_ctime for entry in entries)

    def stop(self):
        if self.base is None:
            return
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, timeout=60)
        deadline = time.monotonic() + 20
        while self.master_pid and os.path.exists(f"/proc/{self.master_pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self._instance_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.master_pid = None

    def verify(self, expected):
        subjects = []
        for entry in os.scandir(self.maildir_new):
            with open(entry.path, "rb") as f:
                head = f.read(8192)
            start = head.find(b"\nSubject: ")
            end = head.find(b"\n", start + 1)
            subjects.append(head[start + 10 : end].decode().strip() if start >= 0 else "(none)")
        return _compare_subjects(subjects, expected)

    def close(self):
        self.stop()
        self.base = None


class Discard(Target):
    key = "aiosmtpd"
    label = "aiosmtpd, discards (1 process)"

    def __init__(self):
        self.process = None
        self.count_file = None

    def start(self, rundir):
        port = free_port()
        self.count_file = rundir / "accepted.json"
        log = rundir / "server.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [venv_python(), str(Path(__file__).resolve()), "--serve-discard", str(port),
                 "--count-file", str(self.count_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_listening(port, 1, timeout=30, alive=lambda: self.process.poll() is None, log=log)
        return port

    def worker_pids(self):
        return [self.process.pid] if self.process else []

    def server_cpu(self):
        return process_tree_cpu(self.process.pid) if self.process else None

    def stop(self):
        stop_session(self.process)
        self.process = None

    def verify(self, expected):
        try:
            accepted = json.loads(self.count_file.read_text())["messages"]
        except (OSError, ValueError, KeyError) as error:
            return Verification(False, f"the discard server left no count: {error}")
        wanted = sum(expected.values())
        return Verification(accepted == wanted, f"server counted {accepted} of {wanted}")

    def close(self):
        self.stop()


def serve_discard(port, count_file):
    """The discard server: aiosmtpd accepting and dropping every message, counting them."""
    from aiosmtpd.smtp import SMTP

    class DiscardHandler:
        messages = 0

        async def handle_DATA(self, server, session, envelope):
            self.messages += 1
            return "250 2.0.0 Ok: discarded"

    async def main():
        handler = DiscardHandler()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="discard.localhost", data_size_limit=50 * 1024 * 1024),
            host=HOST, port=port, backlog=1024,
        )
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()
        Path(count_file).write_text(json.dumps({"messages": handler.messages}))

    asyncio.run(main())


# Profiling (optional) ---------------------------------------------------------------


class Profiler:
    """py-spy on each server worker during the timed part of a measurement."""

    # gil: only the thread holding the GIL (the Python work that caps one process);
    # active: threads py-spy sees running; wall: every thread, waiting ones too.
    VIEWS = {"gil": ["--gil"], "active": [], "wall": ["--idle"]}

    def __init__(self, py_spy, out_dir, rate, view):
        self.view = view
        self.py_spy = py_spy
        self.out_dir = out_dir
        self.rate = rate
        self.running = []

    def start(self, pids, name):
        for pid in pids:
            output = self.out_dir / f"{name}-pid{pid}.txt"
            process = subprocess.Popen(
                [self.py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(self.rate),
                 "--nonblocking", "--threads", *self.VIEWS[self.view], "--output", str(output)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            self.running.append((process, output))

    def stop(self):
        outputs = []
        for process, output in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                _, err = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, err = process.communicate()
            if output.exists():
                outputs.append(output)
            else:
                print(f"  py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]}", file=sys.stderr)
        self.running = []
        return outputs


def _frame_name(frame):
    # py-spy raw frames look like "function (path/to/module.py:123)".
    name, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if name else frame


# Waiting for work, not doing it: an idle pool thread, an idle event loop.
_IDLE_LEAVES = {"_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)"}
# Frames on every stack that say nothing about where the time goes.
_PLUMBING = ("threading.py", "concurrent/futures/", "asyncio/runners.py", "manage.py", "django/core/management/",
             "<module>", "main (", "run_from_argv", "BaseEventLoop.run_", "BaseEventLoop._run_once",
             "Handle._run", "asyncio/events.py", "_call (mailsuite/lib/aio.py)")


def summarize_profiles(files, top=15):
    """Where the sampled time went: per function, self (leaf frame) and total (anywhere on the stack).

    Percentages are of all busy samples over every profiled worker (idle pool threads and
    the idle event loop left out): with --profile-view gil, shares of the Python work that
    holds the GIL; with wall, shares of thread time including waits.
    """
    total = idle = 0
    threads = collections.Counter()
    leaf, inclusive = collections.Counter(), collections.Counter()
    for path in files:
        for line in Path(path).read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            count = int(count)
            frames = stack.split(";")
            thread = "?"
            if frames and frames[0].startswith("thread ("):
                thread = frames[0].split("): ", 1)[-1]
                frames = frames[1:]
            frames = [_frame_name(f) for f in frames if not f.startswith("process ")]
            if not frames:
                continue
            if frames[-1] in _IDLE_LEAVES:
                idle += count
                continue
            total += count
            threads["database threads (db_*)" if thread.startswith("db") else f"{thread} (event loop)"] += count
            leaf[frames[-1]] += count
            for name in set(frames):
                if not any(p in name for p in _PLUMBING):
                    inclusive[name] += count
    if not total:
        return "\nno busy samples"
    lines = [f"\n{total} busy samples ({idle} idle left out): "
             + ", ".join(f"{name} {100 * n / total:.0f} %" for name, n in threads.most_common())]
    lines.append("  self %  function (leaf frame: time spent in the function itself)")
    lines += [f"  {100 * n / total:6.1f}  {name}" for name, n in leaf.most_common(top)]
    lines.append("  total %  function (time with the function anywhere on the stack)")
    lines += [f"  {100 * n / total:6.1f}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


# Measurements -----------------------------------------------------------------------


@dataclass
class Mode:
    key: str
    label: str
    per_session: int  # 0: smtp-source decides
    smtp_source: bool = False


@dataclass
class Result:
    server: str
    mode: str
    round: int
    messages: int
    elapsed: float
    rate: float
    e2e_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    client_cpu_pct: float
    server_cpu_pct: float | None
    busy_pct: float
    background_pct: float
    errors: int
    verified: bool
    detail: str
    error_samples: list


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(target, mode, round_no, args, workdir, clients, profiler):
    rundir = workdir / f"{target.key}-{mode.key}-{round_no}"
    rundir.mkdir()
    rundir.chmod(0o755)
    tag = f"r{round_no}-{mode.key}"
    expected = collections.Counter()
    port = target.start(rundir)
    try:
        if args.warmup:
            warm = [data_payload(f"{tag}-warmup", i, args.size) for i in range(args.warmup)]
            run = clients.run(port, warm, clients=min(args.clients, args.warmup), procs=1, per_session=1,
                              timeout=args.timeout)
            if run.errors:
                raise BenchError(f"warm-up failed: {run.error_samples}")
            expected.update(subject_for(f"{tag}-warmup", i) for i in range(args.warmup))
            if target.settles:
                target.wait_delivered(args.warmup, args.timeout)
        if mode.smtp_source:
            message_file = rundir / "message.txt"
            subject = f"bench {tag}"
            message_file.write_bytes(message_text(subject, tag, args.size).replace(b"\r\n", b"\n"))
            expected[subject] += args.messages
        else:
            payloads = [data_payload(tag, i, args.size) for i in range(args.messages)]
            expected.update(subject_for(tag, i) for i in range(args.messages))
        background = quiet_machine(args.max_background, args.background_wait)
        server_cpu_before = target.server_cpu()
        busy_before = cpu_busy_snapshot()
        if profiler:
            profiler.start(target.worker_pids(), f"{target.key}-{mode.key}-r{round_no}")
        if mode.smtp_source:
            run = run_smtp_source(port, message_file, count=args.messages, clients=args.clients,
                                  reuse=mode.key == "src-reuse", timeout=args.timeout)
        else:
            run = clients.run(port, payloads, clients=args.clients, procs=args.client_procs,
                              per_session=mode.per_session, timeout=args.timeout)
        busy_after = cpu_busy_snapshot()
        server_cpu_after = target.server_cpu()
        if profiler:
            profiler.stop()
        e2e_rate = None
        if target.settles:
            finished = target.wait_delivered(sum(expected.values()), args.timeout)
            e2e_rate = args.messages / max(finished - run.wall_start, run.elapsed)
    finally:
        target.stop()
    verification = target.verify(expected)
    server_cpu = None
    if server_cpu_before is not None and server_cpu_after is not None:
        server_cpu = 100 * (server_cpu_after - server_cpu_before) / run.elapsed
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    return Result(
        server=target.key,
        mode=mode.key,
        round=round_no,
        messages=args.messages,
        elapsed=run.elapsed,
        rate=run.delivered / run.elapsed,
        e2e_rate=e2e_rate,
        p50_ms=1000 * percentile(run.latencies, 0.50) if run.latencies else None,
        p99_ms=1000 * percentile(run.latencies, 0.99) if run.latencies else None,
        client_cpu_pct=100 * run.cpu / run.elapsed,
        server_cpu_pct=server_cpu,
        busy_pct=busy_percent(busy_before, busy_after),
        background_pct=background,
        errors=run.errors,
        verified=verification.ok and run.errors == 0 and run.delivered == args.messages,
        detail=verification.detail + (f"; client errors: {run.error_samples}" if run.errors else ""),
        error_samples=run.error_samples,
    )


def progress_line(target, result):
    rate = f"{result.rate:7.0f} msg/s"
    if result.e2e_rate is not None:
        rate = f"{result.e2e_rate:7.0f} msg/s end to end, {result.rate:.0f} accept"
    lat = f"p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms" if result.p50_ms is not None else ""
    srv = f" server CPU {result.server_cpu_pct:.0f}%" if result.server_cpu_pct is not None else ""
    state = "ok" if result.verified else "FAILED"
    return (f"  round {result.round + 1} {result.mode:9} {target.label:38} {rate}  {lat}  "
            f"client CPU {result.client_cpu_pct:.0f}%{srv} busy {result.busy_pct:.0f}% (idle before: {result.background_pct:.0f}%)  [{state}: {result.detail}]")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec="{:,.0f}"):
    return "–" if value is None else spec.format(value)


def summary_table(results, targets, modes, args):
    """A Markdown table: medians over rounds; ratios are medians of per-round ratios to Postfix."""
    cores = os.cpu_count()
    lines = [
        "| mode | server | msg/s median | min–max | × Postfix e2e | p50 ms | p99 ms | server CPU | client CPU | machine busy | background | runs ok |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in modes:
        postfix = {r.round: r.e2e_rate for r in results if r.server == "postfix" and r.mode == mode.key and r.verified}
        rows = []
        for target in targets:
            runs = [r for r in results if r.server == target.key and r.mode == mode.key]
            good = [r for r in runs if r.verified]
            if not runs:
                continue
            if target.key == "postfix":
                variants = [(target.label, lambda r: r.e2e_rate, True), ("Postfix: accepted (before delivery)", lambda r: r.rate, False)]
            else:
                variants = [(target.label, lambda r: r.rate, True)]
            for label, rate_of, ratio in variants:
                rates = [rate_of(r) for r in good]
                ratios = [rate_of(r) / postfix[r.round] for r in good if r.round in postfix and postfix[r.round]]
                rows.append(
                    f"| {mode.label} | {label} | {_fmt(_median(rates))} | "
                    f"{_fmt(min(rates)) if rates else '–'}–{_fmt(max(rates)) if rates else '–'} | "
                    f"{_fmt(_median(ratios), '{:.2f}') if ratio else ''} | "
                    f"{_fmt(_median([r.p50_ms for r in good]), '{:.1f}')} | {_fmt(_median([r.p99_ms for r in good]), '{:.1f}')} | "
                    f"{_fmt(_median([r.server_cpu_pct for r in good]), '{:.0f} %')} | "
                    f"{_fmt(_median([r.client_cpu_pct for r in good]), '{:.0f} %')} | "
                    f"{_fmt(_median([r.busy_pct for r in good]), '{:.0f} %')} | "
                    f"{_fmt(_median([r.background_pct for r in good]), '{:.0f} %')} | {len(good)}/{len(runs)} |"
                )
        lines += rows
    notes = [
        "",
        f"N={args.messages} messages of {len(data_payload('r0-new', 0, args.size)) - 3:,} octets, "
        f"{args.clients} concurrent sessions, {args.runs} rounds, {args.warmup} untimed warm-up messages per measurement.",
        "new = a new connection per message; reuse = up to "
        f"{args.per_session} messages per connection; src-* = Postfix's smtp-source as the client (no latencies).",
        "Latency: start of the message's transaction (connect, or MAIL FROM on a reused connection) to the 250 after DATA;"
        " for Postfix that is acceptance, not delivery.",
        f"CPU columns: 100 % = one core ({cores} here); server CPU = mailsuite/aiosmtpd processes; machine busy = all"
        " processes while the client ran; background = machine busy just before the timed part, our servers idle.",
    ]
    return "\n".join(lines + notes)


def working_tree_state():
    """"git abc1234" plus the paths that differ from it, for the record."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return f"working tree {ROOT} (not a git checkout)"
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    changed = [line[3:] for line in status.stdout.splitlines()]
    listed = ", ".join(changed[:8]) + (", …" if len(changed) > 8 else "")
    return f"working tree at git {head.stdout.strip()}" + (f", changed: {listed}" if changed else ", clean")


def machine_notes(targets, args):
    notes = [f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    notes.append(f"machine: {os.cpu_count()} vCPU {model}, Linux {platform.release()}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    notes.append(f"mailsuite: {args.source_note}")
    for target in targets:
        if isinstance(target, Postfix):
            notes.append(f"Postfix {target.version}")
    return "\n".join(notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=2000, help="timed messages per measurement (default 2000)")
    parser.add_argument("-c", "--clients", type=int, default=10, help="concurrent SMTP sessions (default 10)")
    parser.add_argument("-r", "--runs", type=int, default=3, help="rounds; every server and mode once per round (default 3)")
    parser.add_argument("-s", "--servers", default="sqlite,postgres,postfix,aiosmtpd",
                        help=f"comma-separated, from {','.join(SERVER_KEYS)}")
    parser.add_argument("-m", "--modes", default="new,reuse", help=f"comma-separated, from {','.join(MODE_KEYS)}")
    parser.add_argument("-w", "--workers", type=int, default=0, help="mailsuite runsmtp --workers (default 0 = one per core)")
    parser.add_argument("--per-session", type=int, default=50, help="messages per connection in reuse mode (default 50)")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing the sessions (default 1)")
    parser.add_argument("--size", type=int, default=2048, help="approximate message size in octets (default 2048)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed messages before each measurement (default 20)")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help="PostgreSQL maintenance database URL; bench databases are created beside it "
                             f"(default $BENCH_PG_URL or {DEFAULT_PG_URL})")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per measurement (default 600)")
    parser.add_argument("--max-background", type=float, default=25,
                        help="before each measurement wait for other load to drop below this %% of a core (default 25)")
    parser.add_argument("--background-wait", type=float, default=120,
                        help="seconds to wait for that before measuring anyway (default 120; 0 = never wait)")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run py-spy on each mailsuite worker during the timed part and write raw stacks and a "
                             "summary to DIR (profiled runs are slower; don't quote their rates)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy executable for --profile")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--profile-view", choices=sorted(Profiler.VIEWS), default="gil",
                        help="gil: Python work holding the GIL (what caps one worker); active: threads on a CPU; "
                             "wall: all threads, waits (fsync, locks, GIL) included (default gil)")
    parser.add_argument("--in-place", action="store_true",
                        help="run mailsuite from the working tree instead of a snapshot taken at start")
    parser.add_argument("--source", type=Path, metavar="DIR",
                        help="run mailsuite from this project tree (e.g. `git archive COMMIT | tar -x -C DIR`)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    parser.add_argument("--serve-discard", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--count-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_discard is None:
        servers = [s.strip() for s in args.servers.split(",") if s.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        for value, allowed, what in ((servers, SERVER_KEYS, "server"), (modes, MODE_KEYS, "mode")):
            unknown = set(value) - set(allowed)
            if unknown or not value:
                parser.error(f"unknown {what}(s) {sorted(unknown)}; choose from {','.join(allowed)}")
        if min(args.messages, args.clients, args.runs, args.per_session, args.client_procs, args.size) < 1:
            parser.error("--messages, --clients, --runs, --per-session, --client-procs and --size must be positive")
        if args.warmup < 0 or args.workers < 0:
            parser.error("--warmup and --workers must not be negative")
        if args.profile and not args.py_spy:
            parser.error("--profile needs py-spy (pip install py-spy, or pass --py-spy PATH)")
        if any(m.startswith("src-") for m in modes) and not shutil.which("smtp-source"):
            parser.error("modes src-* need Postfix's smtp-source")
        args.server_list, args.mode_list = servers, modes
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.serve_discard is not None:
        serve_discard(args.serve_discard, args.count_file)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    workers = args.workers or os.cpu_count() or 1
    mode_table = {
        "new": Mode("new", "new conn/msg", 1),
        "reuse": Mode("reuse", f"reused conn ({args.per_session}/session)", args.per_session),
        "src-new": Mode("src-new", "smtp-source, new conn/msg", 1, smtp_source=True),
        "src-reuse": Mode("src-reuse", "smtp-source, reused conn", 0, smtp_source=True),
    }
    modes = [mode_table[m] for m in args.mode_list]
    factories = {
        "sqlite": lambda: Mailsuite("sqlite", workers=workers, pg_url=args.pg_url, source=args.source),
        "postgres": lambda: Mailsuite("postgres", workers=workers, pg_url=args.pg_url, source=args.source),
        "postfix": Postfix,
        "aiosmtpd": Discard,
    }
    results, failures = [], 0
    with ExitStack() as cleanup:
        try:
            failures = _run(args, modes, factories, results, cleanup)
        finally:
            # Cleanup (leaving this block) must finish even if Ctrl-C is pressed again.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if failures:
        print(f"\n{failures} measurement(s) FAILED; see above", file=sys.stderr)
        return 1
    return 0


def _serve_sender_dns(cleanup):
    """A loopback DNS server for the sender's domain, as a real MX would find it on the Internet.

    mailsuite checks SPF, DKIM and DMARC on every message it receives over port 25: without an
    answering resolver each check waits out the machine's resolver and the rate measures that
    timeout. The sender publishes what a well-run domain does (SPF and a DMARC record), so the
    checks do their full work: SPF passes, DMARC evaluates and passes through SPF alignment.
    The TTL is an ordinary one (5 minutes), so a caching resolver may keep the answers.
    """
    sys.path.insert(0, str(ROOT))
    from tests.dnsserver import DNSServer

    sender_domain = SENDER.rpartition("@")[2]
    server = DNSServer({
        sender_domain: {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"], "MX": [(10, f"mx.{sender_domain}")]},
        f"mx.{sender_domain}": {"A": ["127.0.0.1"]},
        f"_dmarc.{sender_domain}": {"TXT": ["v=DMARC1; p=reject"]},
    }, ttl=300)
    server.start()
    cleanup.callback(server.stop)
    host, port = server.address
    os.environ["MAILSUITE_DNS_SERVERS"] = f"{host}:{port}"


def _run(args, modes, factories, results, cleanup):
    """Prepare the servers, measure every round, print the tables; returns the failure count."""
    failures = 0
    workdir = Path(tempfile.mkdtemp(prefix="mailsuite-smtp-bench-"))
    workdir.chmod(0o755)  # virtual(8) delivers as nobody below it
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    if args.source:
        args.source = args.source.resolve()
        if not (args.source / "manage.py").exists():
            raise BenchError(f"--source {args.source} has no manage.py")
        args.source_note = f"the tree at {args.source}"
    else:
        args.source_note = working_tree_state() + (", run in place" if args.in_place else ", snapshot taken at start")
        args.source = ROOT
        if not args.in_place:
            # Others may edit the working tree while this runs: every round measures the same code.
            args.source = workdir / "source"
            shutil.copytree(ROOT, args.source, symlinks=True, ignore=shutil.ignore_patterns(*SNAPSHOT_SKIP))
    _serve_sender_dns(cleanup)
    clients = Clients()
    cleanup.callback(clients.stop)
    profiler = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(args.py_spy, args.profile, args.profile_rate, args.profile_view)
        cleanup.callback(profiler.stop)
    targets = []
    for key in args.server_list:
        target = factories[key]()
        cleanup.callback(target.close)
        try:
            target.prepare(workdir)
        except Skip as reason:
            print(f"SKIPPED {key}: {reason}", file=sys.stderr)
            target.close()
            continue
        targets.append(target)
    if not targets:
        raise BenchError("no server to measure")
    print(machine_notes(targets, args))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"measuring {', '.join(t.label for t in targets)}; modes {', '.join(m.key for m in modes)}; "
          f"{args.runs} rounds of {args.messages} messages from {args.clients} sessions")
    for round_no in range(args.runs):
        for mode in modes:
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                try:
                    result = measure(target, mode, round_no, args, workdir, clients, profiler)
                except BenchError as error:
                    failures += 1
                    print(f"  round {round_no + 1} {mode.key:9} {target.label:38} FAILED: {error}", file=sys.stderr)
                    continue
                results.append(result)
                failures += 0 if result.verified else 1
                print(progress_line(target, result), flush=True)
    print()
    print(summary_table(results, targets, modes, args))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    if profiler:
        groups = collections.defaultdict(list)
        for path in sorted(args.profile.glob("*-pid*.txt")):
            server, mode = path.name.rsplit("-r", 1)[0].split("-", 1)
            groups[(server, mode)].append(path)
        report = [f"py-spy, view {args.profile_view}, raw stacks in {args.profile}"]
        for (server, mode), files in groups.items():
            report.append(f"\n== {server}, mode {mode}, {len(files)} worker profile(s):{summarize_profiles(files)}")
        (args.profile / "summary.txt").write_text("\n".join(report) + "\n")
        print("\n" + "\n".join(report))
    return failures


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; everything started here has been stopped and removed", file=sys.stderr)
        sys.exit(130)
