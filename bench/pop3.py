#!/usr/bin/env python3
"""POP3 benchmark: mailsuite's runpop3 against Dovecot's POP3 on the same messages (issue 7).

Both servers run side by side on loopback high ports, with the same users and the same
messages in every maildrop, and one asyncio load client (raw POP3 over sockets, no poplib)
drives the same workloads against each:

  logins  C clients, each looping connect, USER, PASS, STAT, QUIT for D seconds, each on
          its own maildrop (M messages): sessions (logins) per second, latency per session
  retr    C clients, each logged in to its own maildrop (USER, PASS, LIST before the clock
          starts), sending RETR 1..M over and over for D seconds: message octets received
          per second (MB/s, 10^6 octets), messages/s, latency per RETR

Target (issue 7): within 2× of Dovecot, i.e. mailsuite's rate at least half Dovecot's.

Servers:
  mailsuite       `manage.py runpop3 --workers W` on SQLite (a fresh MAILSUITE_DATA_DIR),
                  MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK=1 so USER/PASS works without TLS;
                  passwords hashed by the project's hasher (Argon2id, accounts/hashers.py)
  dovecot         Debian's Dovecot in a throwaway instance: passwd-file users with {PLAIN}
                  passwords (as ../shared/reference/dovecot-baseline.sh), maildir, mail
                  owned by nobody, login chroot off, loopback only, no TLS
  dovecot-argon2  the same instance and maildirs, logging in as other names whose passdb
                  entry is mailsuite's own Argon2id hash of the same password: the same
                  work per login as mailsuite (logins only; a RETR session logs in once)

Implementation notes:
- The same messages: M deterministic messages (plain text, multipart/alternative, base64
  attachments, lines starting with "."; a few KB to several hundred KB) go to every user
  as an MDA delivers them, with Return-Path and Delivered-To in front. mailsuite gets them
  through mailstore.actions.deliver (one stored copy, a row per mailbox; this script run
  with --load in the snapshot); Dovecot gets maildir files in cur/ with LF line ends and
  S=/W= sizes in the names, as its own LDA writes them. Both must send exactly the same
  octets: the first pass over every maildrop (untimed) compares each RETR, unstuffed,
  against the expected bytes (SHA-256, each message once per session), and every timed
  RETR is checked against its LIST size. A mismatch fails the run.
- The client runs in a forked process of its own (its CPU is reported: near 100 % of a
  core it would be what limits), lock-step like fetchmail and getmail (no pipelining),
  reading RETR responses in bulk up to the terminating CRLF.CRLF without splitting lines.
- Measurements alternate: each round runs every workload on every server, starting the
  server list one place further along each round; medians over rounds are reported, and
  "mailsuite ÷ X" is the median of per-round ratios. Before each measurement the script
  waits (up to --background-wait) for other load on the machine to drop and records it.
- CPU: mailsuite is runpop3 and its workers; Dovecot is its whole process group, with
  the CPU of per-session processes it has reaped (cutime/cstime of the master).
- mailsuite runs from a copy of the working tree taken at start (others edit it
  meanwhile), or --in-place, or --source DIR (e.g. an older commit, to compare).
- Everything listens on 127.0.0.1. Every process this script starts is stopped by its id
  (each server with its process group), and the work directory is removed, also on
  failure and on Ctrl-C/SIGTERM.
- This file is named like the project's `pop3` package: its directory is taken off
  sys.path before anything is imported.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import collections  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

from bench import smtp_ingest as ingest  # noqa: E402
from bench.smtp_ingest import BenchError  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "bench.test"
PASSWORD = "bench-pop3-password-1"
SENDER = "sender@example.test"
LOAD_MARKER = "BENCH-LOADED "
WORKLOADS = ("logins", "retr")
SERVER_KEYS = ("mailsuite", "dovecot", "dovecot-argon2")
TARGET_RATIO = 0.5  # "within 2× of Dovecot"


# Messages ---------------------------------------------------------------------------------

_WORDS = (
    "mail server client session maildrop message header body octets line retrieve delete "
    "quit list unique identifier capability greeting timestamp lease folder inbox storage "
    "transaction update network archive report budget meeting schedule invoice"
).split()


def _lines(seed, count, width=72):
    out, line = [], []
    for k in range(count * 11):
        word = _WORDS[(seed * 17 + k * 7 + k // 9) % len(_WORDS)]
        if sum(len(w) + 1 for w in line) + len(word) > width:
            out.append(" ".join(line))
            line = []
            if len(out) == count:
                break
        line.append(word)
    return out


def _attachment(seed, octets):
    """`octets` of deterministic binary data, base64 in 76-column lines."""
    data = hashlib.shake_256(f"attachment {seed}".encode()).digest(octets)
    text = base64.b64encode(data).decode("ascii")
    return [text[i : i + 76] for i in range(0, len(text), 76)]


ATTACHMENT_SIZES = (12_000, 40_000, 90_000, 250_000, 600_000)


def make_message(index):
    """A deterministic message with CRLF line ends, one of five shapes (about 2 KB to 800 KB)."""
    shape = index % 5
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + index * 3_607))
    head = [
        f"From: Sender {index % 23} <sender{index % 23}@example.test>",
        f"To: Bench User <user@{DOMAIN}>",
        f"Subject: POP3 bench message {index} about {_WORDS[index % len(_WORDS)]}",
        f"Date: {date}",
        f"Message-ID: <pop3-bench.{index}@example.test>",
        "MIME-Version: 1.0",
    ]
    text = _lines(index, 25 + (index * 13) % 60)
    if shape in (0, 3):
        # Plain text; shape 3 has lines that need dot-stuffing (RFC 1939 §3).
        if shape == 3:
            text[3:3] = [".", ".. two dots", ".signature-like line"]
        lines = head + ["Content-Type: text/plain; charset=us-ascii", ""] + text
    elif shape == 1:
        boundary = f"alt-{index}"
        html = ["<html><body>"] + [f"<p>{line}</p>" for line in text] + ["</body></html>"]
        lines = head + [f'Content-Type: multipart/alternative; boundary="{boundary}"', "", f"--{boundary}",
                        "Content-Type: text/plain; charset=us-ascii", ""] + text + [
                        f"--{boundary}", "Content-Type: text/html; charset=us-ascii", ""] + html + [f"--{boundary}--"]
    else:
        boundary = f"mixed-{index}"
        size = ATTACHMENT_SIZES[(index // 5) % len(ATTACHMENT_SIZES)]
        lines = head + [f'Content-Type: multipart/mixed; boundary="{boundary}"', "", f"--{boundary}",
                        "Content-Type: text/plain; charset=us-ascii", ""] + text[:10] + [
                        f"--{boundary}", "Content-Type: application/octet-stream",
                        f'Content-Disposition: attachment; filename="file-{index}.bin"',
                        "Content-Transfer-Encoding: base64", ""] + _attachment(index, size) + [f"--{boundary}--"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def trace_prefix(address):
    """What an MDA puts in front (as mailstore.actions.trace_prefix does)."""
    return f"Return-Path: <{SENDER}>\r\nDelivered-To: {address}\r\n".encode("ascii")


def expected_digests(address, messages):
    """SHA-256 of each message exactly as a POP3 RETR sends it to `address`, unstuffed."""
    return collections.Counter(hashlib.sha256(trace_prefix(address) + m).hexdigest() for m in messages)


# The load client ----------------------------------------------------------------------------


class ProtocolError(Exception):
    pass


class Pop3Connection(asyncio.Protocol):
    """Raw POP3 replies: status lines, and multi-line responses read up to CRLF.CRLF in bulk."""

    def __init__(self):
        self.transport = None
        self.buffer = bytearray()
        self.scanned = 0  # how far the terminator search got
        self.waiter = None
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc):
        self.lost = exc or ConnectionResetError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _more(self):
        if self.lost is not None:
            raise ProtocolError(f"connection lost: {self.lost}")
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    async def status(self, what):
        """The next status line; ProtocolError unless it is +OK."""
        while (end := self.buffer.find(b"\r\n")) < 0:
            await self._more()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        if not line.startswith(b"+OK"):
            raise ProtocolError(f"{what}: {line[:200].decode('ascii', 'replace')}")
        return line

    async def body(self):
        """The data of a multi-line response, still dot-stuffed, with its final CRLF."""
        self.scanned = 0
        while True:
            if self.buffer[:3] == b".\r\n":
                del self.buffer[:3]
                return b""
            end = self.buffer.find(b"\r\n.\r\n", max(0, self.scanned - 4))
            if end >= 0:
                data = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 5]
                return data
            self.scanned = len(self.buffer)
            await self._more()

    def send(self, line):
        self.transport.write(line)

    def close(self):
        if self.transport is not None:
            self.transport.close()


def unstuffed_length(data):
    return len(data) - data.count(b"\r\n..") - (1 if data[:2] == b".." else 0)


def unstuff(data):
    data = data.replace(b"\r\n..", b"\r\n.")
    return data[1:] if data[:2] == b".." else data


@dataclass
class Tally:
    sessions: int = 0
    messages: int = 0
    octets: int = 0
    latencies: list = field(default_factory=list)  # seconds per session (logins) or per RETR (retr)
    errors: int = 0
    error_samples: list = field(default_factory=list)
    verified: int = 0

    def fail(self, error):
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(str(error)[:300])


async def _login(conn, user, password):
    await conn.status("greeting")
    conn.send(b"USER %s\r\n" % user.encode())
    await conn.status("USER")
    conn.send(b"PASS %s\r\n" % password.encode())
    await conn.status("PASS")


async def login_loop(port, user, password, deadline, tally):
    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    while perf() < deadline:
        started = perf()
        try:
            _, conn = await loop.create_connection(Pop3Connection, HOST, port)
        except OSError as error:
            tally.fail(f"connect: {error}")
            await asyncio.sleep(0.05)
            continue
        try:
            await _login(conn, user, password)
            conn.send(b"STAT\r\n")
            await conn.status("STAT")
            conn.send(b"QUIT\r\n")
            await conn.status("QUIT")
            tally.sessions += 1
            tally.latencies.append(perf() - started)
        except ProtocolError as error:
            tally.fail(f"{user}: {error}")
            await asyncio.sleep(0.05)  # an error must not turn into a busy loop
        finally:
            conn.close()


async def open_session(port, user, password, tally):
    """A logged-in connection and its LIST sizes, or None (the failure counted)."""
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(Pop3Connection, HOST, port)
    except OSError as error:
        tally.fail(f"connect: {error}")
        return None
    try:
        await _login(conn, user, password)
        conn.send(b"LIST\r\n")
        await conn.status("LIST")
        sizes = [int(line.split()[1]) for line in (await conn.body()).splitlines()]
    except ProtocolError as error:
        tally.fail(f"{user}: {error}")
        conn.close()
        return None
    return conn, sizes


async def retr_loop(session, user, clock, tally, expected=None):
    """RETR 1..M over and over until the deadline, on a session opened before the clock
    started; with `expected`, one pass comparing every message with the expected bytes."""
    conn, sizes = session
    perf = time.perf_counter
    seen = collections.Counter()
    timed = True
    try:
        await clock.started.wait()
        number = 0
        while expected is not None or perf() < clock.deadline:
            number = number % len(sizes) + 1
            started = perf()
            conn.send(b"RETR %d\r\n" % number)
            await conn.status(f"RETR {number}")
            data = await conn.body()
            tally.latencies.append(perf() - started)
            size = sizes[number - 1]
            if unstuffed_length(data) != size:
                raise ProtocolError(f"{user}: RETR {number} sent {unstuffed_length(data)} octets, LIST said {size}")
            tally.messages += 1
            tally.octets += size
            if expected is not None:
                seen[hashlib.sha256(unstuff(data)).hexdigest()] += 1
                if number == len(sizes):
                    break
        timed = False
        clock.finished()
        conn.send(b"QUIT\r\n")
        await conn.status("QUIT")
        tally.sessions += 1
        if expected is not None:
            if seen != expected:
                raise ProtocolError(f"{user}: retrieved messages differ from those loaded "
                                    f"({sum((seen - expected).values())} unexpected, "
                                    f"{sum((expected - seen).values())} missing)")
            tally.verified += 1
    except ProtocolError as error:
        tally.fail(error)
    finally:
        if timed:
            clock.finished()
        conn.close()


class Clock:
    """The timed part of a retr run: from when every session is open until the last
    client's last RETR (logins and QUITs are outside it)."""

    def __init__(self, clients, seconds):
        self.started = asyncio.Event()
        self.waiting = clients
        self.seconds = seconds
        self.start = self.deadline = self.end = None

    def go(self):
        self.start = time.perf_counter()
        self.deadline = self.start + self.seconds
        self.started.set()

    def finished(self):
        if self.waiting:
            self.waiting -= 1
            if not self.waiting:
                self.end = time.perf_counter()

    @property
    def elapsed(self):
        return (self.end or time.perf_counter()) - self.start


