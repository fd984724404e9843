"""manage.py redirect add|list|remove: addresses without a mailbox forwarded to another domain."""
from accounts import actions
from accounts.management.cli import (
    SubcommandCommand,
    domain_filter,
    show_active,
    show_address,
    show_address_of,
    show_target,
)
from accounts.models import Redirect
from mailsuite.lib.addresses import split_address


class Command(SubcommandCommand):
    help = "Add, list and remove redirects to external addresses."
    takes_as = True

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        add = subcommands.add_parser("add", help="forward an address to an external one")
        add.add_argument("address", help="local@domain, in a domain this server serves")
        add.add_argument("external", help="an address outside this server's domains")

        listing = subcommands.add_parser("list", help="list redirects")
        listing.add_argument("domain", nargs="?", help="only redirects of this domain")

        remove = subcommands.add_parser("remove", help="delete a redirect")
        remove.add_argument("address")

    def handle_add(self, *, address, external, **options):
        redirect = actions.create_redirect(address, external, acting_user=self.acting_user)
        self.say(f"added redirect {show_address_of(redirect)} → {show_target(redirect.target)}")

    def handle_list(self, *, domain, **options):
        redirects = self.visible(Redirect.objects).select_related("domain").order_by("domain__name", "localpart")
        if (only := domain_filter(domain, self.acting_user)) is not None:
            redirects = redirects.filter(domain=only)
        self.write_table(
            [show_address_of(redirect), show_active(redirect.active), show_target(redirect.target)]
            for redirect in redirects
        )

    def handle_remove(self, *, address, **options):
        actions.remove_redirect(address, acting_user=self.acting_user)
        self.say(f"removed redirect {show_address(*split_address(address))}")
