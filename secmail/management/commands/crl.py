"""manage.py crl import FILE… | list | remove ID

Certificate revocation lists the operator imports for every user (S/MIME verification,
secmail.revocation): for a CA whose certificates carry no distribution point, or a server
that may not fetch them. A newer CRL of the same issuer replaces the older one. Users can
import their own on the webmail's keys page.
"""
from django.core.management.base import BaseCommand, CommandError

from secmail import actions
from secmail.errors import SecmailError
from secmail.models import RevocationList


class Command(BaseCommand):
    help = "Import, list and remove the operator's certificate revocation lists (S/MIME)."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        imported = subcommands.add_parser("import", help="import CRL files (PEM or DER)")
        imported.add_argument("files", nargs="+", metavar="FILE")
        subcommands.add_parser("list", help="list the imported CRLs")
        remove = subcommands.add_parser("remove", help="remove a CRL by its id")
        remove.add_argument("id")

    def handle(self, *args, action, **options):
        getattr(self, "handle_" + action)(**options)

    def handle_import(self, files, **options):
        failed = []
        for name in files:
            try:
                with open(name, "rb") as f:
                    crl = actions.import_crl(None, f.read())
            except OSError as exc:
                failed.append(f"{name}: {exc.strerror or exc}")
            except SecmailError as exc:
                failed.append(f"{name}: {exc}")
            else:
                if options["verbosity"] > 0:
                    self.stdout.write(f"{name}: {crl.issuer}, {crl.entries} revoked, of {crl.this_update:%Y-%m-%d %H:%M}")
        if failed:
            raise CommandError("; ".join(failed))

    def handle_list(self, **options):
        for crl in RevocationList.objects.filter(account__isnull=True):
            next_update = f"{crl.next_update:%Y-%m-%d %H:%M}" if crl.next_update else "-"
            self.stdout.write(f"{crl.pk}\t{crl.this_update:%Y-%m-%d %H:%M}\t{next_update}\t{crl.entries}\t{crl.issuer}")

    def handle_remove(self, id, **options):
        try:
            actions.remove_crl(None, id)
        except SecmailError as exc:
            raise CommandError(str(exc)) from None
