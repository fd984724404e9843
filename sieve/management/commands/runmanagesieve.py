"""manage.py runmanagesieve: the ManageSieve server (RFC 5804), in the foreground.

With no arguments it serves MAILSUITE_MANAGESIEVE_PORT on MAILSUITE_BIND, with STARTTLS;
SIGTERM or SIGINT stops it cleanly.
"""
import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsuite.lib.aio import shutdown_db_executor
from mailsuite.lib.heap import freeze_startup_heap
from mailsuite.lib.tls import TLSContextProvider, ensure_certificate
from sieve.server import Listener, ManageSieveService

log = logging.getLogger("sieve.runmanagesieve")


class Command(BaseCommand):
    help = "Run the ManageSieve server (RFC 5804) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_MANAGESIEVE_PORT, help="0 turns it off")

    def handle(self, *args, host, port, **options):
        if not port:
            self.stdout.write("ManageSieve is off (port 0)")
            return
        freeze_startup_heap()
        try:
            asyncio.run(serve(host, port))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{port}: {error}") from None
        finally:
            shutdown_db_executor()


def service():
    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
    return ManageSieveService(
        hostname=settings.MAILSUITE_HOSTNAME,
        tls=TLSContextProvider(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY),
        plaintext_loopback=settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK,
    )


async def serve(host, port):
    running = service()
    await running.listen(Listener(host, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("managesieve stopping")
    await running.close()
