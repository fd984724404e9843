#!/usr/bin/env python3
"""SMTP ingest, one process at a time: the CPU an SMTP worker and the commit service each
spend per message, measured apart.

bench/smtp_ingest.py measures the whole pipeline, where the processes share two cores and
each one's cost is hard to tell from the others'. Here:

  worker     one `runsmtp --workers 1` process receives N messages of about 2 KB from C
             sessions (a new connection per message, the bench client of smtp_ingest) and
             hands each to a stand-in commit service that answers 250 at once and keeps
             the requests it got;
  commit     the real commit service (`runsmtp --commit-service`) gets those requests
             again, C in flight, from a client that replays them over its socket.

Both report milliseconds of CPU (user + system, from /proc) per message and the rate.
The sender's DNS is served on loopback as in smtp_ingest (SPF, DMARC), so the checks do
their full work. The rates are not Postfix's kind of figure: the stand-in and the replay
cost next to nothing, so each process runs as fast as it alone can.

Implementation notes:
- The stand-in and the replay speak the commit service's own framing (mta.committer) and
  set up Django to unpickle the requests: each runs as this file with --stand-in or
  --replay, in the project's virtualenv, with the run's data dir.
- Each measurement starts from a fresh copy of a migrated data dir; warm-up messages go
  first, untimed. Everything listens on 127.0.0.1 or a Unix socket in the work dir, and
  every process started here is stopped, also on Ctrl-C.
"""
import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import smtp_ingest as ingest  # noqa: E402  (the client, DNS and process helpers)

ROOT = ingest.ROOT


