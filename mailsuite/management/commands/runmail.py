import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand

from mailsuite.bootstrap import ensure_admin_user, welcome
from mailsuite.lib.tls import ensure_certificate
from mailsuite.supervisor import Child, Supervisor, manage_py
from ops import metrics

log = logging.getLogger("mailsuite.runmail")


class Command(BaseCommand):
    help = "Run every mailsuite service in the foreground; Ctrl-C or SIGTERM stops them all."

    def handle(self, *args, **options):
        # Made once here rather than by each daemon racing at its first start.
        ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, settings.MAILSUITE_HOSTNAME)
        self.stdout.write(welcome(ensure_admin_user()))
        self.stdout.flush()
        if not os.environ.get(metrics.MULTIPROC_ENV):  # every daemon counts where /metrics adds them up
            os.environ[metrics.MULTIPROC_ENV] = metrics.prepare_multiprocess_dir(settings.DATA_DIR)
        children = [
            Child("web", manage_py("runweb")),
            Child("smtp", manage_py("runsmtp")),
            Child("imap", manage_py("runimap")),
            Child("pop3", manage_py("runpop3")),
            Child("managesieve", manage_py("runmanagesieve")),
            Child("queue", manage_py("runqueue")),
        ]
        raise SystemExit(Supervisor(children).run())
