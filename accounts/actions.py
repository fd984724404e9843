"""Every change to domains, accounts, aliases and redirects goes through here.

The CLI, admin, API, webmail and tests call these functions; each one is atomic and
raises an accounts.errors exception with a one-line reason on bad input.
"""
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts import throttle
from accounts.errors import AliasLoop, Conflict, InvalidInput, NotFound
from accounts.models import (
    Account,
    Alias,
    AliasTarget,
    Domain,
    DomainAlias,
    LoginEvent,
    LoginThrottle,
    Redirect,
    SendAsGrant,
    SendLimitAlert,
)
from accounts.resolve import Resolution, expand, local_domain
from mailsuite.lib.addresses import (
    AddressError,
    normalize_address,
    normalize_domain,
    normalize_localpart,
    split_address,
)
from mailsuite.lib import secrets
from mailsuite.lib.sasl import make_scram_credentials
from mailstore import actions as mailstore_actions
from mta import dkim


def _domain_name(name):
    try:
        return normalize_domain(name)
    except AddressError as error:
        raise InvalidInput(str(error)) from None


def _split(address, *, allow_catchall=False):
    """(localpart, Domain) for an address in one of our domains."""
    if allow_catchall and address.strip().startswith("@"):
        localpart, domain_name = "", _domain_name(address.strip()[1:])
    else:
        local, _, domain_part = address.strip().rpartition("@")
        if not local:
            raise InvalidInput(f"{address!r} is not an address of the form local@domain")
        try:
            localpart = normalize_localpart(local)
        except AddressError as error:
            raise InvalidInput(str(error)) from None
        domain_name = _domain_name(domain_part)
    domain = Domain.objects.filter(name=domain_name).first()
    if domain is None:
        if DomainAlias.objects.filter(name=domain_name).exists():
            raise InvalidInput(f"{domain_name} is an alias domain; use an address in its target domain")
        raise NotFound(f"domain {domain_name} does not exist (add it with: manage.py domain add {domain_name})")
    return localpart, domain


def _ensure_address_free(localpart, domain):
    address = f"{localpart or '*'}@{domain.name}"
    for model, kind in ((Account, "an account"), (Alias, "an alias"), (Redirect, "a redirect")):
        if model.objects.filter(domain=domain, localpart=localpart).exists():
            raise Conflict(f"{address} already exists as {kind}")


def _save_fields(instance, **values):
    for name, value in values.items():
        setattr(instance, name, value)
    instance.save(update_fields=list(values))
    return instance


def _password_fields(password, account=None):
    """The stored forms of a new password: the hash for password logins, the SCRAM credentials."""
    try:
        validate_password(password, user=account)
    except ValidationError as error:
        raise InvalidInput(" ".join(error.messages)) from None
    try:
        scram = make_scram_credentials(password)
    except ValueError as error:
        raise InvalidInput(f"the password cannot be used: {error}") from None
    return {"password": make_password(password), "scram_sha256": scram}


# Domains ----------------------------------------------------------------------------


@transaction.atomic
def create_domain(name, *, default_quota=0, active=True):
    name = _domain_name(name)
    if Domain.objects.filter(name=name).exists():
        raise Conflict(f"domain {name} already exists")
    if DomainAlias.objects.filter(name=name).exists():
        raise Conflict(f"{name} already exists as an alias domain")
    domain = Domain.objects.create(name=name, default_quota=default_quota, active=active)
    dkim.ensure_keys(domain)  # signing keys from the start; `domain dns` shows what to publish
    return domain


def get_domain(name):
    name = _domain_name(name)
    try:
        return Domain.objects.get(name=name)
    except Domain.DoesNotExist:
        raise NotFound(f"domain {name} does not exist") from None


@transaction.atomic
def remove_domain(name, *, force=False):
    """Remove a domain; with accounts in it only when force=True (their mail is deleted too)."""
    domain = get_domain(name)
    count = domain.accounts.count()
    if count and not force:
        raise Conflict(f"domain {domain.name} still has {count} account(s); remove them first or use --force")
    for account in domain.accounts.all():
        mailstore_actions.delete_account_mail(account)
    domain.accounts.all().delete()
    domain.delete()


