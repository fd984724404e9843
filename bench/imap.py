#!/usr/bin/env python3
"""IMAP benchmark: mailsuite's runimap against Dovecot 2.3, one load client, one run (issue 5).

Both servers run side by side on loopback high ports with the same accounts and the same
messages, and one asyncio client (raw IMAP over sockets, no imaplib) drives the same
workload against each:

  (a) session churn: C clients each looping LOGIN, SELECT, UID FETCH (FLAGS BODY.PEEK[]),
      UID STORE +FLAGS.SILENT (\\Deleted), UID EXPUNGE, APPEND, LOGOUT for D seconds, all
      on one mailbox (the reference figure in BENCHMARKS.md is measured that way)
  (b) the same commands with the sessions kept open: commands/s and latency per kind
  (c) a 10,000- and a 100,000-message folder: SELECT, UID FETCH 1:* (FLAGS), ENVELOPE and
      BODYSTRUCTURE of 500 messages, BODY[] of every message (MB/s), UID SEARCH TEXT,
      and the APPEND rate (C sessions loading the 10,000-message folder)
  (d) 1,000 idle clients (LOGIN, SELECT, IDLE) and the servers' memory per connection

Implementation notes:
- Dovecot: Debian's 2.3 package in a throwaway instance (own base dir, passwd-file users
  with plaintext passwords, maildir, mail owned by nobody, login chroot off, loopback
  only), started in the foreground in its own session and stopped by its pid. Its
  process limits are raised for (d): by default it stops at 100 imap processes.
- mailsuite: `manage.py runimap` with a fresh MAILSUITE_DATA_DIR under /tmp (SQLite), or
  with `--database postgres` a fresh database beside --pg-url, dropped afterwards.
  MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK=1, so both servers get plaintext LOGIN. It runs from
  a copy of the working tree taken at start (others edit it meanwhile), or --in-place.
- Loading: the small mailboxes and the 10,000-message folder go to both servers over
  APPEND (LITERAL+, one message per command, C sessions; that load is the APPEND rate).
  The big folder goes to Dovecot over MULTIAPPEND (several messages per command) and to
  mailsuite through the mail store's own write path in-process (IncomingMessage +
  place_messages, 500 per transaction; this script run with --bulk-load), at the same
  time. Both are reported with how they were loaded.
- Measurements alternate between the servers (round r starts with the other one) and
  report medians; ratios are "mailsuite speed relative to Dovecot": for a rate
  mailsuite/Dovecot, for a time or a memory figure Dovecot/mailsuite. Above 1 mailsuite
  is ahead. Every result is checked (message counts, search hits, literal sizes); a
  mismatch fails the run.
- The client reads bulk responses (FETCH 1:* FLAGS) in chunks without parsing lines, so
  its own cost does not hide the servers'. Its CPU use is reported.
- Every process this script starts is stopped by its id (each server with its process
  group), the PostgreSQL database dropped and the work directory removed, also on
  failure and Ctrl-C/SIGTERM.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the project's `imap` package: take bench/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from bench import smtp_ingest as ingest  # noqa: E402
from bench.smtp_ingest import BenchError  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "bench.test"
PASSWORD = "bench-password-1"
CHURN_USER = f"u1@{DOMAIN}"
BIG_USER = f"big@{DOMAIN}"
IDLE_USERS = [f"u{i}@{DOMAIN}" for i in range(1, 11)]
MEDIUM, BIG = "Medium", "Big"
NEEDLE = "zanzibarquux"  # in the body of one message in NEEDLE_EVERY
NEEDLE_EVERY = 1000
SEED_MESSAGES = 100  # the churn mailbox's size; every churn session appends one and expunges one
BULK_BATCH = 500
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
BULK_MARKER = "BENCH-BULK "


# Messages -----------------------------------------------------------------------------

_WORDS = (
    "mailbox folder message header envelope server client session search index quota "
    "flag answer thread subject reply archive draft sender recipient storage network "
    "protocol literal sequence number status select fetch store append expunge"
).split()


@functools.lru_cache(maxsize=512)
def _text(seed, words):
    out, line = [], []
    for k in range(words):
        line.append(_WORDS[(seed * 31 + k * 7 + k // 5) % len(_WORDS)])
        if len(line) == 12:
            out.append(" ".join(line).capitalize() + ".")
            line = []
    if line:
        out.append(" ".join(line).capitalize() + ".")
    return tuple(out)


_ATTACHMENT = bytes((k * 7 + k // 251) % 251 for k in range(8192))


def make_message(index):
    """A deterministic message, one of four shapes, 1.5–10 KB; index % NEEDLE_EVERY == 7 holds NEEDLE."""
    shape = index % 4
    lines = list(_text(index % 409, 150 + (index * 37) % 250))
    if index % NEEDLE_EVERY == 7:
        lines.insert(len(lines) // 2, f"The code word is {NEEDLE} today.")
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + index * 61))
    subject = f"Bench message {index} about {_WORDS[index % len(_WORDS)]}"
    headers = [
        f"From: Sender {index % 50} <sender{index % 50}@example.test>",
        f"To: Bench User <user@{DOMAIN}>",
        f"Date: {date}",
        f"Message-ID: <bench.{index}@example.test>",
        "MIME-Version: 1.0",
    ]
    text = "\r\n".join(lines) + "\r\n"
    if shape == 0:
        headers += [f"Subject: {subject}", "Content-Type: text/plain; charset=us-ascii"]
        body = text
    elif shape == 1:
        headers += [f"Subject: {subject}", 'Content-Type: multipart/alternative; boundary="alt-b"']
        html = "<html><body>" + "".join(f"<p>{line}</p>\r\n" for line in lines) + "</body></html>\r\n"
        body = ("--alt-b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text
                + "--alt-b\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n" + html + "--alt-b--\r\n")
    elif shape == 2:
        headers += [f"Subject: {subject} (report)", 'Content-Type: multipart/mixed; boundary="mix-b"']
        offset = index % 997
        blob = _ATTACHMENT[offset : offset + 3000 + (index % 7) * 500]
        attachment = base64.encodebytes(blob).decode().replace("\n", "\r\n")
        body = ("--mix-b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + text
                + f'--mix-b\r\nContent-Type: application/octet-stream; name="report-{index}.bin"\r\n'
                + f'Content-Disposition: attachment; filename="report-{index}.bin"\r\n'
                + "Content-Transfer-Encoding: base64\r\n\r\n" + attachment + "--mix-b--\r\n")
    else:
        encoded = base64.b64encode(f"Re: Grüße zu Nachricht {index - 1}".encode()).decode()
        headers += [f"Subject: =?utf-8?b?{encoded}?=", f"In-Reply-To: <bench.{index - 1}@example.test>",
                    f"References: <bench.{index - 2}@example.test> <bench.{index - 1}@example.test>",
                    "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"]
        body = "Gr=C3=BC=C3=9Fe,\r\n\r\n" + text
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("ascii")


def flags_for(index):
    return ("\\Seen",) if index % 3 else ()


def needle_hits(count):
    return sum(1 for i in range(count) if i % NEEDLE_EVERY == 7)


def append_args(index, folder):
    """One APPEND's arguments with a non-synchronising literal (RFC 7888 LITERAL+)."""
    data = make_message(index)
    flags = " ".join(flags_for(index))
    return b"%s (%s) {%d+}\r\n%s" % (folder.encode(), flags.encode(), len(data), data)


