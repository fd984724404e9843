"""manage.py bulk import|export accounts|aliases: CSV files of many accounts or aliases.

`import KIND FILE` is a dry run that prints one line per row (line, address, result,
why) and changes nothing; with --apply the rows are written, all of them or (when any
row fails) none. `-` reads standard input. `export KIND [DOMAIN]` writes the CSV that
import reads (passwords are never exported). The work is api.csvio's, as for the API.
"""

from django.core.management.base import CommandError

from accounts.management.cli import SubcommandCommand


class Command(SubcommandCommand):
    help = "Import and export accounts and aliases as CSV (dry run first, a report per row)."
    takes_as = True

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)
        imports = subcommands.add_parser(
            "import", help="check (and with --apply, make) the changes a CSV file describes",
            description="Accounts: columns address (required), display_name, quota (e.g. 500M), active (yes/no), "
            "messages_per_hour, recipients_per_day, password. Aliases: address, targets (separated by spaces "
            "or commas). Existing addresses are updated. Without --apply nothing is written.",
        )
        imports.add_argument("kind", choices=["accounts", "aliases"])
        imports.add_argument("file", help="a CSV file with a header line, or - for standard input")
        imports.add_argument("--apply", action="store_true", help="write the changes (all rows, or none if one fails)")

        exports = subcommands.add_parser("export", help="write accounts or aliases as CSV to standard output")
        exports.add_argument("kind", choices=["accounts", "aliases"])
        exports.add_argument("domain", nargs="?", help="only this domain")

    def handle_import(self, *, kind, file, apply, **options):
        from api import csvio

        if file == "-":
            text = self.stdin.read()
        else:
            try:
                with open(file, encoding="utf-8-sig") as handle:
                    text = handle.read(csvio.MAX_BYTES + 1)
            except (OSError, UnicodeDecodeError) as error:
                raise CommandError(f"cannot read {file}: {error}") from None
        report = csvio.import_csv(kind, text, apply=apply, acting_user=self.acting_user)
        self.write_table([f"line {row.line}", row.address, row.result, row.message] for row in report.rows)
        counts = report.counts
        summary = ", ".join(f"{counts[name]} {name}" for name in ("created", "updated", "unchanged", "error"))
        if counts["error"]:
            raise CommandError(f"{summary}: nothing was written; fix the rows in error and run it again")
        if report.applied:
            self.say(f"applied: {summary}")
        else:
            self.say(f"dry run: {summary}; run again with --apply to write the changes")

    def handle_export(self, *, kind, domain, **options):
        from api import csvio

        if domain is not None:
            from accounts import actions

            domain = actions.get_domain(domain, acting_user=self.acting_user).name
        for line in csvio.export_rows(kind, acting_user=self.acting_user, domain=domain):
            self.stdout.write(line, ending="")


