"""The one authenticate() every protocol and the webmail call."""
import logging

from django.contrib.auth.hashers import check_password, make_password
from django.utils import timezone

from accounts.models import Account
from accounts.resolve import local_domain
from mailsuite.lib.addresses import AddressError, split_address

log = logging.getLogger(__name__)
# Verified against when the account does not exist, so unknown and known users
# take the same time to refuse.
_DUMMY_HASH = None


def _burn_time(password):
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = make_password("mailsuite-dummy-password")
    check_password(password, _DUMMY_HASH)


def authenticate(address, password, *, service, remote_ip):
    """Return the active Account for address+password, or None.

    `service` (smtp, imap, pop3, web, ...) and `remote_ip` are for the login log and
    throttling; neither the password nor its hash is ever logged.
    """
    account = None
    try:
        localpart, domain_name = split_address(address)
        domain = local_domain(domain_name)
        if domain is not None and domain.active:
            account = Account.objects.filter(domain=domain, localpart=localpart, active=True).first()
    except AddressError:
        pass
    if account is None or not account.password:
        _burn_time(password)
        log.info("login failed service=%s ip=%s user=%r reason=unknown", service, remote_ip, address)
        return None

    def upgrade_hash(raw):
        account.password = make_password(raw)
        Account.objects.filter(pk=account.pk).update(password=account.password)

    if not check_password(password, account.password, setter=upgrade_hash):
        log.info("login failed service=%s ip=%s user=%r reason=password", service, remote_ip, address)
        return None
    account.last_login = timezone.now()
    Account.objects.filter(pk=account.pk).update(last_login=account.last_login)
    account.domain = domain
    log.info("login ok service=%s ip=%s user=%s", service, remote_ip, account.address)
    return account
