"""manage.py domain add|list|remove|alias|unalias|disable|enable|limits|admin-add|admin-remove|dns|check|dkim.

The domains we receive mail for. `limits NAME` shows or sets what its domain admins may
create; `admin-add NAME USER` appoints one (both superadmin only).

`dns NAME` prints the records to publish for a domain, one zone-file line each (`-v 0`
leaves out the comments); `check NAME` looks them up in DNS (ops.dnsdoctor) and exits
non-zero when one is missing or wrong; `dkim NAME` lists its DKIM keys, and with one option rotates,
activates, retires or removes them (mta.dkim).
"""
from django.conf import settings
from django.core.management.base import CommandError
from django.db.models import Count, Sum

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
from mailsuite.lib.sizes import format_size
from mta import dkim
from mta.dns_records import records_for


class Command(SubcommandCommand):
    help = "Add, list, remove, alias and disable mail domains."
    takes_as = True

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

        dns = subcommands.add_parser("dns", help="print the DNS records to publish for a domain, in zone-file form")
        dns.add_argument("name")
        dns.add_argument("--hostname", help="this server's public name for MX and SPF (default: MAILSUITE_HOSTNAME)")

        check = subcommands.add_parser(
            "check", help="check a domain's DNS records, and this server's reverse DNS and block listings"
        )
        check.add_argument("name")
        check.add_argument("--hostname", help="this server's public name (default: MAILSUITE_HOSTNAME)")

        limits = subcommands.add_parser(
            "limits",
            help="show or set what the domain's administrators may create (superadmin only)",
            description="Without an option, show the limits and what is in use. 'none' removes a limit. "
            "Aliases and redirects count together.",
        )
        limits.add_argument("name")
        limits.add_argument("--max-accounts", metavar="N|none")
        limits.add_argument("--max-aliases", metavar="N|none")
        limits.add_argument("--max-quota", metavar="SIZE|none", help="sum of all account quotas, e.g. 50G")

        grant = subcommands.add_parser("admin-add", help="let USER administer the domain (superadmin only)")
        grant.add_argument("name")
        grant.add_argument("user")
        revoke = subcommands.add_parser("admin-remove", help="stop USER administering the domain (superadmin only)")
        revoke.add_argument("name")
        revoke.add_argument("user")

        keys = subcommands.add_parser(
            "dkim",
            help="list a domain's DKIM keys, or change them",
            description="Without an option, list the keys. Selectors name a pair of keys (RSA and Ed25519): "
            "ms2026a and ms2026a-ed are one pair, and either name picks it.",
        )
        keys.add_argument("name")
        change = keys.add_mutually_exclusive_group()
        change.add_argument(
            "--rotate", action="store_true", help="make a new key pair, published in DNS but not signing yet"
        )
        change.add_argument(
            "--activate", metavar="SELECTOR", help="sign with this pair from now on (the pair signing now is retired)"
        )
        change.add_argument(
            "--retire", metavar="SELECTOR", help="stop signing with this pair; its DNS records stay listed"
        )
        change.add_argument(
            "--remove", metavar="SELECTOR", help="forget a retired pair, once its records are out of DNS"
        )

    def handle_add(self, *, name, quota, **options):
        default_quota = quota_argument(quota) if quota is not None else 0
        domain = actions.create_domain(name, default_quota=default_quota, acting_user=self.acting_user)
        self.say(f"added domain {show_domain(domain.name)}")

    def handle_list(self, **options):
        server_default = settings.MAILSUITE_DEFAULT_QUOTA
        rows = []
        for domain in self.visible(Domain.objects).annotate(account_count=Count("accounts")).order_by("name"):
            count = domain.account_count
            rows.append([
                show_domain(domain.name),
                f"{count} account{'' if count == 1 else 's'}",
                f"quota {show_quota(domain.default_quota or server_default)}",
                show_active(domain.active),
            ])
        for alias in self.visible(DomainAlias.objects).select_related("target").order_by("name"):
            rows.append([
                show_domain(alias.name),
                f"alias of {show_domain(alias.target.name)}",
                "",
                show_active(alias.active),
            ])
        self.write_table(rows)

    def handle_remove(self, *, name, force, **options):
        actions.remove_domain(name, force=force, acting_user=self.acting_user)
        self.say(f"removed domain {show_domain(normalize_domain(name))}")

    def handle_alias(self, *, name, target, **options):
        alias = actions.create_domain_alias(name, target, acting_user=self.acting_user)
        self.say(f"added alias domain {show_domain(alias.name)} → {show_domain(alias.target.name)}")

    def handle_unalias(self, *, name, **options):
        actions.remove_domain_alias(name, acting_user=self.acting_user)
        self.say(f"removed alias domain {show_domain(normalize_domain(name))}")

    def handle_disable(self, *, name, **options):
        domain = actions.set_domain_active(name, False, acting_user=self.acting_user)
        self.say(f"disabled domain {show_domain(domain.name)}")

    def handle_enable(self, *, name, **options):
        domain = actions.set_domain_active(name, True, acting_user=self.acting_user)
        self.say(f"enabled domain {show_domain(domain.name)}")

    def handle_limits(self, *, name, max_accounts, max_aliases, max_quota, **options):
        domain = actions.get_domain(name, acting_user=self.acting_user)
        wanted = {
            "max_accounts": _count_limit(max_accounts, domain.max_accounts),
            "max_aliases": _count_limit(max_aliases, domain.max_aliases),
            "max_quota_total": domain.max_quota_total if max_quota is None
            else None if max_quota == "none" else quota_argument(max_quota),
        }
        if any(value is not None for value in (max_accounts, max_aliases, max_quota)):
            domain = actions.set_domain_limits(name, **wanted, acting_user=self.acting_user)
        in_use = {
            "accounts": domain.accounts.count(),
            "aliases": domain.alias_set.count() + domain.redirects.count(),
            "quota": domain.accounts.aggregate(total=Sum("quota"))["total"] or 0,
        }
        self.write_table([
            ["accounts", _shown_limit(domain.max_accounts), f"{in_use['accounts']} in use"],
            ["aliases", _shown_limit(domain.max_aliases), f"{in_use['aliases']} in use"],
            ["quota", _shown_limit(domain.max_quota_total, format_size), f"{format_size(in_use['quota'])} handed out"],
        ])

    def handle_admin_add(self, *, name, user, **options):
        membership = actions.grant_domain_admin(user, name, acting_user=self.acting_user)
        self.say(f"{user} now administers {show_domain(membership.domain.name)}")

    def handle_admin_remove(self, *, name, user, **options):
        actions.revoke_domain_admin(user, name, acting_user=self.acting_user)
        self.say(f"{user} no longer administers {show_domain(normalize_domain(name))}")

    def handle_dns(self, *, name, hostname, **options):
        domain = actions.get_domain(name, acting_user=self.acting_user)
        records = records_for(
            domain, hostname=hostname or settings.MAILSUITE_HOSTNAME, relayhost=settings.MAILSUITE_RELAYHOST
        )
        for record in records:
            self.stdout.write(record.zone_line(comment=self.verbosity > 0))
        if not any(record.name.endswith(f"._domainkey.{domain.name}.") for record in records):
            self.warn(f"{domain.name} has no DKIM keys: make them with manage.py domain dkim {domain.name} --rotate")

    def handle_check(self, *, name, hostname, **options):
        from ops import dnsdoctor

        report = dnsdoctor.check(actions.get_domain(name, acting_user=self.acting_user), hostname=hostname)
        self.write_table(dnsdoctor.table_rows(report))
        if not report.ok:
            count = len(report.problems)
            raise CommandError(f"{count} problem{'' if count == 1 else 's'} in the DNS of {report.domain}")

    def handle_dkim(self, *, name, rotate, activate, retire, remove, **options):
        domain = actions.get_domain(name, acting_user=self.acting_user)
        shown = show_domain(domain.name)
        if rotate:
            keys = dkim.rotate(domain)
            self.say(
                f"made DKIM keys {_selectors(keys)} for {shown}, not signing yet: publish their records "
                f"(manage.py domain dns {domain.name}), then activate them with --activate {keys[0].selector}"
            )
        elif activate is not None:
            activated, retired = dkim.activate(domain, activate)
            message = f"{shown} signs with DKIM keys {_selectors(activated)} now"
            if retired:
                message += f"; retired {_selectors(retired)} (keep their DNS records a few days longer)"
            self.say(message)
        elif retire is not None:
            keys = dkim.retire(domain, retire)
            self.say(f"retired DKIM keys {_selectors(keys)} of {shown}; remove them with --remove once out of DNS")
            if not dkim.active_keys(domain):
                self.warn(f"{shown} has no active DKIM key: its mail goes out unsigned")
        elif remove is not None:
            selectors = dkim.remove(domain, remove)
            self.say(f"removed DKIM keys {', '.join(selectors)} of {shown}")
        else:
            keys = dkim.keys_of(domain)
            self.write_table(
                [[key.selector, key.algorithm, key.state, f"created {key.created:%Y-%m-%d}"] for key in keys]
            )
            if not keys:
                self.warn(f"{shown} has no DKIM keys: make them with --rotate")


def _count_limit(text, current):
    if text is None:
        return current
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a number or 'none'") from None


def _shown_limit(value, show=str):
    return "no limit" if value is None else f"at most {show(value)}"


def _selectors(keys):
    return ", ".join(key.selector for key in keys)
