"""manage.py sieve check|list|show|put|activate|deactivate|delete|global: Sieve scripts.

    manage.py sieve check FILE                   validate a script ("-" reads standard input)
    manage.py sieve list ADDRESS                 the account's scripts, the active one marked
    manage.py sieve show ADDRESS [NAME]          print a script (default: the active one)
    manage.py sieve put ADDRESS NAME FILE [--activate]
    manage.py sieve activate ADDRESS NAME        / deactivate ADDRESS / delete ADDRESS NAME
    manage.py sieve global set NAME FILE [--position before|after|include]
    manage.py sieve global list|show NAME|delete NAME

Every failure exits non-zero with a one-line reason; a script's error names its line
and column.
"""
import sys

from django.core.management.base import CommandError

from accounts.auth import find_account
from accounts.management.cli import SubcommandCommand
from sieve import actions
from sieve.models import GlobalScript, SieveScript


def _read(path, stdin):
    if path == "-":
        data = stdin.read()
        return data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: the script is not valid UTF-8") from None


def _account(address):
    account = find_account(address)
    if account is None:
        raise CommandError(f"{address}: no such account")
    return account


class Command(SubcommandCommand):
    help = "Check Sieve scripts, and view and set the scripts of accounts and the global ones."

    def add_arguments(self, parser):
        sub = self.add_subcommands(parser)
        check = sub.add_parser("check", help="validate a script file ('-' for standard input)")
        check.add_argument("file")
        listing = sub.add_parser("list", help="an account's scripts")
        listing.add_argument("address")
        show = sub.add_parser("show", help="print an account's script (default: the active one)")
        show.add_argument("address")
        show.add_argument("name", nargs="?")
        put = sub.add_parser("put", help="store a script for an account")
        put.add_argument("address")
        put.add_argument("name")
        put.add_argument("file", help="the script file, '-' for standard input")
        put.add_argument("--activate", action="store_true", help="make it the active script")
        activate = sub.add_parser("activate", help="make a script the active one")
        activate.add_argument("address")
        activate.add_argument("name")
        deactivate = sub.add_parser("deactivate", help="no active script: mail goes to INBOX")
        deactivate.add_argument("address")
        delete = sub.add_parser("delete", help="delete a script (not the active one)")
        delete.add_argument("address")
        delete.add_argument("name")
        glob = sub.add_parser("global", help="the operator's global scripts")
        glob.add_argument("operation", choices=["set", "list", "show", "delete"])
        glob.add_argument("name", nargs="?")
        glob.add_argument("file", nargs="?")
        glob.add_argument("--position", choices=["before", "after", "include"], default="include",
                          help="run before or after every user script, or only by include :global")

    def handle(self, *args, **options):
        try:
            super().handle(*args, **options)
        except actions.InvalidScript as error:
            raise CommandError(f"invalid script: {error.error}") from None
        except actions.SieveError as error:
            raise CommandError(str(error)) from None

    def handle_check(self, file, **options):
        actions.check_text(_read(file, self.stdin or sys.stdin))
        self.say(f"{file}: valid")

    def handle_list(self, address, **options):
        rows = SieveScript.objects.filter(account=_account(address)).order_by("name")
        for script in rows:
            self.stdout.write(f"{script.name}{'  (active)' if script.active else ''}")

    def handle_show(self, address, name, **options):
        account = _account(address)
        script = actions.get_script(account, name) if name else actions.active_script(account)
        if script is None:
            raise CommandError(f"{address} has no active script")
        self.stdout.write(script.text, ending="" if script.text.endswith("\n") else "\n")

    def handle_put(self, address, name, file, activate, **options):
        account = _account(address)
        actions.put_script(account, name, _read(file, self.stdin), activate=activate)
        self.say(f"{address}: script {name} stored{' and active' if activate else ''}")

    def handle_activate(self, address, name, **options):
        actions.set_active(_account(address), name)
        self.say(f"{address}: script {name} is active")

    def handle_deactivate(self, address, **options):
        actions.set_active(_account(address), "")
        self.say(f"{address}: no active script")

    def handle_delete(self, address, name, **options):
        actions.delete_script(_account(address), name)
        self.say(f"{address}: script {name} deleted")

    def handle_global(self, operation, name, file, position, **options):
        if operation == "list":
            for script in GlobalScript.objects.order_by("name"):
                self.stdout.write(f"{script.name}  ({script.position or 'include'})")
            return
        if not name:
            raise CommandError(f"global {operation} needs a script name")
        if operation == "show":
            script = GlobalScript.objects.filter(name=name).first()
            if script is None:
                raise CommandError(f"there is no global script {name}")
            self.stdout.write(script.text, ending="" if script.text.endswith("\n") else "\n")
        elif operation == "delete":
            actions.delete_global_script(name)
            self.say(f"global script {name} deleted")
        else:
            if not file:
                raise CommandError("global set needs a script file ('-' for standard input)")
            actions.set_global_script(name, _read(file, self.stdin), position="" if position == "include" else position)
            self.say(f"global script {name} stored ({position})")
