"""manage.py relay smarthost|domain|transport|list|remove: where outbound mail goes.

- `relay smarthost HOST:PORT` sends all mail for other domains through one server
  (with `--user U --password-stdin` for AUTH); without HOST:PORT it shows the smart
  host; `--clear` goes back to MX delivery. MAILSUITE_RELAYHOST is the fallback when
  none is set here.
- `relay domain add DOMAIN NEXTHOP:PORT` accepts mail for DOMAIN from anyone and passes
  it on (a server behind us, or the primary when we are backup MX), optionally only for
  recipients the next hop confirms (`--verify callout`) or listed in a file (`--verify
  list --recipients-file F`).
- `relay transport add DOMAIN NEXTHOP:PORT` sends mail for DOMAIN to that host instead
  of its MX hosts.
Changes go through mta.actions; passwords are never printed.
"""
from django.conf import settings
from django.core.management.base import CommandError

from accounts.management.cli import SubcommandCommand, read_password, show_domain
from mta import actions
from mta.models import SmartHost

PASSWORD_STDIN_HELP = "read the AUTH password from the first line of standard input"


def _route_options(parser, *, replace=True):
    parser.add_argument(
        "--tls", choices=SmartHost.TLS.values,
        help="starttls = STARTTLS required; implicit = TLS from the first byte; opportunistic = STARTTLS "
        "when offered; none. Default: implicit on port 465, starttls with --user, else opportunistic",
    )
    parser.add_argument(
        "--no-verify-certificate", dest="verify_certificate", action="store_false",
        help="accept any certificate from the next hop (e.g. a self-signed one on a private network)",
    )
    parser.add_argument("--user", default="", help="log in (SMTP AUTH) with this username")
    parser.add_argument("--password-stdin", action="store_true", help=PASSWORD_STDIN_HELP)
    if replace:
        parser.add_argument("--replace", action="store_true", help="replace the route DOMAIN already has")