@transaction.atomic
def set_domain_active(name, active):
    return _save_fields(get_domain(name), active=active)


@transaction.atomic
def set_domain_default_quota(name, quota):
    if quota < 0:
        raise InvalidInput("quota cannot be negative")
    return _save_fields(get_domain(name), default_quota=quota)


MAX_LIMIT = 2**31 - 1


def _send_limit(value, what):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number")
    if not 0 <= value <= MAX_LIMIT:
        raise InvalidInput(f"{what} must be between 0 (no limit) and {MAX_LIMIT}")
    return value


@transaction.atomic
def set_domain_send_limits(name, messages_per_hour=None, recipients_per_day=None):
    """Set both sending limits of the domain's accounts; None uses the server's, 0 is no limit."""
    return _save_fields(
        get_domain(name),
        messages_per_hour=_send_limit(messages_per_hour, "messages per hour"),
        recipients_per_day=_send_limit(recipients_per_day, "recipients per day"),
    )


@transaction.atomic
def create_domain_alias(name, target):
    name = _domain_name(name)
    target_domain = get_domain(target)
    if Domain.objects.filter(name=name).exists() or DomainAlias.objects.filter(name=name).exists():
        raise Conflict(f"domain {name} already exists")
    return DomainAlias.objects.create(name=name, target=target_domain)


@transaction.atomic
def remove_domain_alias(name):
    deleted, _ = DomainAlias.objects.filter(name=_domain_name(name)).delete()
    if not deleted:
        raise NotFound(f"alias domain {name} does not exist")


# Accounts ---------------------------------------------------------------------------


def get_account(address):
    localpart, domain = _split(address)
    account = Account.objects.filter(domain=domain, localpart=localpart).first()
    if account is None:
        raise NotFound(f"account {localpart}@{domain.name} does not exist")
    account.domain = domain
    return account


@transaction.atomic
def create_account(address, *, password=None, quota=None, display_name="", active=True):
    localpart, domain = _split(address)
    _ensure_address_free(localpart, domain)
    if quota is None:
        quota = domain.default_quota or settings.MAILSUITE_DEFAULT_QUOTA
    account = Account(
        domain=domain, localpart=localpart, quota=quota, display_name=display_name, active=active
    )
    if password is not None:
        for name, value in _password_fields(password, account).items():
            setattr(account, name, value)
    account.save()
    mailstore_actions.create_default_folders(account)
    return account


@transaction.atomic
def remove_account(address):
    account = get_account(address)
    mailstore_actions.delete_account_mail(account)
    account.delete()


@transaction.atomic
def set_password(address, password):
    account = get_account(address)
    return _save_fields(account, **_password_fields(password, account))


@transaction.atomic
def set_quota(address, quota):
    if quota < 0:
        raise InvalidInput("quota cannot be negative")
    return _save_fields(get_account(address), quota=quota)


@transaction.atomic
def set_send_limits(address, messages_per_hour=None, recipients_per_day=None):
    """Set both sending limits of the account; None uses the domain's, 0 is no limit."""
    return _save_fields(
        get_account(address),
        messages_per_hour=_send_limit(messages_per_hour, "messages per hour"),
        recipients_per_day=_send_limit(recipients_per_day, "recipients per day"),
    )


@transaction.atomic
def set_account_active(address, active):
    return _save_fields(get_account(address), active=active)


@transaction.atomic
def set_display_name(address, display_name):
    return _save_fields(get_account(address), display_name=display_name.strip())


# APOP (POP3, RFC 1939 §7) ------------------------------------------------------------

MAX_APOP_SECRET = 255


