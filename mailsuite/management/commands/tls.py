from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsuite.lib.tls import certificate_info, ensure_certificate


class Command(BaseCommand):
    help = "TLS certificate: `ensure` creates a self-signed pair if none exists; `status` shows it."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["ensure", "status"])

    def handle(self, *args, action, **options):
        cert, key = settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY
        if action == "ensure":
            if ensure_certificate(cert, key, settings.MAILSUITE_HOSTNAME):
                self.stdout.write(f"created a self-signed TLS certificate for {settings.MAILSUITE_HOSTNAME}: {cert}")
            return
        try:
            info = certificate_info(cert)
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read certificate {cert}: {error}") from None
        self.stdout.write(f"file:     {cert}")
        self.stdout.write(f"subject:  {info['subject']}")
        self.stdout.write(f"issuer:   {info['issuer']}{' (self-signed)' if info['self_signed'] else ''}")
        self.stdout.write(f"names:    {', '.join(info['san']) or '-'}")
        self.stdout.write(f"valid:    {info['not_before']:%Y-%m-%d} to {info['not_after']:%Y-%m-%d}")
