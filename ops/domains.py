"""Which of our domains a request is about, from an address or from the Host it was sent to."""
from accounts.models import Domain, DomainAlias
from mailsuite.lib.addresses import AddressError, normalize_domain

# Clients ask these names of a domain: Thunderbird autoconfig.DOMAIN, Outlook
# autodiscover.DOMAIN, MTA-STS senders mta-sts.DOMAIN (RFC 8461 §3.3), OpenPGP clients
# openpgpkey.DOMAIN (WKD advanced method, draft-koch-openpgp-webkey-service §3.1).
SERVICE_LABELS = ("autoconfig", "autodiscover", "mta-sts", "openpgpkey")


def served(name):
    """[names] of the active domain `name` belongs to (the domain, then its active alias
    domains; `name` first), or [] when we do not serve it."""
    try:
        name = normalize_domain(name)
    except AddressError:
        return []
    domain = Domain.objects.filter(name=name, active=True).first()
    if domain is None:
        alias = DomainAlias.objects.select_related("target").filter(name=name, active=True).first()
        if alias is None or not alias.target.active:
            return []
        domain = alias.target
    aliases = DomainAlias.objects.filter(target=domain, active=True).order_by("name").values_list("name", flat=True)
    names = [domain.name, *aliases]
    return [name] + [other for other in names if other != name]


def of_address(address):
    """served() for the domain of `address`."""
    _, at, domain = (address or "").rpartition("@")
    return served(domain) if at else []


def of_host(host):
    """served() for a Host header value: the domain itself or a client service name under it."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # drop a port
    name = name.strip().rstrip(".").lower()
    first, _, rest = name.partition(".")
    if first in SERVICE_LABELS and (names := served(rest)):
        return names
    return served(name)
