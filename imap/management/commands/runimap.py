"""manage.py runimap: the IMAP (STARTTLS) and IMAPS (implicit TLS) listeners.

`--workers N` (default MAILSUITE_IMAP_WORKERS, 0 = one per CPU core) runs N processes
sharing the ports (SO_REUSEPORT) under a supervisor, as runsmtp does: one Python process
can use one core, and a session's work is mostly Python. Nothing a session needs lives
only in one process: mailbox state is in the database, and IDLE hears changes made by
other processes over the change bus (mailstore.events). MAILSUITE_IMAP_MAX_CONNECTIONS
bounds each worker.
"""
import asyncio
import logging
import os
import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from imap.server import IMAPService, Listener
from mailsuite.lib.aio import shutdown_db_executor
from mailsuite.lib.heap import freeze_startup_heap
from mailsuite.supervisor import Child, Supervisor, manage_py
from mailstore import search_index

# A worker's threads take turns with the interpreter every 0.5 ms instead of CPython's
# 5 ms: a database thread holding SQLite's write lock (which every session's STORE,
# EXPUNGE and APPEND waits for) gets it back sooner. bench/imap.py's (b) ran about 10 %
# faster.
SWITCH_INTERVAL = 0.0005

log = logging.getLogger("mailsuite.imap")


class Command(BaseCommand):
    help = "Run the IMAP server (IMAP with STARTTLS, and IMAPS) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_IMAP_PORT)
        parser.add_argument("--imaps-port", type=int, default=settings.MAILSUITE_IMAPS_PORT)
        parser.add_argument(
            "--workers", type=int, default=settings.MAILSUITE_IMAP_WORKERS,
            help="processes sharing the ports (SO_REUSEPORT); 0 = one per CPU core",
        )

    def handle(self, *args, host, port, imaps_port, workers, **options):
        if workers < 0:
            raise CommandError("--workers cannot be negative")
        workers = workers or os.cpu_count() or 1
        if workers > 1:
            if not (port and imaps_port):
                # Each worker would pick a port of its own: there would be no one port to connect to.
                raise CommandError("several workers need fixed ports (not 0); use --workers 1 for a free port")
            argv = ["runimap", "--host", host, "--port", str(port), "--imaps-port", str(imaps_port), "--workers", "1"]
            children = [
                Child(f"imap-{i}", manage_py(*argv), env={"MAILSUITE_REUSE_PORT": "1"}) for i in range(workers)
            ]
            raise SystemExit(Supervisor(children).run())
        reuse_port = os.environ.get("MAILSUITE_REUSE_PORT") == "1"
        search_index.run_in_background()  # a worker (the supervisor above stores nothing)
        freeze_startup_heap()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            asyncio.run(serve(host, port, imaps_port, reuse_port=reuse_port))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}: {error}") from None
        finally:
            shutdown_db_executor()


def listeners(host, port, imaps_port, *, reuse_port=False):
    return [
        Listener(host, port, "imap", reuse_port=reuse_port),
        Listener(host, imaps_port, "imaps", implicit_tls=True, reuse_port=reuse_port),
    ]


async def serve(host, port, imaps_port, *, reuse_port=False):
    service = IMAPService()
    for listener in listeners(host, port, imaps_port, reuse_port=reuse_port):
        await service.listen(listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("imap stopping")
    await service.close()