# The client -----------------------------------------------------------------------------


class ImapError(Exception):
    pass


@dataclass
class Reply:
    status: bytes
    line: bytes
    untagged: list  # lines with any literals joined in (only when collected)
    octets: int  # everything received for the command
    literal_octets: int = 0
    literals: int = 0

    def code_value(self, name):
        match = re.search(rb"\[" + name + rb" ([^\]]*)\]", self.line)
        return match.group(1) if match else None


class Client:
    """One IMAP connection, lock-step: one command, then its whole response."""

    def __init__(self, reader, writer, greeting):
        self.reader = reader
        self.writer = writer
        self.greeting = greeting
        self.count = 0

    @classmethod
    async def connect(cls, port):
        reader, writer = await asyncio.open_connection(HOST, port, limit=16 * 1024 * 1024)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            writer.close()
            raise ImapError(f"greeting: {greeting[:200]!r}")
        return cls(reader, writer, greeting)

    def _send(self, args):
        self.count += 1
        tag = b"b%d" % self.count
        self.writer.write(tag + b" " + args + b"\r\n")
        return tag

    async def command(self, args, *, collect=True, expect=b"OK"):
        tag = self._send(args)
        await self.writer.drain()
        reader = self.reader
        untagged, octets, literal_octets, literals = [], 0, 0, 0
        while True:
            line = await reader.readline()
            if not line:
                raise ImapError(f"connection closed during {args[:40]!r}")
            octets += len(line)
            pieces = None
            while line.endswith(b"}\r\n"):
                start = line.rfind(b"{")
                size = line[start + 1 : -3].rstrip(b"+")
                if start < 0 or not size.isdigit():
                    break
                data = await reader.readexactly(int(size))
                literals += 1
                literal_octets += len(data)
                if collect:
                    pieces = (pieces or []) + [line, data]
                line = await reader.readline()
                octets += len(data) + len(line)
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1 :].split(b" ", 1)[0]
                reply = Reply(status, line, untagged, octets, literal_octets, literals)
                if expect is not None and status != expect:
                    raise ImapError(f"{args[:60]!r} -> {line.strip()[:200]!r}")
                return reply
            if collect:
                untagged.append(b"".join(pieces) + line if pieces else line)

    async def command_bulk(self, args):
        """A command whose response has no literals, read in chunks: (untagged lines, tagged line)."""
        tag = self._send(args)
        await self.writer.drain()
        marker = b"\r\n" + tag + b" "
        tail = b"\r\n"  # the tagged line may be the first one
        lines = 0
        while True:
            chunk = await self.reader.read(1 << 20)
            if not chunk:
                raise ImapError(f"connection closed during {args[:40]!r}")
            lines += chunk.count(b"\n")
            window = tail + chunk
            at = window.find(marker)
            if at >= 0 and window.endswith(b"\r\n"):
                tagged = window[at + 2 :]
                if not tagged.split(b" ", 2)[1:2] == [b"OK"]:
                    raise ImapError(f"{args[:60]!r} -> {tagged.strip()[:200]!r}")
                return lines - 1, tagged
            tail = window[-(len(marker) + 200) :]

    async def login(self, user):
        await self.command(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))

    async def idle(self):
        tag = self._send(b"IDLE")
        await self.writer.drain()
        line = await self.reader.readline()
        if not line.startswith(b"+"):
            raise ImapError(f"IDLE -> {line.strip()[:200]!r}")
        self.idle_tag = tag

    async def logout(self):
        try:
            await self.command(b"LOGOUT")
        except (ImapError, ConnectionError, asyncio.IncompleteReadError):
            pass
        self.close()

    def close(self):
        try:
            self.writer.close()
        except Exception:  # already gone
            pass


def appended_uid(reply):
    value = reply.code_value(b"APPENDUID")  # RFC 4315: "APPENDUID uidvalidity uid-set"
    if value is None:
        raise ImapError(f"APPEND without APPENDUID: {reply.line.strip()!r}")
    return int(value.split()[1].split(b":")[-1].split(b",")[-1])


# Process helpers --------------------------------------------------------------------------


def _status_kb(pid, field_name):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def memory_kb(pids):
    """(RSS, PSS) in KiB summed over live `pids`."""
    rss = pss = 0
    for pid in pids:
        try:
            rss += _status_kb(pid, "VmRSS")
            pss += _pss_kb(pid)
        except (OSError, ValueError):
            pass
    return rss, pss


