"""manage.py account add|list|remove|passwd|quota|disable|enable|send-as|apop: mailboxes and their owners."""
from django.core.management.base import CommandError
from django.db import transaction

from accounts import actions
from accounts.management.cli import (
    SubcommandCommand,
    domain_filter,
    quota_argument,
    read_password,
    show_active,
    show_address_of,
    show_quota,
    show_target,
    targets_argument,
)
from accounts.models import Account
from mailsuite.lib.sizes import format_size

PASSWORD_STDIN_HELP = "read the password from the first line of standard input"


class Command(SubcommandCommand):
    help = "Add, list, remove and change mail accounts."
    takes_as = True

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        apop = subcommands.add_parser(
            "apop",
            help="turn POP3 APOP on (secret read from standard input) or off for an account",
            description="APOP needs a secret the server can read back, so it is a separate secret, "
            "stored encrypted with a key derived from SECRET_KEY, and never the account's password. "
            "'on' reads it from the first line of standard input.",
        )
        apop.add_argument("address")
        apop.add_argument("state", choices=["on", "off"])

        add = subcommands.add_parser(
            "add",
            help="create a mailbox",
            description="Without --password-stdin you are asked for the password at a terminal; "
            "with neither, the account is created without one and cannot log in.",
        )
        add.add_argument("address", help="local@domain, in a domain this server serves")
        add.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)
        add.add_argument("--quota", help="e.g. 500M or 2G; 0 = unlimited (default: the domain's)")
        add.add_argument("--name", default="", help="display name")

        listing = subcommands.add_parser("list", help="list accounts with quota and usage")
        listing.add_argument("domain", nargs="?", help="only accounts of this domain")

        remove = subcommands.add_parser("remove", help="delete an account and all its mail")
        remove.add_argument("address")

        passwd = subcommands.add_parser("passwd", help="set an account's password")
        passwd.add_argument("address")
        passwd.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)

        quota = subcommands.add_parser("quota", help="set an account's quota")
        quota.add_argument("address")
        quota.add_argument("size", help="e.g. 500M or 2G; 0 = unlimited")

        for action, text in (("disable", "refuse mail and logins for"), ("enable", "re-enable")):
            sub = subcommands.add_parser(action, help=f"{text} an account")
            sub.add_argument("address")

        send_as = subcommands.add_parser(
            "send-as",
            help="list or change the addresses an account may also send as",
            description="Without --add or --remove, lists the addresses granted to the account, one a line. "
            "An account may always send as its own address and the aliases that deliver to it; "
            "these are the others. All changes are made together, or none is.",
        )
        send_as.add_argument("address")
        send_as.add_argument(
            "--add", action="append", default=[], metavar="IDENTITY",
            help="let the account send as this address, in any domain (repeatable)",
        )
        send_as.add_argument(
            "--remove", action="append", default=[], metavar="IDENTITY",
            help="take back a granted address (repeatable; done before the additions)",
        )

    def handle_apop(self, *, address, state, **options):
        if state == "off":
            account = actions.clear_apop_secret(address, acting_user=self.acting_user)
            self.say(f"APOP turned off for {show_address_of(account)}")
            return
        actions.get_account(address, acting_user=self.acting_user)  # an unknown address fails before anyone types a secret
        line = self.stdin.readline()
        if not line:
            raise CommandError("no APOP secret on standard input")
        account = actions.set_apop_secret(address, line.removesuffix("\n").removesuffix("\r"), acting_user=self.acting_user)
        self.say(f"APOP turned on for {show_address_of(account)}")

    def handle_add(self, *, address, password_stdin, quota, name, **options):
        quota = quota_argument(quota) if quota is not None else None
        password = read_password(self.stdin, from_stdin=password_stdin)
        account = actions.create_account(
            address, password=password, quota=quota, display_name=name, acting_user=self.acting_user
        )
        shown = show_address_of(account)
        self.say(f"added account {shown} (quota {show_quota(account.quota)})")
        if password is None:
            self.warn(
                f"{shown} has no password and cannot log in; "
                f"set one with: manage.py account passwd {shown}"
            )

    def handle_list(self, *, domain, **options):
        accounts = self.visible(Account.objects).select_related("domain").order_by("domain__name", "localpart")
        if (only := domain_filter(domain, self.acting_user)) is not None:
            accounts = accounts.filter(domain=only)
        self.write_table(
            [
                show_address_of(account),
                show_quota(account.quota),
                f"{format_size(account.quota_used)} used",
                show_active(account.active),
                account.display_name,
            ]
            for account in accounts
        )

    def handle_remove(self, *, address, **options):
        account = actions.get_account(address, acting_user=self.acting_user)
        actions.remove_account(address, acting_user=self.acting_user)
        self.say(f"removed account {show_address_of(account)} and its mail")

    def handle_passwd(self, *, address, password_stdin, **options):
        actions.get_account(address, acting_user=self.acting_user)  # an unknown address fails before anyone types a password
        password = read_password(self.stdin, from_stdin=password_stdin)
        if password is None:
            raise CommandError("standard input is not a terminal; pass the password with --password-stdin")
        account = actions.set_password(address, password, acting_user=self.acting_user)
        self.say(f"password changed for {show_address_of(account)}")

    def handle_quota(self, *, address, size, **options):
        account = actions.set_quota(address, quota_argument(size), acting_user=self.acting_user)
        self.say(
            f"quota of {show_address_of(account)} is now "
            f"{show_quota(account.quota)} ({format_size(account.quota_used)} used)"
        )

    def handle_disable(self, *, address, **options):
        account = actions.set_account_active(address, False, acting_user=self.acting_user)
        self.say(f"disabled account {show_address_of(account)}")

    def handle_enable(self, *, address, **options):
        account = actions.set_account_active(address, True, acting_user=self.acting_user)
        self.say(f"enabled account {show_address_of(account)}")

    def handle_send_as(self, *, address, add, remove, **options):
        account = actions.get_account(address, acting_user=self.acting_user)
        shown = show_address_of(account)
        if not add and not remove:
            self.write_table([show_target(identity)] for identity in actions.send_as_identities(account))
            return
        with transaction.atomic():
            removed = [actions.revoke_send_as(address, identity, acting_user=self.acting_user) for identity in targets_argument(remove)]
            added = [actions.grant_send_as(address, identity, acting_user=self.acting_user).address for identity in targets_argument(add)]
        for identity in removed:
            self.say(f"{shown} may no longer send as {show_target(identity)}")
        for identity in added:
            self.say(f"{shown} may now send as {show_target(identity)}")
