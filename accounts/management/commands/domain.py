"""manage.py domain add|list|remove|alias|unalias|disable|enable: the domains we receive mail for."""
from django.conf import settings
from django.db.models import Count

from accounts import actions
from accounts.management.cli import (
    SubcommandCommand,
    quota_argument,
    show_active,
    show_domain,
    show_quota,
)
from accounts.models import Domain, DomainAlias
from mailsuite.lib.addresses import normalize_domain


class Command(SubcommandCommand):
    help = "Add, list, remove, alias and disable mail domains."

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        add = subcommands.add_parser("add", help="serve a new domain")
        add.add_argument("name", help="domain name; Unicode (IDN) names are stored in their xn-- form")
        add.add_argument(
            "--quota", help="quota for its new accounts, e.g. 500M or 2G (default: the server's)"
        )

        subcommands.add_parser("list", help="list domains and alias domains")

        remove = subcommands.add_parser("remove", help="stop serving a domain")
        remove.add_argument("name")
        remove.add_argument(
            "--force", action="store_true", help="also remove its accounts and all their mail"
        )

        alias = subcommands.add_parser("alias", help="make NAME an alias domain of TARGET")
        alias.add_argument("name")
        alias.add_argument("target", help="an existing domain")

        unalias = subcommands.add_parser("unalias", help="remove the alias domain NAME")
        unalias.add_argument("name")

        for action, text in (("disable", "refuse mail for"), ("enable", "accept mail again for")):
            sub = subcommands.add_parser(action, help=f"{text} every address of a domain")
            sub.add_argument("name")

    def handle_add(self, *, name, quota, **options):
        default_quota = quota_argument(quota) if quota is not None else 0
        domain = actions.create_domain(name, default_quota=default_quota)
        self.say(f"added domain {show_domain(domain.name)}")

    def handle_list(self, **options):
        server_default = settings.MAILSUITE_DEFAULT_QUOTA
        rows = []
        for domain in Domain.objects.annotate(account_count=Count("accounts")).order_by("name"):
            count = domain.account_count
            rows.append([
                show_domain(domain.name),
                f"{count} account{'' if count == 1 else 's'}",
                f"quota {show_quota(domain.default_quota or server_default)}",
                show_active(domain.active),
            ])
        for alias in DomainAlias.objects.select_related("target").order_by("name"):
            rows.append([
                show_domain(alias.name),
                f"alias of {show_domain(alias.target.name)}",
                "",
                show_active(alias.active),
            ])
        self.write_table(rows)

    def handle_remove(self, *, name, force, **options):
        actions.remove_domain(name, force=force)
        self.say(f"removed domain {show_domain(normalize_domain(name))}")

    def handle_alias(self, *, name, target, **options):
        alias = actions.create_domain_alias(name, target)
        self.say(f"added alias domain {show_domain(alias.name)} → {show_domain(alias.target.name)}")

    def handle_unalias(self, *, name, **options):
        actions.remove_domain_alias(name)
        self.say(f"removed alias domain {show_domain(normalize_domain(name))}")

    def handle_disable(self, *, name, **options):
        domain = actions.set_domain_active(name, False)
        self.say(f"disabled domain {show_domain(domain.name)}")

    def handle_enable(self, *, name, **options):
        domain = actions.set_domain_active(name, True)
        self.say(f"enabled domain {show_domain(domain.name)}")
