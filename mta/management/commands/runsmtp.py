import asyncio
import logging
import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsuite.lib.tls import ensure_certificate, server_context
from mailsuite.supervisor import Child, Supervisor, manage_py
from mta.smtpd import InboundHandler, Listener, SMTPService

log = logging.getLogger("mta.runsmtp")


class Command(BaseCommand):
    help = "Run the SMTP server (MX port) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_SMTP_PORT)
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.MAILSUITE_SMTP_WORKERS,
            help="processes sharing the port (SO_REUSEPORT); 0 = one per CPU core",
        )

    def handle(self, *args, host, port, workers, **options):
        workers = workers or os.cpu_count() or 1
        if workers > 1:
            argv = ["runsmtp", "--host", host, "--port", str(port), "--workers", "1"]
            children = [
                Child(f"smtp-{i}", manage_py(*argv), env={"MAILSUITE_REUSE_PORT": "1"}) for i in range(workers)
            ]
            raise SystemExit(Supervisor(children).run())
        reuse_port = os.environ.get("MAILSUITE_REUSE_PORT") == "1"
        try:
            asyncio.run(serve(host, port, reuse_port=reuse_port))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{port}: {error}") from None


async def serve(host, port, *, reuse_port=False):
    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
    service = SMTPService(
        InboundHandler(
            trusted_networks=settings.MAILSUITE_TRUSTED_NETWORKS,
            max_recipients=settings.MAILSUITE_MAX_RECIPIENTS,
        ),
        hostname=settings.MAILSUITE_HOSTNAME,
        tls_context=server_context(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY),
        max_connections=settings.MAILSUITE_SMTP_MAX_CONNECTIONS,
    )
    await service.listen(Listener(host, port, "smtp", reuse_port=reuse_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("smtp stopping")
    await service.close()
