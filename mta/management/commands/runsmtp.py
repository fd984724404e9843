import argparse
import asyncio
import logging
import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsuite.lib.aio import GroupCommit
from mailsuite.lib.heap import freeze_startup_heap
from mailsuite.lib.tls import TLSContextProvider, ensure_certificate
from mailsuite.supervisor import Child, Supervisor, manage_py
from mailstore import search_index
from mta import inbound
from mta.committer import CommitServer, RemoteCommitter, socket_path
from mta.smtpd import ConnectionGate, InboundHandler, Listener, SMTPService, SubmissionHandler

log = logging.getLogger("mta.runsmtp")


class Command(BaseCommand):
    help = "Run the SMTP server (MX, submission and SMTPS ports) in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_SMTP_PORT, help="MX port")
        parser.add_argument(
            "--submission-port", type=int, default=settings.MAILSUITE_SUBMISSION_PORT, help="0 turns it off"
        )
        parser.add_argument("--smtps-port", type=int, default=settings.MAILSUITE_SMTPS_PORT, help="0 turns it off")
        parser.add_argument("--commit-service", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.MAILSUITE_SMTP_WORKERS,
            help="processes sharing the ports (SO_REUSEPORT); 0 = one per CPU core",
        )

    def handle(self, *args, host, port, submission_port, smtps_port, workers, commit_service, **options):
        workers = workers or os.cpu_count() or 1
        path = socket_path(str(settings.DATA_DIR), port)
        if commit_service:
            search_index.run_in_background()  # this process stores what the workers accept
            freeze_startup_heap()
            CommitServer(path).serve_forever()
            return
        # On the command line 0 turns a port off; services() takes None for that.
        ports = {"smtp": port, "submission": submission_port or None, "smtps": smtps_port or None}
        if workers > 1:
            # N protocol workers share the ports; one more process stores what they accept.
            argv = ["runsmtp", "--host", host, "--port", str(port)]
            worker_argv = [*argv, "--submission-port", str(submission_port), "--smtps-port", str(smtps_port)]
            env = {"MAILSUITE_REUSE_PORT": "1", "MAILSUITE_COMMIT_SOCKET": path}
            children = [Child("smtp-commit", manage_py(*argv, "--commit-service"))]
            children += [
                Child(f"smtp-{i}", manage_py(*worker_argv, "--workers", "1"), env=env) for i in range(workers)
            ]
            raise SystemExit(Supervisor(children).run())
        reuse_port = os.environ.get("MAILSUITE_REUSE_PORT") == "1"
        commit_socket = os.environ.get("MAILSUITE_COMMIT_SOCKET")
        if not commit_socket:
            search_index.run_in_background()  # one process: it stores what it accepts itself
        freeze_startup_heap()
        try:
            asyncio.run(serve(host, ports, reuse_port=reuse_port, commit_socket=commit_socket))
        except OSError as error:
            raise CommandError(f"cannot listen on {host}: {error}") from None


def services(host, ports, *, committer=None, reuse_port=False):
    """The SMTP services for the given ports ({"smtp": 25, "submission": 587, "smtps": 465};
    None leaves one out, 0 picks a free port), as (SMTPService, Listener) pairs sharing one
    committer."""
    ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
    tls = TLSContextProvider(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY)
    committer = committer or GroupCommit(inbound.accept)
    gate = ConnectionGate(settings.MAILSUITE_SMTP_MAX_CONNECTIONS_PER_IP)
    handler_options = {
        "trusted_networks": settings.MAILSUITE_TRUSTED_NETWORKS,
        "max_recipients": settings.MAILSUITE_MAX_RECIPIENTS,
        "committer": committer,
    }
    service_options = {
        "hostname": settings.MAILSUITE_HOSTNAME,
        "tls": tls,
        "max_connections": settings.MAILSUITE_SMTP_MAX_CONNECTIONS,
        "gate": gate,
    }
    kinds = {
        "smtp": lambda: SMTPService(InboundHandler(**handler_options), **service_options),
        "submission": lambda: SMTPService(
            SubmissionHandler(**handler_options), require_auth=True, **service_options
        ),
        "smtps": lambda: SMTPService(
            SubmissionHandler(**handler_options), require_auth=True, implicit_tls=True, **service_options
        ),
    }
    return [(kinds[name](), Listener(host, port, name, reuse_port=reuse_port)) for name, port in ports.items() if port is not None]


async def serve(host, ports, *, reuse_port=False, commit_socket=None):
    committer = RemoteCommitter(commit_socket) if commit_socket else None
    running = services(host, ports, committer=committer, reuse_port=reuse_port)
    for service, listener in running:
        await service.listen(listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("smtp stopping")
    for service, _ in running:
        await service.close()
