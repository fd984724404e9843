"""The one authenticate() every protocol and the webmail call, and its pieces.

Implementation notes:
- Order of a password login: the throttle check (one query; a blocked IP or address
  is refused before any lookup or password check), the account lookup, the password
  check, then one transaction that writes the audit event and updates the throttle
  and last_login. Mechanisms that never see the password (SCRAM) run the same pieces:
  check_login_allowed(), scram_credentials_for(), then record_login().
- Unknown, disabled and password-less accounts cost the same password hashing as a
  real check, so the time taken does not tell them apart.
- Neither passwords nor hashes nor SCRAM credentials are ever logged or stored in the
  audit; the address is logged with repr() so control characters stay visible.
- A password verified once is remembered for MAILSUITE_AUTH_CACHE_SECONDS as an HMAC
  under a per-process random key, tied to the stored hash: clients that log in again
  and again (IMAP and POP3 pollers) skip the deliberately slow hash, and a password
  change or a wrong password is never served from it. Throttling and the audit apply
  to every login all the same.
"""
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import connection

from accounts import throttle
from accounts.errors import LoginThrottled
from accounts.models import Account, LoginEvent, LoginThrottle
from accounts.resolve import local_domain
from mailsuite.db.durability import lazy_commit
from mailsuite.lib.addresses import AddressError, split_address
from mailsuite.lib import sasl
from mailsuite.lib.sasl import make_scram_credentials, parse_scram_credentials
from ops import metrics

log = logging.getLogger(__name__)
# Verified against when the account does not exist, so unknown and known users
# take the same time to refuse.
_DUMMY_HASH = None

OK, WRONG_PASSWORD, UNKNOWN, DISABLED, THROTTLED = "ok", "password", "unknown", "disabled", "throttled"


_CACHE_KEY = secrets.token_bytes(32)
_verified = OrderedDict()  # account pk -> (stored hash, HMAC of the password, expiry)
_verified_lock = threading.Lock()
MAX_VERIFIED = 10_000