class Command(SubcommandCommand):
    help = "Configure the smart host, relay domains and per-domain transports."
    takes_as = True
    superadmin_only = "see or change mail routes"

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)

        smarthost = subcommands.add_parser(
            "smarthost",
            help="show, set or clear the smart host all outbound mail goes through",
            description="With --user, the password is read with --password-stdin or at a terminal; "
            "without either, the stored password is kept if the username is unchanged.",
        )
        smarthost.add_argument("next_hop", nargs="?", metavar="HOST:PORT")
        _route_options(smarthost, replace=False)
        smarthost.add_argument("--clear", action="store_true", help="stop using a smart host")

        domain = subcommands.add_parser("domain", help="relay domains: mail we accept and pass on")
        domain_actions = domain.add_subparsers(dest="domain_action", metavar="ACTION", required=True)
        add = domain_actions.add_parser("add", help="accept mail for DOMAIN and pass it to NEXTHOP")
        add.add_argument("domain", metavar="DOMAIN")
        add.add_argument("next_hop", metavar="NEXTHOP:PORT")
        add.add_argument(
            "--verify", choices=SmartHost.Verify.values, default=SmartHost.Verify.NONE,
            help="recipients: none = accept all; callout = ask the next hop at RCPT time; list = only those listed",
        )
        add.add_argument("--recipients-file", metavar="FILE", help="with --verify list: one address a line; - = stdin")
        _route_options(add)

        transport = subcommands.add_parser("transport", help="per-domain transports: where a domain's mail goes")
        transport_actions = transport.add_subparsers(dest="transport_action", metavar="ACTION", required=True)
        add = transport_actions.add_parser("add", help="send mail for DOMAIN to NEXTHOP instead of its MX hosts")
        add.add_argument("domain", metavar="DOMAIN")
        add.add_argument("next_hop", metavar="NEXTHOP:PORT")
        _route_options(add)

        subcommands.add_parser("list", help="the smart host, relay domains and transports")

        remove = subcommands.add_parser("remove", help="forget a relay domain or transport")
        remove.add_argument("domain", metavar="DOMAIN")

    def _password(self, user, password_stdin):
        """The password to store, or None to keep the stored one (actions decide if that is allowed)."""
        if not user:
            if password_stdin:
                raise CommandError("--password-stdin needs --user")
            return None
        return read_password(self.stdin, from_stdin=password_stdin)

    def _route_arguments(self, options):
        return {
            "tls": options["tls"],
            "verify_certificate": options["verify_certificate"],
            "username": options["user"],
            "password": self._password(options["user"], options["password_stdin"]),
        }

    def handle_smarthost(self, *, next_hop, clear, **options):
        if clear:
            if next_hop is not None:
                raise CommandError("give HOST:PORT or --clear, not both")
            actions.clear_smarthost(acting_user=self.acting_user)
            fallback = settings.MAILSUITE_RELAYHOST
            self.say(f"cleared the smart host; mail goes to {fallback} (MAILSUITE_RELAYHOST)" if fallback
                     else "cleared the smart host; mail goes to MX hosts")
            return
        if next_hop is None:
            rows = [_route_row(route) for route in SmartHost.objects.filter(domain="")] or _environment_rows()
            if not rows:
                raise CommandError("no smart host is configured: mail goes to MX hosts")
            self.write_table(rows)
            return
        host, port = actions.parse_next_hop(next_hop)
        route = actions.set_smarthost(host, port, acting_user=self.acting_user, **self._route_arguments(options))
        self.say(f"smart host is {_describe(route)}")

    def handle_domain(self, *, domain_action, domain, next_hop, verify, recipients_file, replace, **options):
        host, port = actions.parse_next_hop(next_hop)
        route = actions.add_relay_domain(
            domain, host, port, verify_recipients=verify, recipients=self._read_recipients(recipients_file),
            replace=replace, acting_user=self.acting_user, **self._route_arguments(options),
        )
        self.say(f"relay domain {show_domain(route.domain)} → {_describe(route)}")

    def handle_transport(self, *, transport_action, domain, next_hop, replace, **options):
        host, port = actions.parse_next_hop(next_hop)
        route = actions.set_transport(domain, host, port, replace=replace, acting_user=self.acting_user,
                                      **self._route_arguments(options))
        self.say(f"transport for {show_domain(route.domain)} → {_describe(route)}")

    def handle_list(self, **options):
        routes = list(SmartHost.objects.order_by("domain"))
        rows = [_route_row(route) for route in routes]
        if not any(route.domain == "" for route in routes):
            rows = _environment_rows() + rows
        self.write_table(rows)

    def handle_remove(self, *, domain, **options):
        route = actions.get_route(domain)
        if route.domain == "":
            raise CommandError("to stop using the smart host: manage.py relay smarthost --clear")
        kind = actions.route_kind(route)
        actions.remove_route(domain, acting_user=self.acting_user)
        self.say(f"removed {'relay domain' if kind == 'relay' else 'transport'} {show_domain(route.domain)}")

    def _read_recipients(self, path):
        if path is None:
            return ()
        if path == "-":
            return self.stdin.read().splitlines()
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"--recipients-file: cannot read {path}: {error}") from None


def _describe(route):
    text = f"{actions.format_next_hop(route.host, route.port)} (TLS {route.tls}"
    if route.username:
        text += f", AUTH as {route.username}"
    return text + ")"


def _route_row(route):
    """One `relay list` line: domain, kind, next hop, TLS, certificate check, login, verification."""
    kind = actions.route_kind(route)
    if kind == "relay":
        verification = f"verify {route.verify_recipients}"
        if route.verify_recipients == SmartHost.Verify.LIST:
            count = len(route.recipients.splitlines())
            verification += f" ({count} recipient{'' if count == 1 else 's'})"
    else:
        verification = ""
    return [
        show_domain(route.domain) if route.domain else "*",
        kind,
        actions.format_next_hop(route.host, route.port),
        f"tls {route.tls}",
        "certificate checked" if route.verify_certificate else "certificate not checked",
        f"auth {route.username}" if route.username else "no auth",
        verification,
    ]


def _environment_rows():
    if not settings.MAILSUITE_RELAYHOST:
        return []
    return [["*", "smarthost", settings.MAILSUITE_RELAYHOST, "(MAILSUITE_RELAYHOST)", "", "", ""]]