def group_cpu(pgid):
    """CPU seconds of a process group: live members plus the children they have reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in ingest.group_members(pgid):
        try:
            stat = ingest._proc_stat(pid)
        except OSError:
            continue
        total += sum(int(v) for v in stat[11:15]) / ticks  # utime stime cutime cstime
    return total


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# Servers --------------------------------------------------------------------------------


class Server:
    key = ""
    label = ""
    process = None
    port = None
    load_notes = None

    def pids(self):
        return ingest.group_members(self.process.pid) if self.process else []

    def cpu(self):
        return group_cpu(self.process.pid) if self.process else 0.0

    def memory(self):
        return memory_kb(self.pids())


DOVECOT_CONF = """\
# Throwaway benchmark instance written by bench/imap.py: loopback only, no TLS.
base_dir = {base}/run
state_dir = {base}/state
instance_name = mailsuite-imap-bench-{port}
log_path = {base}/log/dovecot.log
info_log_path = {base}/log/info.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
# Mail is owned by nobody; root may not own it and nobody's uid is below the default 500.
first_valid_uid = 1
last_valid_uid = 0
mail_location = maildir:~/Maildir
# The defaults (100 processes per service, 10 connections per user and IP) would refuse
# part of the 1,000 idle clients; fsync (optimized) and the login model (one imap-login
# and one imap process per session) stay Debian's.
default_process_limit = {processes}
default_client_limit = {clients}
namespace inbox {{
  inbox = yes
  separator = /
}}
protocol imap {{
  mail_max_userip_connections = {clients}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap-urlauth-login {{
  inet_listener imap-urlauth {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"""


class Dovecot(Server):
    key = "dovecot"

    def __init__(self, users, *, idle_clients):
        self.users = users
        self.idle_clients = idle_clients
        self.base = None

    def prepare(self, workdir):
        if not shutil.which("dovecot"):
            raise BenchError("dovecot is not installed (apt-get install dovecot-imapd)")
        if os.geteuid() != 0:
            raise BenchError("the throwaway Dovecot instance is set up for root (mail owned by nobody)")
        version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.split()
        self.version = version[0] if version else "?"
        self.label = f"Dovecot {self.version}"
        self.base = workdir / "dovecot"
        for sub in ("run", "state", "log", "home"):
            (self.base / sub).mkdir(parents=True)
        self.base.chmod(0o755)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.base / "home", nobody.pw_uid, nobody.pw_gid)
        with open(self.base / "users", "w") as users:
            for user in self.users:
                users.write(f"{user}:{{PLAIN}}{PASSWORD}:{nobody.pw_uid}:{nobody.pw_gid}::{self.base}/home/{user}::\n")
        (self.base / "users").chmod(0o644)
        self.port = ingest.free_port()
        limit = self.idle_clients + 200
        (self.base / "dovecot.conf").write_text(
            DOVECOT_CONF.format(base=self.base, port=self.port, processes=limit, clients=max(1000, limit * 2))
        )
        ingest.run_checked(["doveconf", "-c", str(self.base / "dovecot.conf"), "-n"], what="doveconf")

    def start(self):
        log = self.base / "log" / "master.out"
        with open(log, "wb") as out:
            # -F: the master stays in the foreground, so this pid is its pid.
            self.process = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.base / "dovecot.conf")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        ingest.wait_listening(self.port, 1, timeout=30, alive=lambda: self.process.poll() is None,
                              log=self.base / "log" / "dovecot.log")

    def maildir_bytes(self, user, folder):
        path = self.base / "home" / user / "Maildir" / f".{folder}"
        return sum(f.stat().st_size for sub in ("cur", "new") for f in (path / sub).glob("*"))

    def stop(self):
        ingest.stop_session(self.process, timeout=20)
        self.process = None

    def close(self):
        self.stop()


ACCOUNTS_CODE = """
from accounts import actions
actions.create_domain({domain!r})
for address in {users!r}:
    actions.create_account(address, password={password!r}, quota=0)
"""


class Mailsuite(Server):
    key = "mailsuite"

    def __init__(self, database, users, *, pg_url, source):
        self.database = database
        self.users = users
        self.pg_url = pg_url
        self.source = source
        self.label = f"mailsuite ({'SQLite' if database == 'sqlite' else 'PostgreSQL'})"
        self.database_name = None
        self.database_url = None
        self.data_dir = None
        self.imaps_port = None

    def env(self):
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(MAILSUITE_DATA_DIR=str(self.data_dir), MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK="1",
                   PYTHONUNBUFFERED="1")
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        return env

    def manage(self, *args, what):
        # cwd: Python puts the working directory first on the path here, so it must be the tree we run.
        result = subprocess.run([ingest.venv_python(), str(self.source / "manage.py"), *args], env=self.env(),
                                cwd=self.source, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise BenchError(f"mailsuite: {what} failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
        return result.stdout

    def _pg(self, sql):
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def prepare(self, workdir):
        self.data_dir = workdir / "mailsuite-data"
        self.data_dir.mkdir()
        if self.database == "postgres":
            self.database_name = f"mailsuite_imap_bench_{os.getpid()}"
            self._pg(f'CREATE DATABASE "{self.database_name}"')
            self.database_url = urllib.parse.urlsplit(self.pg_url)._replace(path="/" + self.database_name).geturl()
        self.manage("migrate", "--noinput", "-v0", what="migrate")
        self.manage("tls", "ensure", what="tls ensure")
        code = ACCOUNTS_CODE.format(domain=DOMAIN, users=self.users, password=PASSWORD)
        self.manage("shell", "-c", code, what="accounts")
        self.port, self.imaps_port = ingest.free_port(), ingest.free_port()

    def start(self):
        self.log = self.data_dir.parent / "runimap.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [ingest.venv_python(), str(self.source / "manage.py"), "runimap", "--host", HOST,
                 "--port", str(self.port), "--imaps-port", str(self.imaps_port)],
                env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.source,
            )
        # One worker process per core unless MAILSUITE_IMAP_WORKERS says otherwise, all listening on the port.
        workers = int(self.env().get("MAILSUITE_IMAP_WORKERS") or 0) or os.cpu_count() or 1
        ingest.wait_listening(self.port, workers, timeout=60, alive=lambda: self.process.poll() is None,
                              log=self.log)

    def bulk_load(self, user, folder, start, count, *, fsync):
        """Load messages start..start+count-1 through the mail store in another process."""
        argv = [ingest.venv_python(), str(Path(__file__).resolve()), "--bulk-load", "--source", str(self.source),
                "--bulk-user", user, "--bulk-folder", folder, "--bulk-start", str(start), "--bulk-count", str(count)]
        if not fsync:
            argv.append("--bulk-no-fsync")
        return subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=self.source)

    def stop(self):
        ingest.stop_session(self.process, timeout=20)
        self.process = None

    def close(self):
        self.stop()
        if self.database_name:
            try:
                self._pg(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            except Exception as error:  # keep cleaning up
                print(f"warning: could not drop database {self.database_name}: {error}", file=sys.stderr)
            self.database_name = None


def bulk_load_main(args):
    """--bulk-load: place messages through mailstore.actions in this process (the fast path)."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    sys.path.insert(0, str(args.source))
    os.chdir(args.source)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
    if args.bulk_no_fsync:
        os.fsync = lambda fd: None  # a throwaway bench store: durability is not what we measure here
    import django

    django.setup()
    from django.db import transaction

    from accounts.models import Account
    from mailstore.actions import IncomingMessage, Job, Placement, forget_new_blobs_on_rollback, place_messages
    from mailstore.storage import sync_names

    localpart, domain = args.bulk_user.split("@")
    account = Account.objects.get(localpart=localpart, domain__name=domain)
    started = time.monotonic()
    placed = 0
    # Parsing holds the GIL; creating and writing the blob files does not: a few threads overlap them.
    pool = ThreadPoolExecutor(max_workers=4)
    for first in range(args.bulk_start, args.bulk_start + args.bulk_count, BULK_BATCH):
        indices = range(first, min(first + BULK_BATCH, args.bulk_start + args.bulk_count))
        incomings = list(pool.map(lambda i: IncomingMessage(make_message(i)), indices))
        jobs = [Job(incoming, [Placement(account, args.bulk_folder, flags=flags_for(i))])
                for incoming, i in zip(incomings, indices)]
        sync_names([incoming.stored.name for incoming in incomings])
        with forget_new_blobs_on_rollback(incomings), transaction.atomic():
            place_messages(jobs)
        for job in jobs:
            if job.outcomes[0].error:
                raise SystemExit(f"bulk load: {job.outcomes[0].error}")
        placed += len(jobs)
    try:
        from mailstore import search_index  # trees before it indexed in the storing transaction
    except ImportError:
        search_index = None
    if search_index:
        search_index.catch_up()  # part of storing them: the load rate counts it
    print(BULK_MARKER + json.dumps({"placed": placed, "seconds": time.monotonic() - started}), flush=True)


# Workloads ------------------------------------------------------------------------------


@dataclass
class Measured:
    """One figure of one server in one round."""

    value: float
    detail: dict = field(default_factory=dict)


class Tally:
    def __init__(self):
        self.latency = {}
        self.errors = 0
        self.samples = []
        self.sessions = 0

    def add(self, kind, seconds):
        self.latency.setdefault(kind, []).append(seconds)

    def fail(self, error):
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(f"{type(error).__name__}: {error}")


async def timed(tally, kind, awaitable):
    start = time.perf_counter()
    result = await awaitable
    tally.add(kind, time.perf_counter() - start)
    return result


async def load_append(port, user, folder, indices, *, sessions, per_command=1):
    """APPEND the messages `indices` with `sessions` sessions; returns (seconds, uids)."""
    pending = iter(range(0, len(indices), per_command))
    uids = []

    async def one_session():
        client = await Client.connect(port)
        await client.login(user)
        for start in pending:
            batch = indices[start : start + per_command]
            reply = await client.command(b"APPEND " + b" ".join(
                [append_args(batch[0], folder)] + [append_args(i, folder).split(b" ", 1)[1] for i in batch[1:]]))
            uids.append(appended_uid(reply))
        await client.logout()

    start = time.monotonic()
    await asyncio.gather(*(one_session() for _ in range(sessions)))
    return time.monotonic() - start, uids


async def churn(port, owned, seconds, *, kept_open):
    """(a) or (b): each client owns one message and replaces it every cycle."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def cycle(client, slot):
        uid = owned[slot]
        reply = await timed(tally, "FETCH", client.command(b"UID FETCH %d (FLAGS BODY.PEEK[])" % uid))
        if reply.literals != 1:
            raise ImapError(f"UID FETCH {uid}: {reply.literals} literals")
        await timed(tally, "STORE", client.command(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid))
        await timed(tally, "EXPUNGE", client.command(b"UID EXPUNGE %d" % uid))
        reply = await timed(tally, "APPEND", client.command(b"APPEND " + append_args(100_000 + next(counter), "INBOX")))
        owned[slot] = appended_uid(reply)

    async def client_loop(slot):
        client = None
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                if client is None:
                    client = await timed(tally, "connect", Client.connect(port))
                    await timed(tally, "LOGIN", client.login(CHURN_USER))
                    await timed(tally, "SELECT", client.command(b"SELECT INBOX"))
                await cycle(client, slot)
                if not kept_open:
                    await timed(tally, "LOGOUT", client.logout())
                    client = None
                    tally.add("session", time.perf_counter() - started)
                tally.sessions += 1
        except (ImapError, OSError, asyncio.IncompleteReadError) as error:
            tally.fail(error)
        finally:
            if client is not None:
                await client.logout()

    start = time.monotonic()
    cpu = os.times()
    await asyncio.gather(*(client_loop(slot) for slot in range(len(owned))))
    after = os.times()
    tally.elapsed = time.monotonic() - start
    tally.client_cpu = (after.user - cpu.user) + (after.system - cpu.system)
    return tally


async def folder_ops(port, folder, count, *, with_bodies):
    """(c) on one folder: SELECT, UID FETCH 1:* (FLAGS), UID SEARCH TEXT, and on the
    medium folder ENVELOPE/BODYSTRUCTURE of 500 messages and BODY[] of all."""
    out = {}
    client = await Client.connect(port)
    await client.login(BIG_USER)
    start = time.perf_counter()
    reply = await client.command(b"SELECT " + folder.encode())
    out["select"] = time.perf_counter() - start
    exists = [int(line.split()[1]) for line in reply.untagged if line.endswith(b" EXISTS\r\n")]
    if exists != [count]:
        raise ImapError(f"SELECT {folder}: EXISTS {exists}, expected {count}")
    start = time.perf_counter()
    lines, _ = await client.command_bulk(b"UID FETCH 1:* (FLAGS)")
    out["flags"] = time.perf_counter() - start
    if lines != count:
        raise ImapError(f"UID FETCH 1:* (FLAGS) on {folder}: {lines} lines, expected {count}")
    start = time.perf_counter()
    reply = await client.command(b'UID SEARCH TEXT "%s"' % NEEDLE.encode())
    out["search"] = time.perf_counter() - start
    hits = [line for line in reply.untagged if line.startswith(b"* SEARCH")]
    found = len(hits[0].split()) - 2 if hits else 0
    if found != needle_hits(count):
        raise ImapError(f"SEARCH TEXT on {folder}: {found} hits, expected {needle_hits(count)}")
    if with_bodies:
        first = max(1, count - 499)  # loaded in the same order on both servers
        start = time.perf_counter()
        reply = await client.command(b"UID FETCH %d:%d (ENVELOPE BODYSTRUCTURE)" % (first, count))
        out["envelope"] = time.perf_counter() - start
        if len(reply.untagged) != min(500, count):
            raise ImapError(f"ENVELOPE BODYSTRUCTURE: {len(reply.untagged)} responses")
        start = time.perf_counter()
        reply = await client.command(b"UID FETCH 1:* (BODY.PEEK[])", collect=False)
        seconds = time.perf_counter() - start
        if reply.literals != count:
            raise ImapError(f"BODY[] of {folder}: {reply.literals} literals, expected {count}")
        out["body_mb_s"] = reply.literal_octets / seconds / 1e6
        out["body_octets"] = reply.literal_octets
    await client.logout()
    return out


async def open_idle(port, count, *, concurrency=50):
    """(d): `count` clients LOGIN, SELECT INBOX and IDLE; returns them and the seconds it took."""
    gate = asyncio.Semaphore(concurrency)
    clients = []

    async def one(i):
        async with gate:
            client = await Client.connect(port)
            clients.append(client)
            await client.login(IDLE_USERS[i % len(IDLE_USERS)])
            await client.command(b"SELECT INBOX")
            await client.idle()

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    return clients, time.monotonic() - start


async def close_idle(clients):
    async def one(client):
        try:
            client.writer.write(b"DONE\r\n")
            await client.writer.drain()
            while not (await client.reader.readline()).startswith(client.idle_tag + b" "):
                pass
            await client.logout()
        except (ConnectionError, asyncio.IncompleteReadError, ImapError):
            client.close()

    gate = asyncio.Semaphore(100)

    async def gated(client):
        async with gate:
            await one(client)

    await asyncio.gather(*(gated(c) for c in clients))


# The run --------------------------------------------------------------------------------


class Runner:
    def __init__(self, args, servers, profiler):
        self.args = args
        self.servers = servers  # mailsuite first
        self.profiler = profiler
        self.results = {}  # (metric, server key) -> [Measured]
        self.notes = []
        self.owned = {}

    def record(self, metric, server, value, **detail):
        self.results.setdefault((metric, server.key), []).append(Measured(value, detail))

    def rotation(self, round_no):
        shift = round_no % len(self.servers)
        return self.servers[shift:] + self.servers[:shift]

    def profile(self, server, name):
        """py-spy on mailsuite's runimap during one timed step (a context manager's worth)."""
        profiler = self.profiler if server.key == "mailsuite" else None

        class _Scope:
            def __enter__(scope):
                if profiler:
                    profiler.start(server.pids(), name)  # the supervisor and its worker processes

            def __exit__(scope, *exc):
                if profiler:
                    profiler.stop()

        return _Scope()

    async def setup_mail(self):
        args = self.args
        for server in self.servers:
            client = await Client.connect(server.port)
            await client.login(BIG_USER)
            for folder in (MEDIUM, BIG):
                await client.command(b"CREATE " + folder.encode())
            await client.logout()
            _, uids = await load_append(server.port, CHURN_USER, "INBOX", list(range(SEED_MESSAGES)), sessions=1)
            self.owned[server.key] = sorted(uids)[: args.clients]
        # APPEND rate: the first part of the medium folder, C sessions, one message per APPEND,
        # servers one after the other; the rest of it and the big folder are loaded untimed.
        sample = list(range(args.append_sample))
        for server in self.servers:
            background = ingest.quiet_machine(args.max_background, args.background_wait)
            before = server.cpu()
            with self.profile(server, "append"):
                seconds, uids = await load_append(server.port, BIG_USER, MEDIUM, sample, sessions=args.clients)
            cpu = server.cpu() - before
            if sorted(uids) != list(range(1, len(sample) + 1)):
                raise BenchError(f"{server.label}: {MEDIUM} got UIDs {sorted(uids)[:5]}…, expected 1..{len(sample)}")
            rate = len(sample) / seconds
            self.record("append", server, rate, cpu=100 * cpu / seconds, background=background)
            print(f"  APPEND {len(sample)} messages into {MEDIUM} ({args.clients} sessions, one message per "
                  f"command, LITERAL+): {server.label} {rate:,.0f}/s, server CPU {100 * cpu / seconds:.0f} % "
                  f"(background {background:.0f} %)", flush=True)
        await self.load_rest()

    async def load_rest(self):
        """The rest of the medium folder (both over MULTIAPPEND, one session, so UID n is the
        same message on both) and the big folder (see the module notes), all at once."""
        args = self.args
        dovecot = next(s for s in self.servers if s.key == "dovecot")
        mailsuite = next(s for s in self.servers if s.key == "mailsuite")
        start = time.monotonic()
        rest = list(range(args.append_sample, args.medium))

        async def medium_rest(server):
            seconds, _ = await load_append(server.port, BIG_USER, MEDIUM, rest, sessions=1, per_command=50)
            return len(rest) / seconds if rest else 0

        async def big_dovecot():
            seconds, _ = await load_append(dovecot.port, BIG_USER, BIG, list(range(args.big)), sessions=4, per_command=50)
            return args.big / seconds

        loader = mailsuite.bulk_load(BIG_USER, BIG, 0, args.big, fsync=args.bulk_fsync)
        try:
            rates = await asyncio.gather(medium_rest(mailsuite), medium_rest(dovecot), big_dovecot(),
                                         asyncio.get_running_loop().run_in_executor(None, loader.communicate))
        finally:
            if loader.poll() is None:
                loader.kill()
                loader.wait()
        out, err = rates[3]
        if loader.returncode != 0:
            raise BenchError(f"bulk load failed: {err.strip()[-1500:]}")
        report = json.loads([line for line in out.splitlines() if line.startswith(BULK_MARKER)][-1][len(BULK_MARKER):])
        if report["placed"] != args.big:
            raise BenchError(f"big folder load incomplete: {report}")
        fsync = "with" if args.bulk_fsync else "without"
        common = (f"{MEDIUM} ({args.medium:,}): {args.append_sample:,} by APPEND (timed), the rest by MULTIAPPEND "
                  "(50 a command, 1 session)")
        mailsuite.load_notes = (f"{common}, {rates[0]:,.0f} msg/s; {BIG} ({args.big:,}): in-process bulk path "
                                f"(IncomingMessage + place_messages, {BULK_BATCH} a transaction, {fsync} fsync), "
                                f"{args.big / report['seconds']:,.0f} msg/s")
        dovecot.load_notes = (f"{common}, {rates[1]:,.0f} msg/s; {BIG} ({args.big:,}): MULTIAPPEND over IMAP "
                              f"(50 a command, 4 sessions), {rates[2]:,.0f} msg/s")
        print(f"  loaded in {time.monotonic() - start:.0f} s, all at once:\n    mailsuite: {mailsuite.load_notes}\n"
              f"    Dovecot: {dovecot.load_notes}", flush=True)

    async def run_churn(self):
        args = self.args
        modes = [kept_open for kept_open, section in ((False, "a"), (True, "b")) if section in args.section_set]
        for round_no in range(args.rounds):
            for kept_open in modes:
                metric = "steady" if kept_open else "churn"
                for server in self.rotation(round_no):
                    background = ingest.quiet_machine(args.max_background, args.background_wait)
                    before, busy = server.cpu(), ingest.cpu_busy_snapshot()
                    with self.profile(server, f"{metric}-r{round_no + 1}"):
                        tally = await churn(server.port, self.owned[server.key], args.duration, kept_open=kept_open)
                    cpu = 100 * (server.cpu() - before) / tally.elapsed
                    machine = ingest.busy_percent(busy, ingest.cpu_busy_snapshot())
                    client_cpu = 100 * tally.client_cpu / tally.elapsed
                    if tally.errors:
                        raise BenchError(f"{server.label} {metric}: {tally.errors} errors, e.g. {tally.samples}")
                    kinds = {k: (len(v) / tally.elapsed, 1000 * statistics.mean(v), 1000 * percentile(v, 0.99))
                             for k, v in tally.latency.items()}
                    commands = sum(len(v) for k, v in tally.latency.items() if k not in ("session", "connect"))
                    if kept_open:
                        value = sum(len(tally.latency[k]) for k in ("FETCH", "STORE", "EXPUNGE", "APPEND")) / tally.elapsed
                    else:
                        value = tally.sessions / tally.elapsed
                    self.record(metric, server, value, kinds=kinds, cpu=cpu, machine=machine, client=client_cpu,
                                background=background)
                    per_kind = ", ".join(f"{k} {rate:,.0f}/s {mean:.1f} ms" for k, (rate, mean, _) in kinds.items()
                                         if k not in ("connect",))
                    unit = "commands/s" if kept_open else "sessions/s"
                    print(f"  round {round_no + 1} ({'b' if kept_open else 'a'}) {server.label:22} {value:8,.0f} {unit} "
                          f"[{per_kind}] server CPU {cpu:.0f} %, client {client_cpu:.0f} %, machine {machine:.0f} % "
                          f"({commands} commands; background {background:.0f} %)", flush=True)

    async def run_folders(self):
        args = self.args
        for round_no in range(args.rounds):
            for server in self.rotation(round_no):
                background = ingest.quiet_machine(args.max_background, args.background_wait)
                for folder, count, bodies in ((MEDIUM, args.medium, True), (BIG, args.big, False)):
                    tag = "medium" if folder == MEDIUM else "big"
                    with self.profile(server, f"folder-{tag}-r{round_no + 1}"):
                        out = await folder_ops(server.port, folder, count, with_bodies=bodies)
                    for name in ("select", "flags", "search", "envelope", "body_mb_s"):
                        if name in out:
                            self.record(f"{name}-{tag}", server, out[name], background=background)
                    shown = ", ".join(f"{k} {v * 1000:,.0f} ms" if k != "body_mb_s" else f"BODY[] {v:.1f} MB/s"
                                      for k, v in out.items() if k != "body_octets")
                    print(f"  round {round_no + 1} (c) {server.label:22} {folder} ({count:,}): {shown} "
                          f"(background {background:.0f} %)", flush=True)

    async def run_idle(self):
        args = self.args
        for server in self.servers:
            background = ingest.quiet_machine(args.max_background, args.background_wait)
            await asyncio.sleep(1)
            rss0, pss0 = server.memory()
            procs0 = len(server.pids())
            clients, seconds = await open_idle(server.port, args.idle)
            try:
                await asyncio.sleep(2)
                rss1, pss1 = server.memory()
                procs1 = len(server.pids())
            finally:
                await close_idle(clients)
            rss_kb = (rss1 - rss0) * 1024 / 1000 / args.idle  # KiB -> kB per connection
            pss_kb = (pss1 - pss0) * 1024 / 1000 / args.idle
            self.record("idle", server, rss_kb, pss=pss_kb, rss0=rss0, rss1=rss1, procs=(procs0, procs1), open_s=seconds,
                        background=background)
            print(f"  (d) {server.label:22} {args.idle} idle clients in {seconds:.1f} s; RSS {rss0 / 1024:,.1f} → "
                  f"{rss1 / 1024:,.1f} MiB over {procs0} → {procs1} processes: {rss_kb:,.1f} kB per connection "
                  f"(PSS {pss_kb:,.1f} kB; background {background:.0f} %)", flush=True)


# Report ---------------------------------------------------------------------------------

# metric key, label, unit, higher is better, target (kind, bound)
METRICS = [
    ("churn", "(a) session churn, {c} clients, one mailbox", "sessions/s", True, ("ahead", 1.0)),
    ("steady", "(b) sessions kept open: FETCH+STORE+EXPUNGE+APPEND", "commands/s", True, ("within2", 0.5)),
    ("select-medium", "(c) SELECT {m} messages", "ms", False, ("within2", 0.5)),
    ("select-big", "(c) SELECT {b} messages", "ms", False, ("within2", 0.5)),
    ("flags-medium", "(c) UID FETCH 1:* (FLAGS), {m}", "ms", False, ("within2", 0.5)),
    ("flags-big", "(c) UID FETCH 1:* (FLAGS), {b}", "ms", False, ("within2", 0.5)),
    ("envelope-medium", "(c) UID FETCH 500 (ENVELOPE BODYSTRUCTURE)", "ms", False, ("within2", 0.5)),
    ("body_mb_s-medium", "(c) UID FETCH 1:* (BODY.PEEK[]), {m}", "MB/s", True, ("within2", 0.5)),
    ("search-medium", "(c) UID SEARCH TEXT, {m}", "ms", False, ("faster", 1.0)),
    ("search-big", "(c) UID SEARCH TEXT, {b}", "ms", False, ("faster", 1.0)),
    ("append", "(c) APPEND rate, {c} sessions", "msg/s", True, ("within2", 0.5)),
    ("idle", "(d) memory per idle connection ({i} clients), RSS", "kB", False, ("under", 100.0)),
]
TARGET_TEXT = {"ahead": "ahead of Dovecot", "within2": "within 2×", "faster": "faster than Dovecot",
               "under": "< 100 kB"}


def _median_value(runner, metric, key):
    runs = runner.results.get((metric, key))
    return statistics.median(r.value for r in runs) if runs else None


def _show(value, unit):
    if value is None:
        return "–"
    if unit == "ms":
        return f"{value * 1000:,.1f}" if value < 0.1 else f"{value * 1000:,.0f}"
    if unit in ("MB/s", "kB"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _background(runner, metric):
    values = [r.detail["background"] for key in ("mailsuite", "dovecot") for r in runner.results.get((metric, key), [])]
    return f"{statistics.median(values):.0f} %" if values else "–"


def summary(runner, args):
    lines = ["| workload | unit | mailsuite | Dovecot | × Dovecot | target | met | background |",
             "|---|---|--:|--:|--:|---|---|--:|"]
    verdicts = []
    names = dict(c=args.clients, m=f"{args.medium:,}", b=f"{args.big:,}", i=f"{args.idle:,}")
    for metric, label, unit, higher, (kind, bound) in METRICS:
        ours, theirs = _median_value(runner, metric, "mailsuite"), _median_value(runner, metric, "dovecot")
        if ours is None and theirs is None:
            continue
        ratio = None
        if ours and theirs:
            ratio = ours / theirs if higher else theirs / ours
        if kind == "under":
            met = ours is not None and ours < bound
        else:
            met = ratio is not None and (ratio > bound if kind in ("ahead", "faster") else ratio >= bound)
        verdicts.append((label.format(**names), met))
        lines.append(f"| {label.format(**names)} | {unit} | {_show(ours, unit)} | {_show(theirs, unit)} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}'} | {TARGET_TEXT[kind]} | {'met' if met else 'NOT met'} | "
                     f"{_background(runner, metric)} |")
    # Per command kind in (b), and the session's steps in (a): rates are equal within a cycle, latency is what differs.
    detail = ["", "Latency per command, mean ms (median over rounds); mailsuite / Dovecot:", ""]
    detail += ["| workload | " + " | ".join(KINDS) + " |", "|---|" + "--:|" * len(KINDS)]
    for metric in [m for m in ("churn", "steady") if (m, "mailsuite") in runner.results]:
        cells = []
        for kind in KINDS:
            values = []
            for key in ("mailsuite", "dovecot"):
                runs = runner.results.get((metric, key), [])
                means = [r.detail["kinds"][kind][1] for r in runs if kind in r.detail["kinds"]]
                values.append(statistics.median(means) if means else None)
            cells.append("–" if None in values else f"{values[0]:.1f} / {values[1]:.1f}")
        detail.append(f"| ({SECTION[metric]}) {metric} | " + " | ".join(cells) + " |")
    cpu = ["", "CPU during (a)/(b), median % of one core (server / client / whole machine):"]
    for metric in ("churn", "steady"):
        for key in ("mailsuite", "dovecot"):
            runs = runner.results.get((metric, key), [])
            if runs:
                med = lambda name: statistics.median(r.detail[name] for r in runs)  # noqa: E731
                cpu.append(f"  ({SECTION[metric]}) {key}: {med('cpu'):.0f} % / {med('client'):.0f} % / {med('machine'):.0f} %")
    idle = runner.results.get(("idle", "dovecot"))
    if idle:
        ours = runner.results.get(("idle", "mailsuite"))[0]
        cpu.append(f"  (d) PSS per idle connection: mailsuite {ours.detail['pss']:.1f} kB, Dovecot {idle[0].detail['pss']:.1f} kB "
                   f"(Dovecot runs one imap process per connection: {idle[0].detail['procs'][0]} → {idle[0].detail['procs'][1]} processes)")
    return "\n".join(lines + detail + cpu), verdicts


SECTION = {"churn": "a", "steady": "b"}
KINDS = ("connect", "LOGIN", "SELECT", "FETCH", "STORE", "EXPUNGE", "APPEND", "LOGOUT")


# Main -----------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes for a try-out: 2,000/10,000-message folders, 5 s loops, 1 round, 200 idle")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help=f"PostgreSQL maintenance database; the bench database is created beside it ({DEFAULT_PG_URL})")
    parser.add_argument("-c", "--clients", type=int, default=10, help="concurrent clients in (a), (b) and APPEND (10)")
    parser.add_argument("-d", "--duration", type=float, help="seconds per (a)/(b) measurement (15; quick 5)")
    parser.add_argument("-r", "--rounds", type=int, help="rounds of (a), (b) and (c), servers alternating (3; quick 1)")
    parser.add_argument("--medium", type=int, help="messages in the medium folder (10000; quick 2000)")
    parser.add_argument("--big", type=int, help="messages in the big folder (100000; quick 10000)")
    parser.add_argument("--idle", type=int, help="idle clients in (d) (1000; quick 200)")
    parser.add_argument("--append-sample", type=int,
                        help="medium-folder messages loaded one per APPEND and timed (2000; quick 1000)")
    parser.add_argument("--sections", default="a,b,c,d", help="which of a,b,c,d to run (loading always runs)")
    parser.add_argument("--bulk-fsync", action="store_true",
                        help="fsync every blob while bulk-loading mailsuite's big folder (slower; off by default)")
    parser.add_argument("--max-background", type=float, default=25,
                        help="before each measurement wait for other load to drop below this %% of a core (25)")
    parser.add_argument("--background-wait", type=float, default=30, help="seconds to wait for that (30)")
    parser.add_argument("--in-place", action="store_true", help="run mailsuite from the working tree, not a snapshot")
    parser.add_argument("--source", type=Path, metavar="DIR",
                        help="run mailsuite from this project tree (e.g. `git archive HEAD | tar -x -C DIR`)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy runimap during each mailsuite measurement; raw stacks and a summary go to DIR "
                             "(profiled figures are slower: don't quote them)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy executable for --profile")
    parser.add_argument("--profile-view", choices=sorted(ingest.Profiler.VIEWS), default="gil")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    parser.add_argument("--bulk-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-user", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-folder", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bulk-count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bulk-no-fsync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(duration=(5, 15), rounds=(1, 3), medium=(2000, 10000), big=(10000, 100000), idle=(200, 1000),
                    append_sample=(1000, 2000))
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.section_set = set(s.strip() for s in args.sections.split(",") if s.strip())
    if args.section_set - set("abcd"):
        parser.error("--sections takes a comma-separated subset of a,b,c,d")
    if min(args.clients, args.rounds, args.medium, args.big, args.idle) < 1 or args.duration <= 0:
        parser.error("sizes, rounds and the duration must be positive")
    if not 0 < args.append_sample <= args.medium - 500:
        parser.error("--append-sample must leave at least 500 messages of --medium for MULTIAPPEND")
    if args.clients > SEED_MESSAGES:
        parser.error(f"at most {SEED_MESSAGES} clients")
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy (pip install py-spy, or pass --py-spy PATH)")
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.bulk_load:
        bulk_load_main(args)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with ExitStack() as cleanup:
        try:
            return run(args, cleanup)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run(args, cleanup):
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="mailsuite-imap-bench-"))
    workdir.chmod(0o755)  # Dovecot's mail processes run as nobody below it
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    source_note = ingest.working_tree_state()
    source = ROOT
    if args.source:
        source = args.source.resolve()
        source_note = f"the tree at {source}"
    elif not args.in_place:
        source = workdir / "source"
        shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*ingest.SNAPSHOT_SKIP))
        source_note += ", snapshot taken at start"
    users = IDLE_USERS + [BIG_USER]
    mailsuite = Mailsuite(args.database, users, pg_url=args.pg_url, source=source)
    dovecot = Dovecot(users, idle_clients=args.idle)
    servers = [mailsuite, dovecot]
    for server in servers:
        cleanup.callback(server.close)
    profiler = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = ingest.Profiler(args.py_spy, args.profile, 100, args.profile_view)
        cleanup.callback(profiler.stop)
    args.source_note = source_note
    print(ingest.machine_notes([], args))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for server in servers:
        server.prepare(workdir)
        server.start()
    print(f"servers: {mailsuite.label} runimap pid {mailsuite.process.pid} port {mailsuite.port}; "
          f"{dovecot.label} pid {dovecot.process.pid} port {dovecot.port}; all on {HOST}", flush=True)
    runner = Runner(args, servers, profiler)

    async def workload():
        print("loading", flush=True)
        await runner.setup_mail()
        if "a" in args.section_set or "b" in args.section_set:
            print(f"(a)/(b): {args.clients} clients, {args.duration:g} s each, {args.rounds} rounds", flush=True)
            await runner.run_churn()
        if "c" in args.section_set:
            print("(c) folders", flush=True)
            await runner.run_folders()
        if "d" in args.section_set:
            print("(d) idle clients", flush=True)
            await runner.run_idle()

    asyncio.run(workload())
    table, verdicts = summary(runner, args)
    print()
    print(f"mailsuite {args.database}; medium folder {args.medium:,}, big folder {args.big:,} messages; "
          f"{args.rounds} round(s); × Dovecot > 1 means mailsuite is ahead (rates: ours/theirs; times and memory: "
          f"theirs/ours)")
    print(f"loading: the churn mailbox ({SEED_MESSAGES}) by APPEND on both; mailsuite: {mailsuite.load_notes}; "
          f"Dovecot: {dovecot.load_notes}")
    print("background: median busy % of one core (other people's jobs) just before the measurements, servers idle")
    print()
    print(table)
    print()
    print(f"targets met: {sum(1 for _, met in verdicts if met)} of {len(verdicts)}; "
          f"whole run {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(
            {f"{metric}/{key}": [r.__dict__ for r in runs] for (metric, key), runs in runner.results.items()},
            indent=1, default=str))
    if profiler:
        files = sorted(args.profile.glob("*-pid*.txt"))
        groups = {}
        for path in files:
            groups.setdefault(path.name.split("-r")[0].split("-pid")[0], []).append(path)
        report = [f"py-spy, view {args.profile_view}, raw stacks in {args.profile}"]
        for name, paths in groups.items():
            report.append(f"\n== runimap during {name}:{ingest.summarize_profiles(paths)}")
        (args.profile / "summary.txt").write_text("\n".join(report) + "\n")
        print("\n" + "\n".join(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; everything started here has been stopped and removed", file=sys.stderr)
        sys.exit(130)
    except BenchError as error:
        print(f"\nFAILED: {error}", file=sys.stderr)
        sys.exit(1)