def _django():
    """Django of the tree being measured (Run.env names it), for the helpers here."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
    sys.path.insert(0, os.environ.get("BENCH_SOURCE", str(ROOT)))
    import django

    django.setup()


def serve_stand_in(path, record):
    """The stand-in commit service: 250 to every request, each frame appended to `record`."""
    import selectors

    from mta.committer import _frames, encode

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    buffers = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(record, "wb") as out:
        while True:
            for key, _ in selector.select():
                if key.data is None:
                    conn, _ = listener.accept()
                    buffers[conn] = bytearray()
                    selector.register(conn, selectors.EVENT_READ, "worker")
                    continue
                conn = key.fileobj
                data = conn.recv(1 << 20)
                if not data:
                    selector.unregister(conn)
                    conn.close()
                    continue
                buffer = buffers[conn]
                buffer += data
                for request_id, request in _frames(buffer):
                    out.write(encode(request_id, request))
                    conn.sendall(encode(request_id, "250 2.0.0 Ok: stand-in"))


def replay(path, record, window, skip):
    """Send the recorded requests (the first `skip` untimed) to the commit service at
    `path`, `window` in flight; prints "seconds replies" of the timed part."""
    import threading

    from mta.committer import _frames, encode

    requests = [request for _, request in _frames(bytearray(Path(record).read_bytes()))]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    state = threading.Condition()
    replies = []

    def read():
        buffer = bytearray()
        while len(replies) < len(requests):
            data = conn.recv(1 << 16)
            if not data:
                break
            buffer += data
            for _, reply in _frames(buffer):
                with state:
                    replies.append(reply)
                    state.notify()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = None
    for index, request in enumerate(requests):
        if index == skip:
            with state:
                state.wait_for(lambda: len(replies) >= skip, timeout=600)
            started = time.monotonic()
        with state:
            state.wait_for(lambda: index - len(replies) < window, timeout=600)
        conn.sendall(encode(index, request))
    reader.join(600)
    elapsed = time.monotonic() - started
    refused = [r for r in replies if not r.startswith("250")]
    print(f"{elapsed:.6f} {len(replies)} {len(refused)} {refused[:1]}")


class Run:
    """A work dir with a migrated template data dir, and the processes started in it."""

    def __init__(self, workdir, source):
        self.workdir, self.source = workdir, source
        self.template = workdir / "template"
        self.count = 0

    def manage(self, *args):
        return [ingest.venv_python(), str(self.source / "manage.py"), *args]

    def env(self, data_dir, **extra):
        env = dict(os.environ, MAILSUITE_DATA_DIR=str(data_dir), BENCH_SOURCE=str(self.source), PYTHONUNBUFFERED="1", **extra)
        env.pop("DATABASE_URL", None)
        return env

    def prepare(self):
        self.template.mkdir()
        for args in (("migrate", "--noinput", "-v0"), ("tls", "ensure"), ("domain", "add", ingest.DOMAIN),
                     ("account", "add", ingest.RECIPIENT, "--quota", "0")):
            ingest.run_checked(self.manage(*args), env=self.env(self.template), what=" ".join(args), cwd=self.source)

    def fresh_data_dir(self):
        self.count += 1
        data_dir = self.workdir / f"data-{self.count}"
        shutil.copytree(self.template, data_dir)
        return data_dir

    def start(self, processes, argv, data_dir, name, **extra):
        """Start a process that `processes` (an ExitStack) stops."""
        log = open(self.workdir / f"{name}-{self.count}.log", "wb")
        processes.callback(log.close)
        process = subprocess.Popen(
            argv, env=self.env(data_dir, **extra), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.source,
        )
        processes.callback(ingest.stop_session, process)
        return process

    def helper(self, processes, data_dir, name, *args):
        return self.start(processes, [ingest.venv_python(), str(Path(__file__).resolve()), *args], data_dir, name)


def _wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ingest.BenchError(f"{what} did not start")
        time.sleep(0.05)


def measure_worker(run, args, record, processes):
    data_dir = run.fresh_data_dir()
    sock = str(run.workdir / f"stand-in-{run.count}.sock")
    run.helper(processes, data_dir, "stand-in", "--stand-in", sock, "--record", str(record))
    _wait_for(lambda: os.path.exists(sock), "the stand-in commit service")
    port = ingest.free_port()
    worker = run.start(
        processes,
        run.manage("runsmtp", "--host", ingest.HOST, "--port", str(port), "--submission-port", "0",
                   "--smtps-port", "0", "--workers", "1"),
        data_dir, "worker", MAILSUITE_REUSE_PORT="1", MAILSUITE_COMMIT_SOCKET=sock,
    )
    ingest.wait_listening(port, 1, timeout=60, alive=lambda: worker.poll() is None)
    payloads = {i: ingest.data_payload(f"parts{run.count}", i, args.size) for i in range(args.warmup + args.messages)}

    def send(indices):
        tally = asyncio.run(ingest._run_clients(port, indices, args.clients, 1, payloads, args.timeout))
        if tally.errors:
            raise ingest.BenchError(f"worker: {tally.errors} failed, e.g. {tally.error_samples[:1]}")

    send(list(range(args.warmup)))
    before, started = ingest.process_tree_cpu(worker.pid), time.monotonic()
    send(list(range(args.warmup, args.warmup + args.messages)))
    elapsed, cpu = time.monotonic() - started, ingest.process_tree_cpu(worker.pid) - before
    return args.messages / elapsed, cpu / args.messages * 1000


def measure_commit(run, args, record, processes):
    data_dir = run.fresh_data_dir()
    port = ingest.free_port()  # names the socket only: the commit service listens on nothing else
    service = run.start(processes, run.manage("runsmtp", "--port", str(port), "--commit-service"), data_dir, "commit")
    sock = data_dir / "run" / f"smtp-commit-{port}.sock"
    _wait_for(lambda: sock.exists(), "the commit service")
    before = ingest.process_tree_cpu(service.pid)
    out = subprocess.run(
        [ingest.venv_python(), str(Path(__file__).resolve()), "--replay", str(sock), "--record", str(record),
         "--window", str(args.clients), "--skip", str(args.warmup)],
        env=run.env(data_dir), capture_output=True, text=True, timeout=args.timeout, cwd=run.source,
    )
    cpu = ingest.process_tree_cpu(service.pid) - before
    if out.returncode != 0:
        raise ingest.BenchError(f"replay failed: {out.stderr.strip()[-1500:]}")
    elapsed, replies, refused, sample = out.stdout.split(" ", 3)
    if int(refused) or int(replies) != args.warmup + args.messages:
        raise ingest.BenchError(f"commit service: {replies} replies, {refused} not 250, e.g. {sample.strip()}")
    # The CPU is read around the whole replay, warm-up included, so it is divided by every
    # replayed message; the rate counts the timed part only.
    return args.messages / float(elapsed), cpu / (args.warmup + args.messages) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--messages", type=int, default=3000)
    parser.add_argument("-c", "--clients", type=int, default=10, help="sessions, and requests in flight")
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--source", type=Path, default=ROOT, help="the project tree to run (default: this one)")
    parser.add_argument("--stand-in", help=argparse.SUPPRESS)
    parser.add_argument("--replay", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stand_in:
        _django()
        return serve_stand_in(args.stand_in, args.record)
    if args.replay:
        _django()
        return replay(args.replay, args.record, args.window, args.skip)
    signal.signal(signal.SIGTERM, ingest._raise_interrupt)
    results = {"worker": [], "commit service": []}
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mailsuite-smtp-parts-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        ingest._serve_sender_dns(stack)
        run = Run(workdir, args.source.resolve())
        run.prepare()
        print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {args.messages} messages of {args.size} octets, "
              f"{args.clients} sessions; tree {run.source}")
        for round_no in range(1, args.rounds + 1):
            record = workdir / f"requests-{round_no}.bin"
            for name, measure in (("worker", measure_worker), ("commit service", measure_commit)):
                with ExitStack() as processes:
                    rate, ms = measure(run, args, record, processes)
                results[name].append((rate, ms))
                print(f"  round {round_no} {name:15} {ms:.2f} ms CPU per message, {rate:,.0f} msg/s")
    for name, figures in results.items():
        print(f"{name}: median {statistics.median(ms for _, ms in figures):.2f} ms CPU per message "
              f"({min(ms for _, ms in figures):.2f}–{max(ms for _, ms in figures):.2f}), "
              f"{statistics.median(rate for rate, _ in figures):,.0f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
