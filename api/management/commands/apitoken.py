"""manage.py apitoken create|list|revoke: tokens for the REST API.

`create USER --scope accounts:write --scope queue:read --expires 30d` prints the token
once, on its own line (scripts read it from standard output); only its hash is kept.
"""
from django.core.management.base import CommandError

from accounts.management.cli import SubcommandCommand
from api import actions, scopes
from api.models import ApiToken


class Command(SubcommandCommand):
    help = "Create, list and revoke REST API tokens."
    takes_as = True

    def add_arguments(self, parser):
        subcommands = self.add_subcommands(parser)
        create = subcommands.add_parser(
            "create", help="make a token for a user and print it (shown only this once)",
            description="Scopes: FAMILY:read or FAMILY:write (write includes read), *:read, or *. Families: "
            + "; ".join(f"{name} ({text})" for name, text in scopes.FAMILIES.items()),
        )
        create.add_argument("user")
        create.add_argument("--scope", action="append", required=True, help="repeatable, or comma-separated")
        create.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h, 2w (default: never)")
        create.add_argument("--name", default="", help="what the token is for")

        listing = subcommands.add_parser("list", help="list tokens (never their secret)")
        listing.add_argument("user", nargs="?")

        revoke = subcommands.add_parser("revoke", help="delete a token at once")
        revoke.add_argument("prefix", help="the token's prefix, as `list` shows it, or the whole token")

    def handle_create(self, *, user, scope, expires, name, **options):
        wanted = [part for value in scope for part in value.split(",") if part.strip()]
        expires_in = actions.parse_duration(expires) if expires else None
        token, text = actions.create_token(user, wanted, expires_in=expires_in, name=name,
                                           acting_user=self.acting_user)
        self.stdout.write(text)
        expiry = f"expires {token.expires:%Y-%m-%d %H:%M} UTC" if token.expires else "never expires"
        self.stderr.write(f"token for {user} with {', '.join(token.scopes)}; {expiry}. It is not shown again.")

    def handle_list(self, *, user, **options):
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "-created")
        if self.acting_user is not None and not self.acting_user.is_superuser:
            tokens = tokens.filter(user=self.acting_user)
        if user:
            tokens = tokens.filter(user__username=user)
        self.write_table(
            [f"ms_{t.prefix}", t.user.get_username(), ",".join(t.scopes),
             f"expires {t.expires:%Y-%m-%d}" if t.expires else "no expiry",
             f"used {t.last_used:%Y-%m-%d}" if t.last_used else "never used", t.name]
            for t in tokens
        )

    def handle_revoke(self, *, prefix, **options):
        if not prefix.strip():
            raise CommandError("give a token prefix")
        actions.revoke_token(prefix.strip(), acting_user=self.acting_user)
        self.say("revoked the token")