def _password_digest(password):
    return hmac.new(_CACHE_KEY, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def _recently_verified(account, password):
    with _verified_lock:
        entry = _verified.get(account.pk)
    if entry is None:
        return False
    stored_hash, digest, expires = entry
    return (
        stored_hash == account.password
        and time.monotonic() < expires
        and hmac.compare_digest(digest, _password_digest(password))
    )


def _remember_verified(account, password):
    ttl = settings.MAILSUITE_AUTH_CACHE_SECONDS
    if not ttl:
        return
    with _verified_lock:
        _verified[account.pk] = (account.password, _password_digest(password), time.monotonic() + ttl)
        _verified.move_to_end(account.pk)
        while len(_verified) > MAX_VERIFIED:
            _verified.popitem(last=False)


def _burn_time(password):
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = make_password("mailsuite-dummy-password")
    check_password(password, _DUMMY_HASH)


def find_account(address):
    """The Account for `address` (following domain aliases), active or not, with .domain set; or None."""
    try:
        localpart, domain_name = split_address(str(address))
    except AddressError:
        return None
    domain = local_domain(domain_name)
    if domain is None:
        return None
    account = Account.objects.filter(domain=domain, localpart=localpart).order_by().first()
    if account is not None:
        account.domain = domain
    return account


def _may_log_in(account):
    return account is not None and account.active and account.domain.active and bool(account.password)


def _refusal_reason(account):
    return UNKNOWN if account is None else DISABLED


def login_account(address):
    """The Account `address` may log in as (active, in an active domain, with a password), or None."""
    account = find_account(address)
    return account if _may_log_in(account) else None


def scram_credentials_for(address):
    """The stored SCRAM-SHA-256 credentials of the account `address` may log in as, or None.

    None for unknown, disabled or password-less accounts, and for accounts whose
    password was set before SCRAM credentials were stored (a password login fills them in).
    """
    account = login_account(address)
    if account is None or not account.scram_sha256:
        return None
    try:
        return parse_scram_credentials(account.scram_sha256)
    except ValueError:
        log.error("unreadable SCRAM credentials account=%s", account.address)
        return None


def check_login_allowed(address, remote_ip, *, service=None):
    """Raise LoginThrottled if the IP or the address is blocked now; else return the
    throttle kinds that have counted failures (see throttle.check).

    With `service`, a refused attempt is also written to the login audit (authenticate()
    does this; a SASL mechanism should pass its service too).
    """
    try:
        return throttle.check(address, remote_ip)
    except LoginThrottled as refusal:
        log.info(
            "login refused service=%s ip=%s user=%r reason=throttled scope=%s retry_after=%s",
            service, remote_ip, str(address)[:LoginEvent.MAX_ADDRESS], refusal.scope, refusal.retry_after,
        )
        if service is not None:
            _record(address, service=service, remote_ip=remote_ip, account=find_account(address), reason=THROTTLED)
        raise


def record_login(address, *, service, remote_ip, success, account=None, reason=None):
    """Write a login attempt to the audit and count it for throttling.

    A failure counts against the IP and the address; a success clears the address's
    count and sets the account's last_login. Without `account`, it is looked up (so
    failures for real accounts show on their page). `reason` defaults from the outcome:
    "ok", "unknown", "disabled" or "password" ("throttled" attempts are not counted).
    """
    if account is None:
        account = find_account(address)
    if reason is None:
        if success:
            reason = OK
        elif not _may_log_in(account):
            reason = _refusal_reason(account)
        else:
            reason = WRONG_PASSWORD
    _record(address, service=service, remote_ip=remote_ip, account=account, reason=reason)


def _success_statements(account, typed, *, service, ip, at):
    """The SQL a successful login writes (its audit row, last_login), built before the
    transaction: compiled inside it, the queries held the database's write lock (which
    every writer shares on SQLite) several times as long as running them takes."""
    ops = connection.ops
    event_columns = ", ".join(LoginEvent._meta.get_field(name).column for name in _EVENT_FIELDS)
    return [
        (
            f"INSERT INTO {LoginEvent._meta.db_table} ({event_columns}) VALUES ({', '.join(['%s'] * len(_EVENT_FIELDS))})",
            [account.pk, typed, str(service)[:16], ops.adapt_ipaddressfield_value(str(ip) if ip is not None else None),
             True, OK, ops.adapt_datetimefield_value(at)],
        ),
        (
            f"UPDATE {Account._meta.db_table} SET last_login = %s WHERE {Account._meta.pk.column} = %s",
            [ops.adapt_datetimefield_value(at), account.pk],
        ),
    ]


_EVENT_FIELDS = ("account", "address", "service", "remote_ip", "success", "reason", "time")


@lazy_commit  # an audit row, not mail: a power cut may cost the last few
def _store_success(statements, address, *, clear_failures):
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
    if clear_failures:
        throttle.record_success(address)


@lazy_commit  # an audit row and counters, not mail: a power cut may cost the last few
def _store_login(address, typed, *, service, remote_ip, ip, account, reason, at):
    """The login audit row and the throttle's counters; returns what became blocked."""
    LoginEvent.objects.create(
        account=account,
        address=typed,
        service=str(service)[:16],
        remote_ip=str(ip) if ip is not None else None,
        success=reason == OK,
        reason=reason,
        time=at,
    )
    if reason == OK:  # an address with no account (record_login's caller vouched for it)
        throttle.record_success(address)
        return []
    if reason != THROTTLED:
        return throttle.record_failure(address, remote_ip, at=at)
    return []


def _record(address, *, service, remote_ip, account, reason, counted=None):
    """Write the attempt to the audit and the throttle. `counted`: the throttle kinds
    check_login_allowed() found rows for (None: unknown, so a success clears anyway)."""
    at = throttle.now()
    ip = throttle.parse_ip(remote_ip)
    typed = str(address)[: LoginEvent.MAX_ADDRESS]
    if reason == OK and account is not None:
        account.last_login = at
        _store_success(
            _success_statements(account, typed, service=service, ip=ip, at=at), address,
            clear_failures=counted is None or LoginThrottle.ACCOUNT in counted,
        )
        newly_blocked = []
    else:
        newly_blocked = _store_login(
            address, typed, service=service, remote_ip=remote_ip, ip=ip, account=account, reason=reason, at=at,
        )
    if reason == OK:
        log.info("login ok service=%s ip=%s user=%s", service, remote_ip, account.address if account else typed)
    elif reason != THROTTLED:
        log.info("login failed service=%s ip=%s user=%r reason=%s", service, remote_ip, typed, reason)
        metrics.auth_failure(service, reason)
    for kind, key in newly_blocked:
        log.warning("login blocked %s=%s after repeated failures service=%s", kind, key, service)


def authenticate(address, password, *, service, remote_ip):
    """Return the active Account for address+password, or None.

    Raises LoginThrottled, before looking at the password, while the IP or the
    address is blocked. `service` (smtp, imap, pop3, web, ...) and `remote_ip` go to
    the login audit and the throttle; neither the password nor its hash is logged.
    """
    counted = check_login_allowed(address, remote_ip, service=service)
    account = find_account(address)
    if not _may_log_in(account):
        _burn_time(password)
        _record(address, service=service, remote_ip=remote_ip, account=account, reason=_refusal_reason(account))
        return None

    def upgrade_hash(raw):
        account.password = make_password(raw)
        Account.objects.filter(pk=account.pk).update(password=account.password)

    if not _recently_verified(account, password):
        if not check_password(password, account.password, setter=upgrade_hash):
            _record(address, service=service, remote_ip=remote_ip, account=account, reason=WRONG_PASSWORD)
            return None
        _remember_verified(account, password)
    if not account.scram_sha256:
        _store_scram_credentials(account, password)
    _record(address, service=service, remote_ip=remote_ip, account=account, reason=OK, counted=counted)
    return account


def _store_scram_credentials(account, password):
    """Fill in SCRAM credentials for a password set before they were stored."""
    try:
        account.scram_sha256 = make_scram_credentials(password)
    except ValueError:  # a password SCRAM cannot take (lone surrogates): PLAIN only
        return
    Account.objects.filter(pk=account.pk, scram_sha256="").update(scram_sha256=account.scram_sha256)


class ScramExchange:
    """SCRAM-SHA-256 for one authentication (SMTP AUTH, IMAP AUTHENTICATE, POP3 AUTH):
    the throttle, the credential lookup and the login audit around the exchange of
    mailsuite.lib.sasl, with `service` naming the protocol in the audit."""

    def __init__(self, *, remote_ip, service):
        self.remote_ip = remote_ip
        self.service = service
        self.username = None
        # A secret that outlives restarts, so unknown users get the same made-up salt each time.
        fake_secret = hashlib.sha256(b"scram-fake-credentials" + settings.SECRET_KEY.encode()).digest()
        self.server = sasl.ScramSha256Server(self._lookup, fake_secret=fake_secret)

    def _lookup(self, username):
        self.username = username
        check_login_allowed(username, self.remote_ip, service=self.service)
        return scram_credentials_for(username)

    def step(self, message):
        """The next server message, or None when done; raises SaslError or LoginThrottled."""
        try:
            return self.server.step(message)
        except sasl.SaslError:
            if self.username is not None:
                record_login(self.username, service=self.service, remote_ip=self.remote_ip, success=False)
            raise

    def login(self):
        """After a successful exchange: record it and return the Account."""
        account = login_account(self.username)
        record_login(self.username, service=self.service, remote_ip=self.remote_ip, success=True, account=account)
        return account
