"""manage.py runpop3: POP3 with STLS and POP3S (implicit TLS), in the foreground.

With no arguments it serves the configured ports (MAILSUITE_POP3_PORT, MAILSUITE_POP3S_PORT)
on MAILSUITE_BIND; SIGTERM or SIGINT stops it cleanly (sessions end, maildrop locks are
given up). `--workers N` runs N processes sharing the ports (SO_REUSEPORT): the maildrop
lock is in the database, so it holds across them (and across machines).
"""
import asyncio
import collections
import logging
import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsuite.lib.aio import shutdown_db_executor
from mailsuite.lib.heap import freeze_startup_heap
from mailsuite.lib.tls import TLSContextProvider, ensure_certificate
from mailsuite.supervisor import Child, Supervisor, manage_py
from pop3.server import Listener, POP3Service

log = logging.getLogger("pop3.runpop3")


class Command(BaseCommand):
    help = "Run the POP3 server (POP3 with STLS, and POP3S) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_POP3_PORT, help="0 turns it off")
        parser.add_argument("--pop3s-port", type=int, default=settings.MAILSUITE_POP3S_PORT, help="0 turns it off")
        parser.add_argument(
            "--workers", type=int, default=1, help="processes sharing the ports (SO_REUSEPORT); 0 = one per CPU core"
        )
        parser.add_argument(
            "--login-delay", type=int, default=0,
            help="minimum seconds between two POP3 logins of one account (RFC 2449 LOGIN-DELAY); 0 = none",
        )

    def handle(self, *args, host, port, pop3s_port, workers, login_delay, **options):
        if login_delay < 0:
            raise CommandError("--login-delay cannot be negative")
        workers = workers or os.cpu_count() or 1
        if workers > 1:
            argv = ["runpop3", "--host", host, "--port", str(port), "--pop3s-port", str(pop3s_port),
                    "--login-delay", str(login_delay), "--workers", "1"]
            children = [
                Child(f"pop3-{i}", manage_py(*argv), env={"MAILSUITE_REUSE_PORT": "1"}) for i in range(workers)
            ]
            raise SystemExit(Supervisor(children).run())
        ports = {"pop3": port or None, "pop3s": pop3s_port or None}
        reuse_port = os.environ.get("MAILSUITE_REUSE_PORT") == "1"
        freeze_startup_heap()
        try:
            asyncio.run(serve(host, ports, reuse_port=reuse_port, login_delay=login_delay))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}: {error}") from None
        finally:
            shutdown_db_executor()


def services(host, ports, *, reuse_port=False, login_delay=0):
    """The POP3 services for the given ports ({"pop3": 110, "pop3s": 995}; None leaves one
    out, 0 picks a free port), as (POP3Service, Listener) pairs."""
    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
    tls = TLSContextProvider(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY)
    open_per_ip = collections.Counter()
    options = {
        "hostname": settings.MAILSUITE_HOSTNAME,
        "tls": tls,
        "plaintext_loopback": settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK,
        "login_delay": login_delay,
        "open_per_ip": open_per_ip,
    }
    kinds = {
        "pop3": lambda: POP3Service(**options),
        "pop3s": lambda: POP3Service(implicit_tls=True, **options),
    }
    return [
        (kinds[name](), Listener(host, port, name, reuse_port=reuse_port))
        for name, port in ports.items()
        if port is not None
    ]


async def serve(host, ports, *, reuse_port=False, login_delay=0):
    running = services(host, ports, reuse_port=reuse_port, login_delay=login_delay)
    for service, listener in running:
        await service.listen(listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("pop3 stopping")
    for service, _ in running:
        await service.close()
