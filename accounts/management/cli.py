"""What the operator commands (domain, account, alias, redirect) share.

Each command is a set of subcommands (`manage.py account add …`). Every write goes
through accounts.actions; an AccountsError becomes a CommandError, so the process exits
non-zero with the action's one-line reason on stderr. Listings print one item per line
in aligned columns and nothing else, so scripts can read them.

`--as USER` (before or after the subcommand) acts as that user: a domain admin sees
and changes only their domains, exactly as in the admin and the API. Without it the
command acts as the system, which may do everything. Changes are audited "via cli".
Only the commands that honour it (`takes_as`) offer `--as`: the others refuse it with a
reason rather than accept and ignore it. The server-wide ones (queue, relay:
`superadmin_only`) refuse any other user.
"""
import argparse
import getpass as _getpass
import sys
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError

from accounts import actions
from accounts.errors import AccountsError
from mailsuite.lib.addresses import display_domain
from mailsuite.lib.sizes import SizeError, format_size, parse_size

# Seam for tests: how a password is read from the terminal without echo.
getpass = _getpass.getpass


class _RefuseAs(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("this command acts as the system and takes no --as")


class SubcommandCommand(BaseCommand):
    """A command whose first argument picks a `handle_<action>` method."""

    # call_command(…, stdin=io.StringIO(…)) feeds --password-stdin in tests.
    stealth_options = ("stdin",)
    # Django's system checks import every URLconf and view (over a second per invocation,
    # more than most of these commands take); `manage.py check`, migrate and the servers run them.
    requires_system_checks = []

    acting_user = None
    takes_as = False  # True where every subcommand acts as the --as user
    superadmin_only = None  # what the command does, where only a superadmin may act through it

    def add_subcommands(self, parser):
        # Where --as is not honoured it is refused with a reason (not hidden from argparse,
        # whose "invalid choice" for the USER after an unknown option would puzzle).
        as_option = {"help": AS_HELP} if self.takes_as else {"action": _RefuseAs, "help": argparse.SUPPRESS}
        parser.add_argument("--as", dest="acting_as", metavar="USER", **as_option)
        subcommands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        add_parser = subcommands.add_parser

        def add_parser_with_as(*args, **kwargs):
            sub = add_parser(*args, **kwargs)
            # SUPPRESS: when given before the subcommand, the subcommand does not reset it.
            sub.add_argument("--as", dest="acting_as", metavar="USER", default=argparse.SUPPRESS, **as_option)
            return sub

        subcommands.add_parser = add_parser_with_as
        return subcommands

    def handle(self, *args, action, **options):
        self.stdin = options.get("stdin") or sys.stdin
        self.verbosity = options["verbosity"]
        handler = getattr(self, "handle_" + action.replace("-", "_"))
        with accounts_errors(), actions.channel("cli"):
            self.acting_user = acting_user(options.get("acting_as"))
            if self.superadmin_only:
                actions.require_superadmin(self.acting_user, self.superadmin_only)
            handler(**options)

    def visible(self, queryset):
        """`queryset` narrowed to what the acting user may see."""
        return queryset.visible_to(self.acting_user)

    def say(self, message):
        """A success message; `-v 0` (before the action) keeps scripts' output clean."""
        if self.verbosity > 0:
            self.stdout.write(message)

    def write_table(self, rows):
        for line in table_lines(rows):
            self.stdout.write(line)

    def warn(self, message):
        self.stderr.write(self.style.WARNING(f"warning: {message}"))


AS_HELP = "act as this user: a domain admin sees and changes only their domains (default: the system)"


def acting_user(username):
    """The User named by --as, or None (the system)."""
    if not username:
        return None
    from django.contrib.auth import get_user_model

    model = get_user_model()
    user = model.objects.filter(**{model.USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise CommandError(f"--as: there is no active user {username}")
    return user


@contextmanager
def accounts_errors():
    """Turn an action's refusal into a CommandError carrying its one-line message."""
    try:
        yield
    except AccountsError as error:
        raise CommandError(str(error)) from None


def quota_argument(text):
    try:
        return parse_size(text)
    except SizeError as error:
        raise CommandError(f"invalid quota: {error}") from None


def targets_argument(values):
    """`a@x,b@y` and `a@x b@y` (or a mix) as one list of addresses."""
    targets = (target.strip() for value in values for target in value.split(","))
    return [target for target in targets if target]


def domain_filter(name, acting_user=None):
    """The Domain a `list [DOMAIN]` subcommand is limited to, or None for all."""
    if name is None:
        return None
    with accounts_errors():
        return actions.get_domain(name, acting_user=acting_user)


def show_domain(ascii_name):
    """`bücher.example (xn--bcher-kva.example)`; a plain ASCII name as is."""
    unicode_name = display_domain(ascii_name)
    return unicode_name if unicode_name == ascii_name else f"{unicode_name} ({ascii_name})"


def show_address(localpart, ascii_domain):
    """An address for people: Unicode domain; a catch-all as `@domain` (as it is typed)."""
    return f"{localpart}@{display_domain(ascii_domain)}"


def show_address_of(item):
    """The address of an Account, Alias or Redirect, for people."""
    return show_address(item.localpart, item.domain.name)


def show_target(address):
    localpart, _, domain = address.rpartition("@")
    return show_address(localpart, domain)


def show_quota(size):
    return format_size(size) if size else "unlimited"


def show_active(active):
    return "active" if active else "disabled"


def table_lines(rows):
    """Rows of strings as lines, columns separated by at least two spaces."""
    rows = [[str(cell) for cell in row] for row in rows]
    if not rows:
        return []
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def read_password(stdin, *, from_stdin):
    """The new password: one line of stdin, or typed twice at a terminal.

    Returns None when there is neither (stdin is not a terminal and --password-stdin
    was not given); the caller decides whether that is allowed.
    """
    if from_stdin:
        line = stdin.readline()
        if not line:
            raise CommandError("--password-stdin: no password on standard input")
        return line.removesuffix("\n").removesuffix("\r")
    if not stdin.isatty():
        return None
    password = getpass("Password: ")
    if getpass("Password (again): ") != password:
        raise CommandError("passwords do not match")
    return password