def _check_apop_secret(secret, account):
    if not secret:
        raise InvalidInput("the APOP secret is empty")
    if len(secret) > MAX_APOP_SECRET:
        raise InvalidInput(f"the APOP secret is longer than {MAX_APOP_SECRET} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in secret):
        raise InvalidInput("the APOP secret contains control characters")
    try:
        validate_password(secret, user=account)
    except ValidationError as error:
        raise InvalidInput(" ".join(error.messages)) from None
    # The secret is stored so the server can read it back; the password must never be.
    if account.check_password(secret):
        raise InvalidInput("the APOP secret must not be the account's password")


@transaction.atomic
def set_apop_secret(address, secret):
    """Turn APOP on for the account with `secret` (stored encrypted, see mailsuite.lib.secrets)."""
    account = get_account(address)
    _check_apop_secret(secret, account)
    return _save_fields(account, apop_secret=secrets.encrypt(secret))


@transaction.atomic
def clear_apop_secret(address):
    """Turn APOP off for the account and forget its secret."""
    return _save_fields(get_account(address), apop_secret="")


# Aliases and redirects --------------------------------------------------------------


def _normalize_target(target):
    try:
        return normalize_address(target)
    except AddressError as error:
        raise InvalidInput(f"target {error}") from None


def _check_alias_graph(alias):
    """Refuse an alias that loops back on itself or names a local address that does not exist."""
    probe = alias.localpart or " catch-all probe"  # a space: no real local part matches
    result = Resolution(address=f"{probe}@{alias.domain.name}")
    try:
        expand(probe, alias.domain, result, path=(), strict=True)
    except AliasLoop as error:
        raise AliasLoop(f"alias loop: {error}") from None
    targets = {t.address for t in alias.targets.all()}
    for address, reason in result.dropped:
        if reason == "unknown" and address in targets:
            raise InvalidInput(f"target {address} does not exist in a local domain")


@transaction.atomic
def create_alias(address, targets):
    """`address` may be `@domain` for the domain's catch-all."""
    localpart, domain = _split(address, allow_catchall=True)
    _ensure_address_free(localpart, domain)
    targets = list(dict.fromkeys(_normalize_target(t) for t in targets))
    if not targets:
        raise InvalidInput("an alias needs at least one target")
    alias = Alias.objects.create(domain=domain, localpart=localpart)
    AliasTarget.objects.bulk_create(AliasTarget(alias=alias, address=t) for t in targets)
    _check_alias_graph(alias)
    return alias


def get_alias(address):
    localpart, domain = _split(address, allow_catchall=True)
    alias = Alias.objects.filter(domain=domain, localpart=localpart).first()
    if alias is None:
        raise NotFound(f"alias {localpart or '*'}@{domain.name} does not exist")
    return alias


@transaction.atomic
def set_alias_targets(address, targets):
    alias = get_alias(address)
    targets = list(dict.fromkeys(_normalize_target(t) for t in targets))
    if not targets:
        raise InvalidInput("an alias needs at least one target")
    alias.targets.all().delete()
    AliasTarget.objects.bulk_create(AliasTarget(alias=alias, address=t) for t in targets)
    _check_alias_graph(alias)
    return alias


@transaction.atomic
def remove_alias(address):
    get_alias(address).delete()


@transaction.atomic
def create_redirect(address, target):
    localpart, domain = _split(address)
    _ensure_address_free(localpart, domain)
    target = _normalize_target(target)
    if local_domain(split_address(target)[1]) is not None:
        raise InvalidInput(f"{target} is in a local domain; use an alias for local targets")
    return Redirect.objects.create(domain=domain, localpart=localpart, target=target)


@transaction.atomic
def remove_redirect(address):
    localpart, domain = _split(address)
    deleted, _ = Redirect.objects.filter(domain=domain, localpart=localpart).delete()
    if not deleted:
        raise NotFound(f"redirect {localpart}@{domain.name} does not exist")


# Send-as grants: addresses an account may send as besides its own (accounts.identities)


def _normalize_identity(identity):
    local, _, domain = identity.strip().rpartition("@")
    if not local or not domain.strip(" ."):  # else "x@" would be refused as just "empty domain"
        raise InvalidInput(f"identity {identity!r} is not an address of the form local@domain")
    try:
        return normalize_address(identity)
    except AddressError as error:
        raise InvalidInput(f"identity {error}") from None


def send_as_identities(account):
    """The addresses `account` has been granted, in order."""
    return list(account.send_as_grants.values_list("address", flat=True))


@transaction.atomic
def grant_send_as(account_address, identity):
    """Let the account send as `identity` (any address, in any domain)."""
    account = get_account(account_address)
    identity = _normalize_identity(identity)
    try:
        with transaction.atomic():  # a savepoint: the outer transaction survives the refusal
            return SendAsGrant.objects.create(account=account, address=identity)
    except IntegrityError:
        raise Conflict(f"{account.address} may already send as {identity}") from None


@transaction.atomic
def revoke_send_as(account_address, identity):
    """Take back a grant; returns the identity, normalised."""
    account = get_account(account_address)
    identity = _normalize_identity(identity)
    deleted, _ = SendAsGrant.objects.filter(account=account, address=identity).delete()
    if not deleted:
        raise NotFound(f"{account.address} has no grant to send as {identity}")
    return identity


@transaction.atomic
def set_send_as(account_address, identities):
    """Replace the account's grants with `identities`; returns them, normalised, in order."""
    account = get_account(account_address)
    wanted = set(_normalize_identity(identity) for identity in identities)
    current = set(send_as_identities(account))
    if current - wanted:
        SendAsGrant.objects.filter(account=account, address__in=current - wanted).delete()
    # ignore_conflicts: a grant saved meanwhile by a concurrent request is the one wanted anyway.
    SendAsGrant.objects.bulk_create(
        (SendAsGrant(account=account, address=a) for a in sorted(wanted - current)), ignore_conflicts=True
    )
    return sorted(wanted)


# Login throttling, the login audit, sending alerts ----------------------------------


@transaction.atomic
def clear_login_blocks(ids):
    """Forget the failures and blocks of the LoginThrottle rows `ids`; returns how many went."""
    deleted, _ = LoginThrottle.objects.filter(pk__in=ids).delete()
    return deleted


@transaction.atomic
def unblock_login(*, address=None, remote_ip=None):
    """Forget the failures and block of an address and/or a client IP; returns how many rows went."""
    keys = []
    if address:
        keys.append((LoginThrottle.ACCOUNT, throttle.account_key(address)))
    if remote_ip:
        keys.append((LoginThrottle.IP, throttle.ip_key(remote_ip)))
    if not keys:
        raise InvalidInput("name an address or an IP address to unblock")
    deleted = 0
    for kind, key in keys:
        deleted += LoginThrottle.objects.filter(kind=kind, key=key).delete()[0]
    return deleted


PRUNE_BATCH = 10_000


def _delete_in_batches(queryset):
    """Delete the rows of `queryset` a batch per transaction, so no writer waits long."""
    total = 0
    while True:
        with transaction.atomic():
            batch = list(queryset.order_by().values_list("pk", flat=True)[:PRUNE_BATCH])
            if not batch:
                return total
            total += queryset.model.objects.filter(pk__in=batch).delete()[0]


def prune_login_events(*, days=None):
    """Delete login audit events older than `days` (MAILSUITE_LOGIN_EVENT_DAYS); returns how many."""
    days = settings.MAILSUITE_LOGIN_EVENT_DAYS if days is None else days
    return _delete_in_batches(LoginEvent.objects.filter(time__lt=throttle.now() - timedelta(days=days)))


def prune_login_throttle():
    """Delete throttle rows whose window has ended (they carry nothing); returns how many."""
    return _delete_in_batches(throttle.expired())


def prune_abuse_records():
    """The periodic clean-up of the login audit and throttle: {what: rows deleted}."""
    return {"login events": prune_login_events(), "login throttle rows": prune_login_throttle()}


@transaction.atomic
def acknowledge_send_limit_alerts(ids):
    """Mark the SendLimitAlert rows `ids` as seen; returns how many changed."""
    return SendLimitAlert.objects.filter(pk__in=ids, acknowledged=False).update(acknowledged=True)
