"""manage.py runimap: the IMAP (STARTTLS) and IMAPS (implicit TLS) listeners."""
import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from imap.server import IMAPService, Listener
from mailsuite.lib.aio import shutdown_db_executor

log = logging.getLogger("mailsuite.imap")


class Command(BaseCommand):
    help = "Run the IMAP server (IMAP with STARTTLS, and IMAPS) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_IMAP_PORT)
        parser.add_argument("--imaps-port", type=int, default=settings.MAILSUITE_IMAPS_PORT)

    def handle(self, *args, host, port, imaps_port, **options):
        try:
            asyncio.run(serve(host, port, imaps_port))
        finally:
            shutdown_db_executor()


def listeners(host, port, imaps_port):
    return [Listener(host, port, "imap"), Listener(host, imaps_port, "imaps", implicit_tls=True)]


async def serve(host, port, imaps_port):
    service = IMAPService()
    for listener in listeners(host, port, imaps_port):
        await service.listen(listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("imap stopping")
    await service.close()
