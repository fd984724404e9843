"""manage.py alias add|list|remove|set: addresses whose mail goes to other addresses."""
from accounts import actions
from accounts.management.cli import (
    SubcommandCommand,
    domain_filter,
    show_active,
    show_address_of,
    show_target,
    targets_argument,
)
from accounts.models import Alias

ADDRESS_HELP = "local@domain, or @domain for the domain's catch-all"
TARGETS_HELP = "addresses to deliver to, separated by commas (local ones must exist)"


class Command(SubcommandCommand):
    help = "Add, list, change and remove aliases (including @domain catch-alls)."
    takes_as = True

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        add = subcommands.add_parser("add", help="create an alias")
        add.add_argument("address", help=ADDRESS_HELP)
        add.add_argument("targets", nargs="+", metavar="TARGET[,TARGET...]", help=TARGETS_HELP)

        listing = subcommands.add_parser("list", help="list aliases and their targets")
        listing.add_argument("domain", nargs="?", help="only aliases of this domain")

        remove = subcommands.add_parser("remove", help="delete an alias")
        remove.add_argument("address", help=ADDRESS_HELP)

        replace = subcommands.add_parser("set", help="replace an alias's targets")
        replace.add_argument("address", help=ADDRESS_HELP)
        replace.add_argument("targets", nargs="+", metavar="TARGET[,TARGET...]", help=TARGETS_HELP)

    def handle_add(self, *, address, targets, **options):
        alias = actions.create_alias(address, targets_argument(targets), acting_user=self.acting_user)
        self.say(f"added alias {show_address_of(alias)} → {self._targets(alias)}")

    def handle_list(self, *, domain, **options):
        aliases = (
            self.visible(Alias.objects).select_related("domain")
            .prefetch_related("targets")
            .order_by("domain__name", "localpart")
        )
        if (only := domain_filter(domain, self.acting_user)) is not None:
            aliases = aliases.filter(domain=only)
        self.write_table(
            [show_address_of(alias), show_active(alias.active), self._targets(alias)] for alias in aliases
        )

    def handle_remove(self, *, address, **options):
        shown = show_address_of(actions.get_alias(address, acting_user=self.acting_user))
        actions.remove_alias(address, acting_user=self.acting_user)
        self.say(f"removed alias {shown}")

    def handle_set(self, *, address, targets, **options):
        alias = actions.set_alias_targets(address, targets_argument(targets), acting_user=self.acting_user)
        self.say(f"alias {show_address_of(alias)} → {self._targets(alias)}")

    @staticmethod
    def _targets(alias):
        return ",".join(show_target(target.address) for target in alias.targets.all())
