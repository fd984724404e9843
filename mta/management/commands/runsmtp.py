import argparse
import asyncio
import logging
import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsuite.lib.tls import ensure_certificate, server_context
from mailsuite.supervisor import Child, Supervisor, manage_py
from mta.committer import CommitServer, RemoteCommitter, socket_path
from mta.smtpd import InboundHandler, Listener, SMTPService

log = logging.getLogger("mta.runsmtp")


class Command(BaseCommand):
    help = "Run the SMTP server (MX port) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_SMTP_PORT)
        parser.add_argument("--commit-service", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.MAILSUITE_SMTP_WORKERS,
            help="processes sharing the port (SO_REUSEPORT); 0 = one per CPU core",
        )

    def handle(self, *args, host, port, workers, commit_service, **options):
        workers = workers or os.cpu_count() or 1
        path = socket_path(str(settings.DATA_DIR), port)
        if commit_service:
            CommitServer(path).serve_forever()
            return
        if workers > 1:
            # N protocol workers share the port; one more process stores what they accept.
            argv = ["runsmtp", "--host", host, "--port", str(port), "--workers", "1"]
            env = {"MAILSUITE_REUSE_PORT": "1", "MAILSUITE_COMMIT_SOCKET": path}
            children = [Child("smtp-commit", manage_py(*argv[:-2], "--commit-service"))]
            children += [Child(f"smtp-{i}", manage_py(*argv), env=env) for i in range(workers)]
            raise SystemExit(Supervisor(children).run())
        reuse_port = os.environ.get("MAILSUITE_REUSE_PORT") == "1"
        commit_socket = os.environ.get("MAILSUITE_COMMIT_SOCKET")
        try:
            asyncio.run(serve(host, port, reuse_port=reuse_port, commit_socket=commit_socket))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{port}: {error}") from None


async def serve(host, port, *, reuse_port=False, commit_socket=None):
    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
    service = SMTPService(
        InboundHandler(
            trusted_networks=settings.MAILSUITE_TRUSTED_NETWORKS,
            max_recipients=settings.MAILSUITE_MAX_RECIPIENTS,
            committer=RemoteCommitter(commit_socket) if commit_socket else None,
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
