"""Which addresses an account may send as (envelope sender and From:).

Its own address (with any subaddress detail, in any alias domain of its domain), the
aliases that deliver to it, and the addresses an admin granted it (SendAsGrant, exactly
as granted). A catch-all does not count: receiving mail for unknown@ is no licence to
send as anybody@.
"""
from accounts.errors import AccountsError
from accounts.models import SendAsGrant
from accounts.resolve import resolve
from mailsuite.lib.addresses import AddressError, normalize_address


def may_send_as(account, address):
    return _delivers_to(account, address) or _granted(account, address)


def _delivers_to(account, address):
    try:
        resolution = resolve(address)
    except (AccountsError, AddressError):
        return False
    return account.pk in resolution.accounts and not resolution.via_catchall


def _granted(account, address):
    """One probe of the (account, address) unique index."""
    try:
        identity = normalize_address(address)
    except AddressError:
        return False
    return SendAsGrant.objects.filter(account_id=account.pk, address=identity).exists()
