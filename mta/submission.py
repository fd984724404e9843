"""Policy for mail from authenticated users (submission, RFC 6409): logins, identities,
sending limits, and the fields a submission server completes.

Synchronous functions over the database; mta.smtpd runs them off the event loop.
"""
import email.utils
import logging
import uuid
from dataclasses import dataclass

from accounts.auth import authenticate
from accounts.errors import LoginThrottled, SendLimitExceeded
from accounts.identities import may_send_as
from accounts.limits import check_and_record_send
from accounts.models import Account
from mta import dkim
from mta.headers import field_values, has_field

log = logging.getLogger(__name__)

THROTTLED = "454 4.7.0 Too many failed logins; try again later"
INVALID = "535 5.7.8 Authentication credentials invalid"


@dataclass(frozen=True)
class Login:
    """Who a session authenticated as (kept in aiosmtpd's session.auth_data)."""

    account_id: int
    address: str


def password_login(username, password, *, remote_ip):
    """(Login or None, the failure reply or None) for PLAIN and LOGIN."""
    try:
        account = authenticate(username, password, service="smtp", remote_ip=remote_ip)
    except LoginThrottled:
        return None, THROTTLED
    if account is None:
        return None, INVALID
    return Login(account.pk, account.address), None


def scram_login(exchange):
    """The Login after a successful SCRAM exchange (accounts.auth.ScramExchange)."""
    account = exchange.login()
    return Login(account.pk, account.address)


def check_submission(raw, *, login, mail_from, recipient_count, hostname):
    """(the message as it will be stored, or None; the reply refusing it, or None).

    The From: addresses must be identities of the sender (as MAIL FROM was checked),
    and the account's sending limits must allow this many more recipients. An accepted
    message gets the Date:/Message-ID: it lacks and our DKIM signatures, once, so every
    retry sends the same bytes.
    """
    account = Account.objects.select_related("domain").get(pk=login.account_id)
    addresses = [address for _, address in email.utils.getaddresses(field_values(raw, "From")) if address]
    if not addresses:
        return None, "550 5.6.0 The message has no From: address"
    for address in addresses:
        if not may_send_as(account, address):
            return None, f"553 5.7.1 <{address}>: not an address you may send as"
    try:
        check_and_record_send(account, recipient_count)
    except SendLimitExceeded as error:
        log.warning("sending limit reached by %s: %s", login.address, error)
        return None, f"451 4.7.1 {error}"
    completed = complete(raw, hostname=hostname)
    from_domain = addresses[0].rpartition("@")[2]
    return dkim.sign(completed, mail_from=mail_from, from_domain=from_domain) + completed, None


def complete(raw, *, hostname):
    """Add Date: and Message-ID: when the client left them out (RFC 6409 §8.3, §8.2)."""
    added = b""
    if not has_field(raw, "Date"):
        added += f"Date: {email.utils.formatdate(localtime=False)}\r\n".encode()
    if not has_field(raw, "Message-ID"):
        added += f"Message-ID: <{uuid.uuid4().hex}@{hostname}>\r\n".encode()
    return added + raw