async def _drive(workload, port, users, password, seconds, expected):
    """Run the workload; returns the tally and the seconds it was timed over."""
    tally = Tally()
    if workload == "logins":
        started = time.perf_counter()
        await asyncio.gather(*(login_loop(port, user, password, started + seconds, tally) for user in users))
        return tally, time.perf_counter() - started
    sessions = await asyncio.gather(*(open_session(port, user, password, tally) for user in users))
    opened = [(session, user) for session, user in zip(sessions, users) if session is not None]
    clock = Clock(len(opened), seconds)
    jobs = [retr_loop(session, user, clock, tally, expected and expected[user]) for session, user in opened]
    clock.go()
    await asyncio.gather(*jobs)
    return tally, clock.elapsed if opened else 0.0


def _client_process(workload, port, users, password, seconds, expected, conn):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler is not ours
    try:
        before = os.times()
        tally, elapsed = asyncio.run(_drive(workload, port, users, password, seconds, expected))
        after = os.times()
        conn.send({"tally": asdict(tally), "elapsed": elapsed,
                   "cpu": (after.user - before.user) + (after.system - before.system)})
    except BaseException as error:  # the parent must hear about it, whatever it was
        conn.send({"crash": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"})
    finally:
        conn.close()


class Client:
    """Runs one workload in a forked process (tracked, so cleanup can stop it by pid)."""

    def __init__(self):
        self.process = None

    def run(self, workload, port, users, password, seconds, expected=None):
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_client_process, args=(workload, port, users, password, seconds, expected, sender), daemon=True
        )
        self.process.start()
        sender.close()
        limit = seconds + 300
        if not receiver.poll(limit):
            self.stop()
            raise BenchError(f"the client did not finish within {limit:.0f}s")
        report = receiver.recv()
        self.process.join(10)
        self.process = None
        if "crash" in report:
            raise BenchError(f"client crashed: {report['crash']}")
        return Tally(**report["tally"]), report["elapsed"], report["cpu"]

    def stop(self):
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.process = None


# Servers ----------------------------------------------------------------------------------


def group_cpu(pid):
    """CPU seconds of a server started in its own session: live members of its process
    group, plus what they have reaped (Dovecot's per-session processes end quickly)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in ingest.group_members(pid):
        try:
            stat = ingest._proc_stat(member)
        except OSError:
            continue
        total += sum(int(v) for v in stat[11:15]) / ticks  # utime stime cutime cstime
    return total


class Server:
    key = ""
    label = ""
    process = None
    port = None

    def user(self, k):
        raise NotImplementedError

    def cpu(self):
        return group_cpu(self.process.pid) if self.process else 0.0

    def stop(self):
        ingest.stop_session(self.process, timeout=20)
        self.process = None

    def close(self):
        self.stop()


DOVECOT_CONF = """\
# Throwaway benchmark instance written by bench/pop3.py: loopback only, no TLS.
base_dir = {base}/run
state_dir = {base}/state
instance_name = mailsuite-pop3-bench-{port}
log_path = {base}/log/dovecot.log
info_log_path = {base}/log/info.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
# Mail is owned by nobody: root may not own it, and nobody's uid is below the default 500.
first_valid_uid = 1
last_valid_uid = 0
mail_location = maildir:~/Maildir
# Dovecot's defaults are kept otherwise: mail_fsync = optimized, one pop3-login and one
# pop3 process per session, no auth cache, no exclusive lock on the maildrop
# (pop3_lock_session = no), and \\Seen set at QUIT on messages RETR sent.
default_process_limit = {processes}
pop3_uidl_format = %08Xu%08Xv
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {base}/users
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
service imap-urlauth-login {{
  inet_listener imap-urlauth {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
"""


def maildir_name(index, data):
    """A maildir file name in cur/ as Dovecot's LDA writes it: sizes in the name, no flags yet."""
    crlf_size = len(data) + data.count(b"\n")  # LF on disk, CRLF on the wire
    return f"{1_700_000_000 + index}.M{index}P1.pop3bench,S={len(data)},W={crlf_size}:2,"


class Dovecot(Server):
    """One Dovecot instance serving both the `dovecot` and the `dovecot-argon2` users."""

    def __init__(self, users, *, max_clients):
        self.count = users
        self.max_clients = max_clients
        self.base = None
        self.version = "?"

    def prepare(self, workdir, messages, argon2_hash):
        if not shutil.which("dovecot"):
            raise BenchError("dovecot is not installed (apt-get install dovecot-pop3d)")
        if not Path("/usr/lib/dovecot/pop3").exists():
            raise BenchError("Dovecot's POP3 server is not installed (apt-get install dovecot-pop3d)")
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
        entries = []
        for k in range(1, self.count + 1):
            home = self.base / "home" / f"u{k}"
            entries.append(f"u{k}:{{PLAIN}}{PASSWORD}:{nobody.pw_uid}:{nobody.pw_gid}::{home}::")
            # The same maildrop under another name whose password is mailsuite's own Argon2id hash.
            entries.append(f"a{k}:{{ARGON2ID}}{argon2_hash}:{nobody.pw_uid}:{nobody.pw_gid}::{home}::")
            self._fill_maildir(home / "Maildir", f"u{k}@{DOMAIN}", messages)
        (self.base / "users").write_text("\n".join(entries) + "\n")
        (self.base / "users").chmod(0o644)
        for path in [self.base / "home", *(self.base / "home").rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.port = ingest.free_port()
        (self.base / "dovecot.conf").write_text(
            DOVECOT_CONF.format(base=self.base, port=self.port, processes=max(100, 4 * self.max_clients))
        )
        ingest.run_checked(["doveconf", "-c", str(self.base / "dovecot.conf"), "-n"], what="doveconf")

    def _fill_maildir(self, maildir, address, messages):
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for index, message in enumerate(messages):
            data = (trace_prefix(address) + message).replace(b"\r\n", b"\n")
            (maildir / "cur" / maildir_name(index, data)).write_bytes(data)

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


class DovecotView(Server):
    """A name for one set of Dovecot's users: `dovecot` ({PLAIN}) or `dovecot-argon2`."""

    def __init__(self, instance, key):
        self.instance = instance
        self.key = key
        self.prefix = "u" if key == "dovecot" else "a"

    @property
    def label(self):
        return self.instance.label + (" {PLAIN}" if self.prefix == "u" else " {ARGON2ID}")

    @property
    def port(self):
        return self.instance.port

    @property
    def process(self):
        return self.instance.process

    def user(self, k):
        return f"{self.prefix}{k}"

    def stop(self):
        pass  # the instance is stopped once

    def close(self):
        pass


class Mailsuite(Server):
    key = "mailsuite"

    def __init__(self, users, *, workers, source):
        self.count = users
        self.workers = workers
        self.source = source
        self.label = f"mailsuite ({workers} worker{'s' * (workers != 1)}, SQLite)"
        self.data_dir = None
        self.log = None

    def user(self, k):
        return f"u{k}@{DOMAIN}"

    def env(self):
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(MAILSUITE_DATA_DIR=str(self.data_dir), MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK="1",
                   MAILSUITE_HOSTNAME="pop3-bench.localhost", PYTHONUNBUFFERED="1")
        return env

    def run(self, argv, what):
        # cwd: the project's Celery app puts the working directory first on sys.path, so a
        # manage.py started elsewhere would import that tree's modules, not --source's.
        result = subprocess.run(argv, env=self.env(), cwd=self.source, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise BenchError(f"mailsuite: {what} failed ({result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result.stdout

    def manage(self, *args, what):
        return self.run([ingest.venv_python(), str(self.source / "manage.py"), *args], what)

    def prepare(self, workdir, message_count):
        """Accounts and mail; returns the Argon2id hash stored for the password."""
        self.data_dir = workdir / "mailsuite-data"
        self.data_dir.mkdir()
        self.manage("migrate", "--noinput", "-v0", what="migrate")
        self.manage("tls", "ensure", what="tls ensure")
        argv = [ingest.venv_python(), str(Path(__file__).resolve()), "--load", "--source", str(self.source),
                "--users", str(self.count), "--messages", str(message_count)]
        output = self.run(argv, "load")
        lines = [line for line in output.splitlines() if line.startswith(LOAD_MARKER)]
        if not lines:
            raise BenchError(f"mailsuite: the load printed nothing: {output[-500:]}")
        loaded = json.loads(lines[-1][len(LOAD_MARKER):])
        if loaded["placed"] != self.count * message_count:
            raise BenchError(f"mailsuite: loaded {loaded['placed']} copies, expected {self.count * message_count}")
        self.port = ingest.free_port()
        return loaded["hash"]

    def start(self):
        self.log = self.data_dir.parent / "runpop3.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [ingest.venv_python(), str(self.source / "manage.py"), "runpop3", "--host", HOST,
                 "--port", str(self.port), "--pop3s-port", "0", "--workers", str(self.workers)],
                env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.source,
            )
        ingest.wait_listening(self.port, self.workers, timeout=60, alive=lambda: self.process.poll() is None,
                              log=self.log)

    def worker_pids(self):
        if self.process is None:
            return []
        return ingest.child_pids(self.process.pid) if self.workers > 1 else [self.process.pid]


def load_main(args):
    """--load: accounts and mail through the project's own write paths, in this process."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")]
    sys.path.insert(0, str(args.source))
    os.chdir(args.source)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
    import django

    django.setup()
    from accounts import actions as accounts
    from accounts.models import Account
    from mailstore.actions import Recipient, deliver

    accounts.create_domain(DOMAIN)
    recipients = []
    for k in range(1, args.users + 1):
        account = accounts.create_account(f"u{k}@{DOMAIN}", password=PASSWORD, quota=0)
        recipients.append(Recipient(account, account.address))
    placed = 0
    for index in range(args.messages):
        # One delivery to every user, as the MDA does it: the bytes stored once.
        outcomes = deliver(make_message(index), recipients, return_path=SENDER)
        for outcome in outcomes:
            if outcome.error:
                raise SystemExit(f"load: {outcome.error}")
        placed += len(outcomes)
    stored = Account.objects.get(pk=recipients[0].account.pk).password
    algorithm, _, encoded = stored.partition("$")
    if algorithm != "argon2" or not encoded.startswith("argon2id$"):
        raise SystemExit(f"load: expected an Argon2id password hash, got {algorithm!r}")
    print(LOAD_MARKER + json.dumps({"placed": placed, "hash": "$" + encoded}), flush=True)


# Measurements -----------------------------------------------------------------------------


@dataclass
class Result:
    workload: str
    clients: int
    server: str
    round: int
    rate: float  # logins/s, or MB/s for retr
    messages_per_s: float
    sessions: int
    messages: int
    octets: int
    elapsed: float
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_pct: float
    client_cpu_pct: float
    busy_pct: float
    background_pct: float
    errors: int
    error_samples: list


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(server, workload, clients, round_no, args, client, profiler):
    background = ingest.quiet_machine(args.max_background, args.background_wait)
    users = [server.user(k) for k in range(1, clients + 1)]
    if profiler and server.key == "mailsuite":
        profiler.start(server.worker_pids(), f"{server.key}-{workload}-c{clients}-r{round_no + 1}")
    cpu_before, busy_before = server.cpu(), ingest.cpu_busy_snapshot()
    try:
        tally, elapsed, client_cpu = client.run(workload, server.port, users, PASSWORD, args.seconds)
    finally:
        if profiler and server.key == "mailsuite":
            profiler.stop()
    busy = ingest.busy_percent(busy_before, ingest.cpu_busy_snapshot())
    server_cpu = server.cpu() - cpu_before
    if workload == "logins":
        rate = tally.sessions / elapsed
    else:
        rate = tally.octets / elapsed / 1e6
    latencies_ms = [s * 1000 for s in tally.latencies]
    return Result(
        workload=workload, clients=clients, server=server.key, round=round_no + 1, rate=rate,
        messages_per_s=tally.messages / elapsed, sessions=tally.sessions, messages=tally.messages,
        octets=tally.octets, elapsed=elapsed, p50_ms=percentile(latencies_ms, 0.5),
        p99_ms=percentile(latencies_ms, 0.99), server_cpu_pct=100 * server_cpu / elapsed,
        client_cpu_pct=100 * client_cpu / elapsed, busy_pct=busy, background_pct=background,
        errors=tally.errors, error_samples=tally.error_samples,
    )


def verify_servers(servers, messages, client, args):
    """One untimed RETR session on every maildrop of every server, each message compared."""
    for server in servers:
        if server.key == "dovecot-argon2":
            continue  # the same maildrops as `dovecot`
        users = [server.user(k) for k in range(1, args.max_clients + 1)]
        expected = {user: expected_digests(f"u{k}@{DOMAIN}", messages) for k, user in enumerate(users, start=1)}
        started = time.monotonic()
        tally, _, _ = client.run("retr", server.port, users, PASSWORD, 0, expected)
        if tally.errors or tally.verified != len(users):
            raise BenchError(f"{server.label}: first pass did not verify: {tally.error_samples}")
        print(f"  verified {server.label}: {tally.verified} maildrops x {len(messages)} messages "
              f"({tally.octets / 1e6:.1f} MB) sent exactly as loaded, {time.monotonic() - started:.1f}s", flush=True)


def progress_line(server, r):
    unit = "logins/s" if r.workload == "logins" else "MB/s"
    extra = "" if r.workload == "logins" else f", {r.messages_per_s:,.0f} msg/s"
    p50 = f"{r.p50_ms:.1f}" if r.p50_ms is not None else "-"
    p99 = f"{r.p99_ms:.1f}" if r.p99_ms is not None else "-"
    errors = f", {r.errors} ERRORS: {r.error_samples[:2]}" if r.errors else ""
    return (f"  round {r.round} {r.workload:6} c={r.clients:<3} {server.label:36} {r.rate:9,.1f} {unit}{extra}; "
            f"p50 {p50} ms p99 {p99} ms; server CPU {r.server_cpu_pct:.0f} %, client {r.client_cpu_pct:.0f} %, "
            f"busy {r.busy_pct:.0f} %, background {r.background_pct:.0f} %{errors}")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value, spec="{:,.1f}"):
    return "–" if value is None else spec.format(value)


def summary(results, servers, args):
    by = collections.defaultdict(list)
    for r in results:
        by[(r.workload, r.clients, r.server)].append(r)
    lines = []
    verdicts = []
    for workload in args.workload_list:
        unit = "logins/s" if workload == "logins" else "MB/s"
        what = ("sessions of USER, PASS, STAT, QUIT (a new connection each), each client on its own maildrop"
                if workload == "logins" else
                f"RETR 1..{args.messages} over and over in sessions kept open (logged in before the clock "
                "starts), each client on its own maildrop")
        lines.append(f"\n{workload}: {what}, {args.seconds:g} s per measurement, medians of {args.runs} rounds")
        lines.append(f"| clients | server | {unit} | min–max | mailsuite ÷ server | "
                     + ("msg/s | p50 ms per RETR | p99 ms | " if workload == "retr" else "p50 ms per session | p99 ms | ")
                     + "server CPU | client CPU | machine busy | background | runs |")
        lines.append("|--:|---|--:|--:|--:|" + ("--:|" * 3 if workload == "retr" else "--:|" * 2) + "--:|--:|--:|--:|--:|")
        for clients in args.client_list:
            ours = {r.round: r.rate for r in by[(workload, clients, "mailsuite")]}
            for server in servers:
                if workload == "retr" and server.key == "dovecot-argon2":
                    continue
                runs = by[(workload, clients, server.key)]
                if not runs:
                    continue
                rates = [r.rate for r in runs]
                ratios = [ours[r.round] / r.rate for r in runs if r.round in ours and r.rate]
                ratio = _median(ratios) if server.key != "mailsuite" else None
                row = [str(clients), server.label, _fmt(_median(rates)), f"{min(rates):,.1f}–{max(rates):,.1f}",
                       _fmt(ratio, "{:.2f}")]
                if workload == "retr":
                    row.append(_fmt(_median([r.messages_per_s for r in runs]), "{:,.0f}"))
                row += [_fmt(_median([r.p50_ms for r in runs])), _fmt(_median([r.p99_ms for r in runs])),
                        _fmt(_median([r.server_cpu_pct for r in runs]), "{:.0f} %"),
                        _fmt(_median([r.client_cpu_pct for r in runs]), "{:.0f} %"),
                        _fmt(_median([r.busy_pct for r in runs]), "{:.0f} %"),
                        _fmt(_median([r.background_pct for r in runs]), "{:.0f} %"),
                        f"{sum(1 for r in runs if not r.errors)}/{len(runs)}"]
                lines.append("| " + " | ".join(row) + " |")
                if ratio is not None:
                    verdicts.append(f"{workload}, {clients} client{'s' * (clients != 1)}, against {server.label}: "
                                    f"mailsuite at {ratio:.3f}× → target (≥ {TARGET_RATIO:.1f}×, within 2×) "
                                    f"{'MET' if ratio >= TARGET_RATIO else 'NOT met'}")
    lines.append("\nTarget: within 2× of Dovecot, i.e. mailsuite ÷ Dovecot ≥ 0.5 (ratios are medians of per-round ratios).")
    lines += ["  " + v for v in verdicts]
    lines.append("CPU columns: 100 % = one core; server CPU = runpop3 and its workers, or Dovecot's whole process group "
                 "(reaped per-session processes included); machine busy = every process while the client ran; "
                 "background = machine busy just before the measurement, servers idle.")
    return "\n".join(lines)


# The run ----------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--clients", default="1,10",
                        help="comma-separated concurrent client counts, each its own user (default 1,10)")
    parser.add_argument("-n", "--messages", type=int, default=100, help="messages in every maildrop (default 100)")
    parser.add_argument("-d", "--seconds", type=float, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("-r", "--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("-s", "--servers", default=",".join(SERVER_KEYS),
                        help=f"comma-separated, from {','.join(SERVER_KEYS)} (default all)")
    parser.add_argument("-W", "--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, from {','.join(WORKLOADS)} (default both)")
    parser.add_argument("-w", "--workers", type=int, default=0,
                        help="mailsuite runpop3 --workers (default 0 = one per core)")
    parser.add_argument("--max-background", type=float, default=25,
                        help="before each measurement wait for other load to drop below this %% of a core (default 25)")
    parser.add_argument("--background-wait", type=float, default=60,
                        help="seconds to wait for that before measuring anyway (default 60; 0 = never wait)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy each mailsuite worker during the timed parts; raw stacks and a summary in DIR "
                             "(profiled runs are slower: don't quote their rates)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy executable for --profile")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--profile-view", choices=sorted(ingest.Profiler.VIEWS), default="gil",
                        help="gil, active or wall (see bench/README.md; default gil)")
    parser.add_argument("--in-place", action="store_true",
                        help="run mailsuite from the working tree instead of a snapshot taken at start")
    parser.add_argument("--source", type=Path, metavar="DIR", help="run mailsuite from this project tree")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        return args
    try:
        args.client_list = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    except ValueError:
        parser.error("--clients takes comma-separated numbers")
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for values, allowed, what in ((args.server_list, SERVER_KEYS, "server"), (args.workload_list, WORKLOADS, "workload")):
        unknown = set(values) - set(allowed)
        if unknown or not values:
            parser.error(f"unknown {what}(s) {sorted(unknown)}; choose from {','.join(allowed)}")
    if "mailsuite" not in args.server_list:
        parser.error("the servers must include mailsuite (everything is compared with it)")
    if not args.client_list or min(args.client_list) < 1 or min(args.messages, args.runs) < 1 or args.seconds <= 0:
        parser.error("--clients, --messages, --runs and --seconds must be positive")
    if args.workers < 0:
        parser.error("--workers must not be negative")
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy (pip install py-spy, or pass --py-spy PATH)")
    args.max_clients = max(args.client_list)
    return args


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.load:
        load_main(args)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with ExitStack() as cleanup:
        try:
            failures = run(args, cleanup)
        finally:
            # Cleanup (leaving this block) must finish even if Ctrl-C is pressed again.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if failures:
        print(f"\n{failures} measurement(s) FAILED; see above", file=sys.stderr)
        return 1
    return 0


def run(args, cleanup):
    workdir = Path(tempfile.mkdtemp(prefix="mailsuite-pop3-bench-"))
    workdir.chmod(0o755)  # Dovecot reads mail below it as nobody
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    if args.source:
        args.source = args.source.resolve()
        if not (args.source / "manage.py").exists():
            raise BenchError(f"--source {args.source} has no manage.py")
        source_note = f"the tree at {args.source}"
    else:
        source_note = ingest.working_tree_state() + (", run in place" if args.in_place else ", snapshot taken at start")
        args.source = ROOT
        if not args.in_place:
            # Others may edit the working tree while this runs: every round measures the same code.
            args.source = workdir / "source"
            shutil.copytree(ROOT, args.source, symlinks=True, ignore=shutil.ignore_patterns(*ingest.SNAPSHOT_SKIP))
    client = Client()
    cleanup.callback(client.stop)
    profiler = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = ingest.Profiler(args.py_spy, args.profile, args.profile_rate, args.profile_view)
        cleanup.callback(profiler.stop)

    messages = [make_message(i) for i in range(args.messages)]
    workers = args.workers or os.cpu_count() or 1
    mailsuite = Mailsuite(args.max_clients, workers=workers, source=args.source)
    cleanup.callback(mailsuite.close)
    print(f"loading {args.max_clients} maildrops x {args.messages} messages "
          f"({sum(len(m) for m in messages) / 1e6:.1f} MB each) ...", flush=True)
    argon2_hash = mailsuite.prepare(workdir, args.messages)
    servers = [mailsuite]
    wants_dovecot = [key for key in args.server_list if key.startswith("dovecot")]
    if wants_dovecot:
        dovecot = Dovecot(args.max_clients, max_clients=args.max_clients)
        cleanup.callback(dovecot.close)
        dovecot.prepare(workdir, messages, argon2_hash)
        servers += [DovecotView(dovecot, key) for key in wants_dovecot]
        dovecot.start()
    mailsuite.start()

    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; machine: {os.cpu_count()} vCPU; mailsuite: {source_note}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"servers: {', '.join(s.label + ' on ' + HOST + ':' + str(s.port) for s in servers)}")
    verify_servers(servers, messages, client, args)

    results, failures = [], 0
    for round_no in range(args.runs):
        for workload in args.workload_list:
            for clients in args.client_list:
                order = [s for s in servers if not (workload == "retr" and s.key == "dovecot-argon2")]
                shift = round_no % len(order)
                for server in order[shift:] + order[:shift]:
                    try:
                        result = measure(server, workload, clients, round_no, args, client, profiler)
                    except BenchError as error:
                        failures += 1
                        print(f"  round {round_no + 1} {workload} c={clients} {server.label} FAILED: {error}",
                              file=sys.stderr)
                        continue
                    results.append(result)
                    failures += 1 if result.errors else 0
                    print(progress_line(server, result), flush=True)
    print(summary(results, servers, args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if profiler:
        files = sorted(args.profile.glob("mailsuite-*-pid*.txt"))
        groups = collections.defaultdict(list)
        for path in files:
            groups[path.name.rsplit("-r", 1)[0]].append(path)
        report = [f"py-spy, view {args.profile_view}, raw stacks in {args.profile}"]
        for name, paths in groups.items():
            report.append(f"\n== {name}, {len(paths)} worker profile(s):{ingest.summarize_profiles(paths)}")
        (args.profile / "summary.txt").write_text("\n".join(report) + "\n")
        print("\n" + "\n".join(report))
    return failures


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; everything started here has been stopped and removed", file=sys.stderr)
        sys.exit(130)
