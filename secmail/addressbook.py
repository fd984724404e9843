"""The address book's side of secmail: which contacts have a usable certificate or key.

annotate() sets `secmail_kinds` on each contact — the kinds ("smime", "openpgp") of the
unexpired PeerKeys kept for its address (harvested from signed mail, Autocrypt, WKD or
imported) — in one query for the page, so the contacts page can say that encrypted mail
to them works; compose finds the same keys (secmail.outgoing.recipient_keys).
"""
from django.db.models import Q
from django.utils import timezone

from secmail.models import KINDS, PeerKey

LABELS = dict(KINDS)


def kinds_by_address(account, addresses):
    """{lower-case address: sorted kinds} for the addresses that have a usable key."""
    addresses = {a.lower() for a in addresses}
    if not addresses:
        return {}
    rows = (PeerKey.objects.filter(account=account, address__in=addresses)
            .filter(Q(not_after__isnull=True) | Q(not_after__gt=timezone.now()))
            .values_list("address", "kind").distinct())
    found = {}
    for address, kind in rows:
        found.setdefault(address, set()).add(kind)
    return {address: sorted(kinds) for address, kinds in found.items()}


def annotate(account, contacts):
    contacts = list(contacts)
    known = kinds_by_address(account, [c.key for c in contacts])
    for contact in contacts:
        contact.secmail_kinds = [(kind, LABELS[kind]) for kind in known.get(contact.key, [])]
    return contacts
