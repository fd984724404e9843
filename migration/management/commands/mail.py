"""manage.py mail import|export|migrate: move an account's mail in from files or another IMAP
server, and out to files; mail jobs|job-cancel|job-resume for the runs in the background.

Every write goes through migration.actions (and so mailstore.actions). Each import, export
and migration is a TransferJob, run here in the foreground (Ctrl-C cancels it) or by a
Celery worker with --background; either way its progress shows in the admin and the
webmail, and it can be cancelled there. A refusal (unknown account, unreadable source,
folder name the store refuses, quota) exits non-zero with a one-line reason on stderr;
what was stored before it stays, and a rerun (or job-resume) carries on from there.

fetch-add and fetch-remove are audited like the admin's and the webmail's changes, by the
system via cli: these subcommands act as the system (there is no --as here).
"""
import os
import time

from django.core.management.base import CommandError

from accounts import actions as accounts
from accounts.management.cli import SubcommandCommand, show_address_of
from mailsuite.lib.sizes import format_size
from mailstore.actions import MailstoreError
from migration import actions, fetching
from migration.models import ExternalAccount, TransferJob
from migration.remote import DEFAULT_PORTS, TLS_MODES, RemoteError
from migration.sources import SourceError

PASSWORD_STDIN_HELP = "read the password from the first line of standard input"
BACKGROUND_HELP = "queue the job for a Celery worker, print its id and return (see `mail jobs`)"


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
        imports.add_argument("--background", action="store_true", help=BACKGROUND_HELP)
        imports.add_argument("--workers", type=int, metavar="N", help="processes that parse and write messages "
                             "beside the one that reads and commits (default: one per core, in the foreground; "
                             "0: none)")

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
        export.add_argument("--background", action="store_true", help=BACKGROUND_HELP)

        migrate = subcommands.add_parser(
            "migrate",
            help="copy a whole account from another IMAP server (rerun to copy what arrived since)",
            description="Copies every selectable folder (or those named with --only): messages with their flags, "
            "keywords and INTERNALDATE. Special-use folders (Sent, Drafts, Junk, Trash, Archive) land in ours. "
            "Remote UIDs are remembered per folder with its UIDVALIDITY, so a rerun copies only new mail; run it "
            "again right after switching the MX; a rerun also brings flags changed there since (only the changed "
            "ones when the server has CONDSTORE, else by comparing all). Ends with a per-folder report of message counts and sizes on "
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
        migrate.add_argument("--background", action="store_true", help=BACKGROUND_HELP + "; the password is kept "
                             "encrypted until the job is done")

        jobs = subcommands.add_parser("jobs", help="list import, export and migration jobs with their progress")
        jobs.add_argument("address", nargs="?")
        jobs.add_argument("--active", action="store_true", help="only queued and running jobs")
        job_cancel = subcommands.add_parser("job-cancel", help="stop a job before its next message (resumable)")
        job_cancel.add_argument("id", type=int)
        job_resume = subcommands.add_parser(
            "job-resume", help="run a failed or cancelled job again; it skips what is done",
            description="Queued for a worker, or with --foreground run here. A migration whose password is not "
            "stored (it was run in the foreground) needs --password-stdin.",
        )
        job_resume.add_argument("id", type=int)
        job_resume.add_argument("--foreground", action="store_true", help="run it here, not in a worker")
        job_resume.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)

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
                account, acting_user=None, protocol=protocol, host=host, port=port, username=user, password=password,
                tls=tls, verify_certificate=not insecure, remote_folders="\n".join(remote_folder), local_folder=folder,
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
        external = ExternalAccount.objects.filter(pk=id).select_related("account__domain").first()
        if external is None:
            raise CommandError(f"no external account {id}")
        fetching.remove_external_account(external, acting_user=None)
        self.say(f"removed external account {id}")

    def _echo(self):
        last = [time.monotonic()]

        def echo(report):
            now = time.monotonic()
            if self.verbosity > 1 or (self.verbosity > 0 and now - last[0] >= 5):
                last[0] = now
                if hasattr(report, "imported"):
                    self.stdout.write(f"… {report.imported} imported, {report.already} already there")
                elif hasattr(report, "exported"):
                    self.stdout.write(f"… {report.exported} exported")
                else:
                    self.stdout.write(f"… {report.copied} copied")

        return echo

    def _run(self, job, *, background, password=None):
        """Queue `job` (--background) or run it here; the finished job and its report, or
        (None, None) when it was queued."""
        if background:
            self.say(f"job {job.pk} queued: {job.get_kind_display()} for {show_address_of(job.account)} "
                     f"(`mail jobs` shows its progress, `mail job-cancel {job.pk}` stops it)")
            return None, None
        try:
            job, report = actions.run_job(job.pk, password=password, echo=self._echo())
        except KeyboardInterrupt:
            raise CommandError(f"job {job.pk} cancelled; `mail job-resume {job.pk}` goes on from here") from None
        if job.state == TransferJob.State.FAILED:
            raise CommandError(job.error)
        if job.state == TransferJob.State.CANCELLED:
            raise CommandError(f"job {job.pk} was cancelled; `mail job-resume {job.pk}` goes on from here")
        if report is None:
            raise CommandError(f"job {job.pk} is {job.state}")
        return job, report

    def handle_import(self, *, address, path, folder, background, workers, **options):
        account = accounts.get_account(address)
        if not os.path.exists(path):
            raise CommandError(f"{path} does not exist")
        path = os.path.abspath(path)
        with transfer_errors():
            if folder:
                folder = actions.store.normalise_folder_name(folder)
            job = actions.create_job(account, TransferJob.Kind.IMPORT, source=path, folder=folder or "",
                                     label=os.path.basename(path), total_bytes=actions.source_size(path) if background else None,
                                     options={} if workers is None else {"workers": max(0, workers)},
                                     background=background)
        started = time.monotonic()
        job, report = self._run(job, background=background)
        if report is None:
            return
        self._print_import(account, report, time.monotonic() - started)

    def _print_import(self, account, report, elapsed):
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

    def handle_export(self, *, address, dest, format, folder, background, **options):
        account = accounts.get_account(address)
        with transfer_errors():
            job = actions.create_job(account, TransferJob.Kind.EXPORT, source=os.path.abspath(dest), folder=folder or "",
                                     options={"format": format}, background=background)
        job, report = self._run(job, background=background)
        if report is None:
            return
        for name, count in sorted(report.folders.items()):
            self.say(f"{name}: {count} exported")
        self.say(f"exported {report.exported} messages ({format_size(report.bytes)}) to {dest} as {format}")

    def handle_migrate(self, *, address, host, port, user, tls, insecure, only, background, **options):
        account = accounts.get_account(address)
        password = self.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise CommandError("no password on standard input")
        port = port or DEFAULT_PORTS[("imap", tls)]
        with transfer_errors():
            job = actions.create_job(
                account, TransferJob.Kind.MIGRATE, source=f"{user}@{host}:{port}", password=password,
                options={"host": host, "port": port, "user": user, "tls": tls, "verify": not insecure, "only": only or []},
                background=background,
            )
        job, report = self._run(job, background=background, password=password)
        if report is None:
            return
        self._print_migration(report, user, host, account)

    def _print_migration(self, report, user, host, account):
        rows = [["remote folder", "local folder", "copied", "flags updated", "remote msgs", "remote size", "local msgs",
                 "local size", ""]]
        for check in report.folders:
            rows.append([
                check.remote, check.local, check.copied, check.flags_updated, check.remote_count, format_size(check.remote_size),
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

    def handle_jobs(self, *, address, active, **options):
        jobs = TransferJob.objects.select_related("account__domain").order_by("-created", "-pk")
        if address:
            jobs = jobs.filter(account=accounts.get_account(address))
        if active:
            jobs = jobs.filter(state__in=[TransferJob.State.QUEUED, TransferJob.State.RUNNING])
        rows = []
        for job in jobs[:200]:
            percent = f"{job.percent}%" if job.percent is not None else ""
            rows.append([job.pk, show_address_of(job.account), job.kind, job.state, percent,
                         f"{job.messages} done", f"{job.already} already", format_size(job.bytes),
                         job.label or job.source, job.error])
        self.write_table(rows)

    def _job(self, pk):
        job = TransferJob.objects.select_related("account__domain").filter(pk=pk).first()
        if job is None:
            raise CommandError(f"no job {pk}")
        return job

    def handle_job_cancel(self, *, id, **options):
        job = self._job(id)
        if not job.active:
            raise CommandError(f"job {id} is {job.state}: nothing to cancel")
        job = actions.cancel_job(job)
        if job.state == TransferJob.State.CANCELLED:
            self.say(f"job {id} cancelled")
        elif job.state == TransferJob.State.RUNNING:
            self.say(f"job {id} stops before its next message")
        else:
            raise CommandError(f"job {id} is {job.state}: nothing to cancel")

    def handle_job_resume(self, *, id, foreground, password_stdin, **options):
        job = self._job(id)
        password = None
        if password_stdin:
            password = self.stdin.readline().removesuffix("\n").removesuffix("\r") or None
        with transfer_errors():
            job = actions.resume_job(job, password=password, background=not foreground)
        if not foreground:
            self.say(f"job {id} queued again")
            return
        started = time.monotonic()
        job, report = self._run(job, background=False, password=password)
        if job.kind == TransferJob.Kind.IMPORT:
            self._print_import(job.account, report, time.monotonic() - started)
        elif job.kind == TransferJob.Kind.MIGRATE:
            self._print_migration(report, job.options["user"], job.options["host"], job.account)
        else:
            self.say(f"exported {report.exported} messages ({format_size(report.bytes)}) to {job.source}")


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
