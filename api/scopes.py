"""Token scopes: `FAMILY:read` or `FAMILY:write` (write includes read), `*:read`, or `*`.

A session (the browser) carries every scope; what its user may see and change is still
bounded by delegated administration (accounts.actions).
"""
FAMILIES = {
    "domains": "domains and alias domains, their limits",
    "accounts": "accounts: create, password, quota, sending limits, usage",
    "aliases": "aliases and redirects",
    "sieve": "accounts' Sieve scripts",
    "external": "accounts' external POP3/IMAP accounts mail is fetched from (passwords write-only)",
    "spam": "spam thresholds and allow/block lists of domains and accounts",
    "relay": "smart host, transports and relay domains (superadmin)",
    "queue": "the outbound queue (superadmin)",
    "audit": "login events and the audit log (read-only)",
    "stats": "statistics and the dashboard (read-only; the dashboard for superadmins)",
}
LEVELS = ("read", "write")


class ScopeError(ValueError):
    pass


def parse(text):
    """A scope as typed, checked and normalised; ScopeError otherwise."""
    scope = text.strip().lower()
    if scope == "*":
        return scope
    family, _, level = scope.partition(":")
    if level not in LEVELS or (family != "*" and family not in FAMILIES):
        raise ScopeError(
            f"unknown scope {text!r}: use FAMILY:read or FAMILY:write (FAMILY one of "
            f"{', '.join(FAMILIES)}, or *), or * for everything"
        )
    return f"{family}:{level}"


def allows(scopes, family, level):
    """Whether a token with `scopes` may `level` (read/write) the `family`."""
    wanted = {f"{family}:write", "*:write", "*"}
    if level == "read":
        wanted |= {f"{family}:read", "*:read"}
    return bool(wanted & set(scopes))
