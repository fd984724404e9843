"""manage.py mail import|export|migrate: move an account's mail in from files or another IMAP
server, and out to files.

Every write goes through migration.actions (and so mailstore.actions). A refusal
(unknown account, unreadable source, folder name the store refuses, quota) exits
non-zero with a one-line reason on stderr; what was stored before it stays, and a rerun
carries on from there.
"""
import time

from django.core.management.base import CommandError

from accounts import actions as accounts
from accounts.management.cli import SubcommandCommand, show_address_of
from mailsuite.lib.sizes import format_size
from mailstore.actions import MailstoreError
from migration import actions, fetching
from migration.models import ExternalAccount
from migration.remote import DEFAULT_PORTS, TLS_MODES, RemoteError
from migration.sources import SourceError

PASSWORD_STDIN_HELP = "read the password from the first line of standard input"


class Command(SubcommandCommand):
    help = "Import mail from files, export it to files."

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        imports = subcommands.add_parser(
            "import",
            help="import an mbox, Maildir, EML or ZIP file (or a directory of them) into an account",
            description="Folders, flags, keywords and dates are kept: Maildir++ folders (.A.B) and fs-layout "
            "subdirectories, Dovecot's dovecot-keywords, mbox Status/X-Status/X-Keywords (and Thunderbird's "
            "X-Mozilla-*) fields, a directory of mbox files (Thunderbird's Name.sbd/ children), a ZIP of .eml "
            "files or of a Maildir. A rerun skips what an earlier run stored, so an interrupted import is "
            "simply run again.",
        )
        imports.add_argument("address", help="the account to import into")
        imports.add_argument("path")
        imports.add_argument(
            "--folder", help="put the source's top level in this folder and its subfolders beneath it "
            "(default: the top level is INBOX and subfolders keep their names)",
        )

        export = subcommands.add_parser(
            "export",
            help="write an account's folders as mbox files or a Maildir++ tree",
            description="mbox: DEST/INBOX.mbox, DEST/Work/Clients.mbox … (mboxrd; flags in Status, X-Status and "
            "X-Keywords). maildir: INBOX at DEST, subfolders as DEST/.Work.Clients (flags in file names, keywords "
            "in dovecot-keywords, INTERNALDATE as the file time). DEST must be new or empty.",
        )
        export.add_argument("address")
        export.add_argument("dest")
        export.add_argument("--format", choices=["mbox", "maildir"], required=True)
        export.add_argument("--folder", help="only this folder and its subfolders")

        migrate = subcommands.add_parser(
            "migrate",
            help="copy a whole account from another IMAP server (rerun to copy what arrived since)",
            description="Copies every selectable folder (or those named with --only): messages with their flags, "
            "keywords and INTERNALDATE. Special-use folders (Sent, Drafts, Junk, Trash, Archive) land in ours. "
            "Remote UIDs are remembered per folder with its UIDVALIDITY, so a rerun copies only new mail; run it "
            "again right after switching the MX. Ends with a per-folder report of message counts and sizes on "
            "both sides; exits 1 if any remote message was not copied. The remote password is read from the first "
            "line of standard input.",
        )
        migrate.add_argument("address", help="the account to copy into")
        migrate.add_argument("--host", required=True)
        migrate.add_argument("--port", type=int, help="default: 993 with --tls implicit, else 143")
        migrate.add_argument("--user", required=True, help="the login on the remote server")
        migrate.add_argument("--password-stdin", action="store_true", required=True, help=PASSWORD_STDIN_HELP)
        migrate.add_argument("--tls", choices=TLS_MODES, default="implicit")
        migrate.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
        migrate.add_argument("--only", action="append", metavar="FOLDER", help="copy only this remote folder (repeatable)")

        fetch_add = subcommands.add_parser(
            "fetch-add", help="fetch mail from an external POP3 or IMAP account into an account, every few minutes",
            description="The password is read from standard input and stored encrypted. Mail for INBOX goes "
            "through Sieve and the quota like mail received over SMTP.",
        )
        fetch_add.add_argument("address")
        fetch_add.add_argument("--protocol", choices=["pop3", "imap"], required=True)
        fetch_add.add_argument("--host", required=True)
        fetch_add.add_argument("--port", type=int)
        fetch_add.add_argument("--user", required=True)
        fetch_add.add_argument("--password-stdin", action="store_true", required=True, help=PASSWORD_STDIN_HELP)
        fetch_add.add_argument("--tls", choices=TLS_MODES, default="implicit")
        fetch_add.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
        fetch_add.add_argument("--remote-folder", action="append", default=[], help="IMAP: fetch this folder "
                               "(repeatable; default INBOX; * for all)")
        fetch_add.add_argument("--folder", default="INBOX", help="local folder (default INBOX)")
        fetch_add.add_argument("--delete", action="store_true", help="delete fetched mail on the server")
        fetch_list = subcommands.add_parser("fetch-list", help="list external accounts with their last success and error")
        fetch_list.add_argument("address", nargs="?")
        fetch_run = subcommands.add_parser("fetch-run", help="fetch now (one external account by id, or all due)")
        fetch_run.add_argument("id", nargs="?", type=int)
        fetch_remove = subcommands.add_parser("fetch-remove", help="stop fetching an external account")
        fetch_remove.add_argument("id", type=int)

    def handle_fetch_add(self, *, address, protocol, host, port, user, tls, insecure, remote_folder, folder, delete, **options):
        account = accounts.get_account(address)
        password = self.stdin.readline().removesuffix("\n").removesuffix("\r")
        with transfer_errors():
            external = fetching.add_external_account(
                account, protocol=protocol, host=host, port=port, username=user, password=password, tls=tls,
                verify_certificate=not insecure, remote_folders="\n".join(remote_folder), local_folder=folder,
                keep=not delete,
            )
        self.say(f"external account {external.pk}: {user}@{host}:{external.port} ({protocol}) into {folder}")

    def handle_fetch_list(self, *, address, **options):
        externals = ExternalAccount.objects.select_related("account__domain").order_by("pk")
        if address:
            externals = externals.filter(account=accounts.get_account(address))
        self.write_table(
            [e.pk, show_address_of(e.account), e.protocol, f"{e.username}@{e.host}:{e.port}",
             "enabled" if e.enabled else "disabled",
             f"last success {e.last_success:%Y-%m-%d %H:%M}" if e.last_success else "never fetched",
             e.last_error or ""]
            for e in externals
        )

    def handle_fetch_run(self, *, id, **options):
        if id is None:
            results = fetching.fetch_due()
        else:
            external = ExternalAccount.objects.filter(pk=id).select_related("account__domain").first()
            if external is None:
                raise CommandError(f"no external account {id}")
            results = {id: fetching.fetch_external(external)}
        failed = []
        for pk, count in results.items():
            external = ExternalAccount.objects.get(pk=pk)
            if external.last_error:
                failed.append(f"{external.pk}: {external.last_error}")
            else:
                self.say(f"{pk}: {count} fetched")
        if failed:
            raise CommandError("; ".join(failed))

    def handle_fetch_remove(self, *, id, **options):
        external = ExternalAccount.objects.filter(pk=id).first()
        if external is None:
            raise CommandError(f"no external account {id}")
        fetching.remove_external_account(external)
        self.say(f"removed external account {id}")

    def handle_import(self, *, address, path, folder, **options):
        account = accounts.get_account(address)
        started = time.monotonic()
        last = [started]

        def progress(report):
            now = time.monotonic()
            if self.verbosity > 1 or (self.verbosity > 0 and now - last[0] >= 5):
                last[0] = now
                self.stdout.write(f"… {report.imported} imported, {report.already} already there")

        with transfer_errors():
            report = actions.import_path(account, path, root=folder, progress=progress)
        elapsed = time.monotonic() - started
        for name in report.created_folders:
            self.say(f"created folder {name}")
        for name, count in sorted(report.folders.items()):
            self.say(f"{name}: {count} imported")
        for reason in report.skipped.reasons:
            self.warn(f"skipped {reason}")
        rate = f", {report.imported / elapsed:.0f}/s" if report.imported and elapsed > 0 else ""
        self.say(
            f"imported {report.imported} messages ({format_size(report.bytes)}) into {show_address_of(account)} "
            f"in {elapsed:.1f}s{rate}; {report.already} were already there"
        )

    def handle_export(self, *, address, dest, format, folder, **options):
        account = accounts.get_account(address)
        with transfer_errors():
            report = actions.export_account(account, dest, format=format, folder=folder)
        for name, count in sorted(report.folders.items()):
            self.say(f"{name}: {count} exported")
        self.say(f"exported {report.exported} messages ({format_size(report.bytes)}) to {dest} as {format}")


    def handle_migrate(self, *, address, host, port, user, tls, insecure, only, **options):
        account = accounts.get_account(address)
        password = self.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise CommandError("no password on standard input")
        with transfer_errors():
            report = actions.migrate_imap(
                account, host=host, port=port or DEFAULT_PORTS[("imap", tls)], user=user, password=password,
                tls=tls, verify=not insecure, only=only,
            )
        rows = [["remote folder", "local folder", "copied", "remote msgs", "remote size", "local msgs", "local size", ""]]
        for check in report.folders:
            rows.append([
                check.remote, check.local, check.copied, check.remote_count, format_size(check.remote_size),
                check.local_count, format_size(check.local_size), "ok" if check.ok else f"{check.missing} missing",
            ])
        self.write_table(rows)
        for check in report.folders:
            for reason in check.skipped:
                self.warn(f"{check.remote}: skipped {reason}")
        missing = sum(check.missing for check in report.folders)
        if missing:
            raise CommandError(f"{missing} remote messages were not copied (see above)")
        self.say(f"copied {report.copied} messages from {user}@{host} into {show_address_of(account)}")


class transfer_errors:
    """A refusal from the readers or the store becomes a CommandError (exit status 1)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, (actions.TransferError, SourceError, MailstoreError, RemoteError, fetching.ExternalAccountError)):
            raise CommandError(str(error)) from None
        if isinstance(error, OSError):
            raise CommandError(f"{error.filename or ''}: {error.strerror or error}") from None
        return False
