"""Which addresses an account may send as (envelope sender and From:).

Its own address (with any subaddress detail, in any alias domain of its domain) and
the aliases that deliver to it. A catch-all does not count: receiving mail for
unknown@ is no licence to send as anybody@.
"""
from accounts.errors import AccountsError
from accounts.resolve import resolve
from mailsuite.lib.addresses import AddressError


def may_send_as(account, address):
    try:
        resolution = resolve(address)
    except (AccountsError, AddressError):
        return False
    return account.pk in resolution.accounts and not resolution.via_catchall
