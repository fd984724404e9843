"""Every change to domains, accounts, aliases and redirects goes through here.

The CLI, admin, API, webmail and tests call these functions; each one is atomic and
raises an accounts.errors exception with a one-line reason on bad input.

Delegated administration (the rules live here, once):
- Every function takes `acting_user`: None is the system (the shell without --as, the
  server itself) and may do anything; a superuser likewise; any other user acts only in
  the domains a DomainAdmin row gives them (Domain.objects.visible_to). Another tenant's
  domain, account, alias or redirect is NotFound with the words used for one that does
  not exist, so its existence does not leak; things no domain admin may do at all
  (adding or removing domains, setting their limits, alias domains, login blocks) are
  Forbidden.
- A domain's limits (max_accounts, max_aliases counting aliases and redirects together,
  max_quota_total over its accounts' quotas) bind everyone, the superadmin included: they
  raise the limit rather than step over it. The domain row is locked while a limit is
  checked, so two concurrent creations cannot both take the last place. A limit lowered
  below what is in use refuses further growth and removes nothing.
- Every change writes an AuditEntry in the same transaction: who, through what (see
  channel()), the action, and the object's fields before and after, never a secret.
"""
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from accounts import throttle
from accounts.errors import AliasLoop, Conflict, Forbidden, InvalidInput, LimitExceeded, NotFound, UnknownAddress
from accounts.models import (
    Account,
    Alias,
    AliasTarget,
    AuditEntry,
    Domain,
    DomainAdmin,
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
from mailsuite.lib.sizes import format_size
from mailstore import actions as mailstore_actions
from mta import dkim

# Who acts, and through what ------------------------------------------------------------

_channel = ContextVar("audit_channel", default="")


@contextmanager
def channel(name):
    """Audit entries written inside say the change came through `name` (admin, api, cli, webmail)."""
    token = _channel.set(name)
    try:
        yield
    finally:
        _channel.reset(token)


def is_superadmin(user):
    """The system (None) or an active superuser: sees and may do everything."""
    return user is None or (user.is_active and user.is_superuser)


def require_superadmin(acting_user, what):
    if not is_superadmin(acting_user):
        raise Forbidden(f"only a superadmin may {what}")


MAX_AUDIT_REPR = 320


def audit(acting_user, action, obj, *, before=None, after=None, domain=None):
    """Record one administrative change (inside the caller's transaction).

    `obj` is what changed (its str() is kept) or a string; `domain` the Domain it is about
    (None for server-wide changes); `before`/`after` JSON-able dicts without secrets.
    """
    actor = acting_user if acting_user is not None and acting_user.pk is not None else None
    return AuditEntry.objects.create(
        time=timezone.now(),
        actor=actor,
        actor_name=acting_user.get_username() if acting_user is not None else "system",
        via=_channel.get(),
        action=action,
        object_type=action.partition(".")[0],
        object_repr=str(obj)[:MAX_AUDIT_REPR],
        domain=domain if domain is not None and domain.pk is not None else None,
        domain_name=domain.name if domain is not None else "",
        before=before,
        after=after,
    )


def snapshot(obj):
    """The fields of a domain, alias domain, account, alias or redirect for the audit log."""
    if isinstance(obj, Domain):
        fields = ("name", "active", "default_quota", "messages_per_hour", "recipients_per_day",
                  "max_accounts", "max_aliases", "max_quota_total")
        return {name: getattr(obj, name) for name in fields}
    if isinstance(obj, DomainAlias):
        return {"name": obj.name, "target": obj.target.name, "active": obj.active}
    if isinstance(obj, Account):
        return {
            "address": obj.address, "display_name": obj.display_name, "quota": obj.quota, "active": obj.active,
            "messages_per_hour": obj.messages_per_hour, "recipients_per_day": obj.recipients_per_day,
            "apop": bool(obj.apop_secret), "has_password": bool(obj.password),
        }
    if isinstance(obj, Alias):
        return {"address": obj.address, "targets": [t.address for t in obj.targets.all()], "active": obj.active}
    if isinstance(obj, Redirect):
        return {"address": obj.address, "target": obj.target, "active": obj.active}
    raise TypeError(f"no audit snapshot for {type(obj).__name__}")


def _domain_name(name):
    try:
        return normalize_domain(name)
    except AddressError as error:
        raise InvalidInput(str(error)) from None


def _missing_domain(domain_name):
    return NotFound(f"domain {domain_name} does not exist (add it with: manage.py domain add {domain_name})")


def _split(address, *, allow_catchall=False, acting_user=None):
    """(localpart, Domain) for an address in one of our domains that `acting_user` may see."""
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
    domain = Domain.objects.visible_to(acting_user).filter(name=domain_name).first()
    if domain is None:
        if DomainAlias.objects.visible_to(acting_user).filter(name=domain_name).exists():
            raise InvalidInput(f"{domain_name} is an alias domain; use an address in its target domain")
        raise _missing_domain(domain_name)
    return localpart, domain


def _lock_domain(domain):
    """The domain row, locked until the transaction ends: limits are checked one change at a time."""
    return Domain.objects.select_for_update().get(pk=domain.pk)


def _check_account_limits(domain, *, quota, old_quota=None):
    """Refuse an account (new when old_quota is None, else changing its quota) past the domain's limits."""
    if old_quota is None and domain.max_accounts is not None:
        count = Account.objects.filter(domain=domain).count()
        if count >= domain.max_accounts:
            raise LimitExceeded(f"domain {domain.name} may have at most {domain.max_accounts} account(s)")
    if domain.max_quota_total is not None:
        if quota == 0:
            raise LimitExceeded(
                f"domain {domain.name} has a total quota limit: its accounts need a quota (not unlimited)"
            )
        used = Account.objects.filter(domain=domain).aggregate(total=Sum("quota"))["total"] or 0
        total = used - (old_quota or 0) + quota
        if total > domain.max_quota_total:
            raise LimitExceeded(
                f"domain {domain.name} may hand out at most {format_size(domain.max_quota_total)} of quota "
                f"in all; {format_size(max(0, domain.max_quota_total - used + (old_quota or 0)))} is left"
            )


def _check_alias_limit(domain):
    if domain.max_aliases is None:
        return
    count = Alias.objects.filter(domain=domain).count() + Redirect.objects.filter(domain=domain).count()
    if count >= domain.max_aliases:
        raise LimitExceeded(f"domain {domain.name} may have at most {domain.max_aliases} alias(es) and redirect(s)")


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


def _change(instance, action, acting_user, domain, **values):
    """Save `values` on `instance` and audit the change."""
    before = snapshot(instance)
    _save_fields(instance, **values)
    audit(acting_user, action, instance, before=before, after=snapshot(instance), domain=domain)
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
def create_domain(name, *, default_quota=0, active=True, acting_user=None):
    require_superadmin(acting_user, "add domains")
    name = _domain_name(name)
    if Domain.objects.filter(name=name).exists():
        raise Conflict(f"domain {name} already exists")
    if DomainAlias.objects.filter(name=name).exists():
        raise Conflict(f"{name} already exists as an alias domain")
    domain = Domain.objects.create(name=name, default_quota=default_quota, active=active)
    dkim.ensure_keys(domain)  # signing keys from the start; `domain dns` shows what to publish
    audit(acting_user, "domain.create", domain, after=snapshot(domain), domain=domain)
    return domain


def get_domain(name, *, acting_user=None):
    name = _domain_name(name)
    try:
        return Domain.objects.visible_to(acting_user).get(name=name)
    except Domain.DoesNotExist:
        raise NotFound(f"domain {name} does not exist") from None


@transaction.atomic
def remove_domain(name, *, force=False, acting_user=None):
    """Remove a domain; with accounts in it only when force=True (their mail is deleted too)."""
    domain = get_domain(name, acting_user=acting_user)
    require_superadmin(acting_user, "remove domains")
    count = domain.accounts.count()
    if count and not force:
        raise Conflict(f"domain {domain.name} still has {count} account(s); remove them first or use --force")
    for account in domain.accounts.all():
        mailstore_actions.delete_account_mail(account)
    audit(acting_user, "domain.remove", domain, before=snapshot(domain), domain=domain)
    domain.accounts.all().delete()
    domain.delete()


@transaction.atomic
def set_domain_active(name, active, *, acting_user=None):
    domain = get_domain(name, acting_user=acting_user)
    require_superadmin(acting_user, "enable or disable domains")
    return _change(domain, "domain.set_active", acting_user, domain, active=active)


MAX_QUOTA = 2**63 - 1


def _check_quota(quota):
    if quota < 0:
        raise InvalidInput("quota cannot be negative")
    if quota > MAX_QUOTA:
        raise InvalidInput("quota is larger than the largest size stored (8 EiB)")


@transaction.atomic
def set_domain_default_quota(name, quota, *, acting_user=None):
    _check_quota(quota)
    domain = get_domain(name, acting_user=acting_user)
    return _change(domain, "domain.set_default_quota", acting_user, domain, default_quota=quota)


def _limit(value, what, maximum):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number")
    if not 0 <= value <= maximum:
        raise InvalidInput(f"{what} must be between 0 and {maximum}")
    return value


@transaction.atomic
def set_domain_limits(name, *, max_accounts=None, max_aliases=None, max_quota_total=None, acting_user=None):
    """Set all three limits of the domain (None: no limit). Only a superadmin may."""
    domain = get_domain(name, acting_user=acting_user)
    require_superadmin(acting_user, "set a domain's limits")
    return _change(
        _lock_domain(domain), "domain.set_limits", acting_user, domain,
        max_accounts=_limit(max_accounts, "the account limit", MAX_LIMIT),
        max_aliases=_limit(max_aliases, "the alias limit", MAX_LIMIT),
        max_quota_total=_limit(max_quota_total, "the total quota limit", 2**63 - 1),
    )


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
def set_domain_send_limits(name, messages_per_hour=None, recipients_per_day=None, *, acting_user=None):
    """Set both sending limits of the domain's accounts; None uses the server's, 0 is no limit."""
    domain = get_domain(name, acting_user=acting_user)
    require_superadmin(acting_user, "set a domain's sending limits")
    return _change(
        domain, "domain.set_send_limits", acting_user, domain,
        messages_per_hour=_send_limit(messages_per_hour, "messages per hour"),
        recipients_per_day=_send_limit(recipients_per_day, "recipients per day"),
    )


@transaction.atomic
def create_domain_alias(name, target, *, acting_user=None):
    name = _domain_name(name)
    target_domain = get_domain(target, acting_user=acting_user)
    require_superadmin(acting_user, "add alias domains")
    if Domain.objects.filter(name=name).exists() or DomainAlias.objects.filter(name=name).exists():
        raise Conflict(f"domain {name} already exists")
    alias = DomainAlias.objects.create(name=name, target=target_domain)
    audit(acting_user, "domain_alias.create", alias, after=snapshot(alias), domain=target_domain)
    return alias


def get_domain_alias(name, *, acting_user=None):
    name = _domain_name(name)
    alias = DomainAlias.objects.visible_to(acting_user).select_related("target").filter(name=name).first()
    if alias is None:
        raise NotFound(f"alias domain {name} does not exist")
    return alias


@transaction.atomic
def remove_domain_alias(name, *, acting_user=None):
    alias = get_domain_alias(name, acting_user=acting_user)
    require_superadmin(acting_user, "remove alias domains")
    audit(acting_user, "domain_alias.remove", alias, before=snapshot(alias), domain=alias.target)
    alias.delete()


# Domain administrators ---------------------------------------------------------------


def _user(username):
    from django.contrib.auth import get_user_model

    model = get_user_model()
    try:
        return model.objects.get(**{model.USERNAME_FIELD: username})
    except model.DoesNotExist:
        raise NotFound(f"user {username} does not exist") from None


@transaction.atomic
def grant_domain_admin(username, domain_name, *, acting_user=None):
    """Let the user administer the domain; they become staff so they can sign in to the admin."""
    require_superadmin(acting_user, "appoint domain administrators")
    user, domain = _user(username), get_domain(domain_name)
    membership, created = DomainAdmin.objects.get_or_create(user=user, domain=domain)
    if not created:
        raise Conflict(f"{username} already administers {domain.name}")
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    audit(acting_user, "domain_admin.grant", membership, after={"user": username, "domain": domain.name}, domain=domain)
    return membership


@transaction.atomic
def revoke_domain_admin(username, domain_name, *, acting_user=None):
    require_superadmin(acting_user, "remove domain administrators")
    user, domain = _user(username), get_domain(domain_name)
    deleted, _ = DomainAdmin.objects.filter(user=user, domain=domain).delete()
    if not deleted:
        raise NotFound(f"{username} does not administer {domain.name}")
    audit(acting_user, "domain_admin.revoke", f"{username} administers {domain}",
          before={"user": username, "domain": domain.name}, domain=domain)


# Accounts ---------------------------------------------------------------------------


def get_account(address, *, acting_user=None):
    localpart, domain = _split(address, acting_user=acting_user)
    account = Account.objects.filter(domain=domain, localpart=localpart).first()
    if account is None:
        raise UnknownAddress(f"account {localpart}@{domain.name} does not exist")
    account.domain = domain
    return account


@transaction.atomic
def create_account(address, *, password=None, quota=None, display_name="", active=True, acting_user=None):
    localpart, domain = _split(address, acting_user=acting_user)
    domain = _lock_domain(domain)
    _ensure_address_free(localpart, domain)
    if quota is None:
        quota = domain.default_quota or settings.MAILSUITE_DEFAULT_QUOTA
    _check_quota(quota)
    _check_account_limits(domain, quota=quota)
    account = Account(
        domain=domain, localpart=localpart, quota=quota, display_name=display_name, active=active
    )
    if password is not None:
        for name, value in _password_fields(password, account).items():
            setattr(account, name, value)
    account.save()
    mailstore_actions.create_default_folders(account)
    audit(acting_user, "account.create", account, after=snapshot(account), domain=domain)
    return account


@transaction.atomic
def remove_account(address, *, acting_user=None):
    account = get_account(address, acting_user=acting_user)
    audit(acting_user, "account.remove", account, before=snapshot(account), domain=account.domain)
    mailstore_actions.delete_account_mail(account)
    account.delete()


@transaction.atomic
def set_password(address, password, *, acting_user=None):
    account = get_account(address, acting_user=acting_user)
    return _change(account, "account.set_password", acting_user, account.domain, **_password_fields(password, account))


@transaction.atomic
def set_quota(address, quota, *, acting_user=None):
    _check_quota(quota)
    account = get_account(address, acting_user=acting_user)
    _check_account_limits(_lock_domain(account.domain), quota=quota, old_quota=account.quota)
    return _change(account, "account.set_quota", acting_user, account.domain, quota=quota)


def _within_domain_send_limit(value, domain_value, server_value, what):
    """A domain admin may lower an account's sending limit, not lift it past the domain's."""
    ceiling = domain_value if domain_value is not None else server_value
    if value is None or not ceiling:
        return
    if value == 0 or value > ceiling:
        raise LimitExceeded(f"{what} may be at most the domain's limit ({ceiling}); ask a superadmin for more")


@transaction.atomic
def set_send_limits(address, messages_per_hour=None, recipients_per_day=None, *, acting_user=None):
    """Set both sending limits of the account; None uses the domain's, 0 is no limit."""
    account = get_account(address, acting_user=acting_user)
    messages_per_hour = _send_limit(messages_per_hour, "messages per hour")
    recipients_per_day = _send_limit(recipients_per_day, "recipients per day")
    if not is_superadmin(acting_user):
        domain = account.domain
        _within_domain_send_limit(
            messages_per_hour, domain.messages_per_hour, settings.MAILSUITE_SEND_MESSAGES_PER_HOUR, "messages per hour"
        )
        _within_domain_send_limit(
            recipients_per_day, domain.recipients_per_day, settings.MAILSUITE_SEND_RECIPIENTS_PER_DAY,
            "recipients per day",
        )
    return _change(
        account, "account.set_send_limits", acting_user, account.domain,
        messages_per_hour=messages_per_hour, recipients_per_day=recipients_per_day,
    )


@transaction.atomic
def set_account_active(address, active, *, acting_user=None):
    account = get_account(address, acting_user=acting_user)
    return _change(account, "account.set_active", acting_user, account.domain, active=active)


@transaction.atomic
def set_display_name(address, display_name, *, acting_user=None):
    account = get_account(address, acting_user=acting_user)
    return _change(account, "account.set_display_name", acting_user, account.domain, display_name=display_name.strip())


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
def set_apop_secret(address, secret, *, acting_user=None):
    """Turn APOP on for the account with `secret` (stored encrypted, see mailsuite.lib.secrets)."""
    account = get_account(address, acting_user=acting_user)
    _check_apop_secret(secret, account)
    return _change(account, "account.set_apop", acting_user, account.domain, apop_secret=secrets.encrypt(secret))


@transaction.atomic
def clear_apop_secret(address, *, acting_user=None):
    """Turn APOP off for the account and forget its secret."""
    account = get_account(address, acting_user=acting_user)
    return _change(account, "account.clear_apop", acting_user, account.domain, apop_secret="")


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
def create_alias(address, targets, *, acting_user=None):
    """`address` may be `@domain` for the domain's catch-all."""
    localpart, domain = _split(address, allow_catchall=True, acting_user=acting_user)
    domain = _lock_domain(domain)
    _ensure_address_free(localpart, domain)
    _check_alias_limit(domain)
    targets = list(dict.fromkeys(_normalize_target(t) for t in targets))
    if not targets:
        raise InvalidInput("an alias needs at least one target")
    alias = Alias.objects.create(domain=domain, localpart=localpart)
    AliasTarget.objects.bulk_create(AliasTarget(alias=alias, address=t) for t in targets)
    _check_alias_graph(alias)
    audit(acting_user, "alias.create", alias, after=snapshot(alias), domain=domain)
    return alias


def get_alias(address, *, acting_user=None):
    localpart, domain = _split(address, allow_catchall=True, acting_user=acting_user)
    alias = Alias.objects.filter(domain=domain, localpart=localpart).first()
    if alias is None:
        raise UnknownAddress(f"alias {localpart or '*'}@{domain.name} does not exist")
    alias.domain = domain
    return alias


@transaction.atomic
def set_alias_targets(address, targets, *, acting_user=None):
    alias = get_alias(address, acting_user=acting_user)
    targets = list(dict.fromkeys(_normalize_target(t) for t in targets))
    if not targets:
        raise InvalidInput("an alias needs at least one target")
    before = snapshot(alias)
    alias.targets.all().delete()
    AliasTarget.objects.bulk_create(AliasTarget(alias=alias, address=t) for t in targets)
    _check_alias_graph(alias)
    audit(acting_user, "alias.set_targets", alias, before=before, after=snapshot(alias), domain=alias.domain)
    return alias


@transaction.atomic
def remove_alias(address, *, acting_user=None):
    alias = get_alias(address, acting_user=acting_user)
    audit(acting_user, "alias.remove", alias, before=snapshot(alias), domain=alias.domain)
    alias.delete()


@transaction.atomic
def create_redirect(address, target, *, acting_user=None):
    localpart, domain = _split(address, acting_user=acting_user)
    domain = _lock_domain(domain)
    _ensure_address_free(localpart, domain)
    _check_alias_limit(domain)
    target = _normalize_target(target)
    if local_domain(split_address(target)[1]) is not None:
        raise InvalidInput(f"{target} is in a local domain; use an alias for local targets")
    redirect = Redirect.objects.create(domain=domain, localpart=localpart, target=target)
    audit(acting_user, "redirect.create", redirect, after=snapshot(redirect), domain=domain)
    return redirect


def get_redirect(address, *, acting_user=None):
    localpart, domain = _split(address, acting_user=acting_user)
    redirect = Redirect.objects.filter(domain=domain, localpart=localpart).first()
    if redirect is None:
        raise UnknownAddress(f"redirect {localpart}@{domain.name} does not exist")
    redirect.domain = domain
    return redirect


@transaction.atomic
def remove_redirect(address, *, acting_user=None):
    redirect = get_redirect(address, acting_user=acting_user)
    audit(acting_user, "redirect.remove", redirect, before=snapshot(redirect), domain=redirect.domain)
    redirect.delete()


# Send-as grants: addresses an account may send as besides its own (accounts.identities)


def _normalize_identity(identity):
    local, _, domain = identity.strip().rpartition("@")
    if not local or not domain.strip(" ."):  # else "x@" would be refused as just "empty domain"
        raise InvalidInput(f"identity {identity!r} is not an address of the form local@domain")
    try:
        return normalize_address(identity)
    except AddressError as error:
        raise InvalidInput(f"identity {error}") from None


def _check_identity_allowed(address, acting_user):
    """Sending as an address is acting for it: a domain admin grants only their domains' addresses."""
    if is_superadmin(acting_user):
        return
    name = split_address(address)[1]
    if not (
        Domain.objects.visible_to(acting_user).filter(name=name).exists()
        or DomainAlias.objects.visible_to(acting_user).filter(name=name).exists()
    ):
        raise Forbidden(f"only a superadmin may let an account send as {address}: {name} is not your domain")


def send_as_identities(account):
    """The addresses `account` has been granted, in order."""
    return list(account.send_as_grants.values_list("address", flat=True))


@transaction.atomic
def grant_send_as(account_address, identity, *, acting_user=None):
    """Let the account send as `identity` (a superadmin: any address; a domain admin: theirs)."""
    account = get_account(account_address, acting_user=acting_user)
    identity = _normalize_identity(identity)
    _check_identity_allowed(identity, acting_user)
    try:
        with transaction.atomic():  # a savepoint: the outer transaction survives the refusal
            grant = SendAsGrant.objects.create(account=account, address=identity)
    except IntegrityError:
        raise Conflict(f"{account.address} may already send as {identity}") from None
    audit(acting_user, "account.grant_send_as", account, after={"send_as": identity}, domain=account.domain)
    return grant


@transaction.atomic
def revoke_send_as(account_address, identity, *, acting_user=None):
    """Take back a grant; returns the identity, normalised."""
    account = get_account(account_address, acting_user=acting_user)
    identity = _normalize_identity(identity)
    deleted, _ = SendAsGrant.objects.filter(account=account, address=identity).delete()
    if not deleted:
        raise NotFound(f"{account.address} has no grant to send as {identity}")
    audit(acting_user, "account.revoke_send_as", account, before={"send_as": identity}, domain=account.domain)
    return identity


@transaction.atomic
def set_send_as(account_address, identities, *, acting_user=None):
    """Replace the account's grants with `identities`; returns them, normalised, in order."""
    account = get_account(account_address, acting_user=acting_user)
    current = set(send_as_identities(account))
    wanted = set(_normalize_identity(identity) for identity in identities)
    for identity in sorted(wanted - current):  # grants kept as they are need no check
        _check_identity_allowed(identity, acting_user)
    if current - wanted:
        SendAsGrant.objects.filter(account=account, address__in=current - wanted).delete()
    # ignore_conflicts: a grant saved meanwhile by a concurrent request is the one wanted anyway.
    SendAsGrant.objects.bulk_create(
        (SendAsGrant(account=account, address=a) for a in sorted(wanted - current)), ignore_conflicts=True
    )
    if wanted != current:
        audit(acting_user, "account.set_send_as", account, before={"send_as": sorted(current)},
              after={"send_as": sorted(wanted)}, domain=account.domain)
    return sorted(wanted)


# Login throttling, the login audit, sending alerts ----------------------------------


@transaction.atomic
def clear_login_blocks(ids, *, acting_user=None):
    """Forget the failures and blocks of the LoginThrottle rows `ids`; returns how many went."""
    require_superadmin(acting_user, "clear login blocks")
    rows = list(LoginThrottle.objects.filter(pk__in=ids).values_list("kind", "key"))
    deleted, _ = LoginThrottle.objects.filter(pk__in=ids).delete()
    if deleted:
        audit(acting_user, "login_throttle.clear", f"{deleted} login throttle record(s)",
              before={"cleared": [f"{kind} {key}" for kind, key in rows]})
    return deleted


@transaction.atomic
def unblock_login(*, address=None, remote_ip=None, acting_user=None):
    """Forget the failures and block of an address and/or a client IP; returns how many rows went."""
    require_superadmin(acting_user, "clear login blocks")
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
    if deleted:
        audit(acting_user, "login_throttle.clear", f"{deleted} login throttle record(s)",
              before={"cleared": [f"{kind} {key}" for kind, key in keys]})
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
def acknowledge_send_limit_alerts(ids, *, acting_user=None):
    """Mark the SendLimitAlert rows `ids` as seen; returns how many changed."""
    alerts = SendLimitAlert.objects.visible_to(acting_user).filter(pk__in=ids, acknowledged=False)
    changed = alerts.update(acknowledged=True)
    if changed:
        audit(acting_user, "send_limit_alert.acknowledge", f"{changed} sending limit alert(s)")
    return changed


# Sieve scripts, changed by an administrator for an account (the account's own changes,
# over ManageSieve or the webmail, call sieve.actions directly and are not audited) -----


def _script_state(script):
    return {"name": script.name, "active": script.active, "size": len(script.text.encode("utf-8"))}


@transaction.atomic
def put_sieve_script(address, name, text, *, activate=False, acting_user=None):
    """Store (create or replace) a script of the account; sieve.actions errors pass through."""
    from sieve import actions as sieve_actions
    from sieve.models import SieveScript

    account = get_account(address, acting_user=acting_user)
    old = SieveScript.objects.filter(account=account, name=name).first()
    script = sieve_actions.put_script(account, name, text, activate=activate)
    audit(acting_user, "sieve.put", f"{name} of {account.address}", domain=account.domain,
          before=_script_state(old) if old else None, after=_script_state(script))
    return script


@transaction.atomic
def activate_sieve_script(address, name, *, acting_user=None):
    """Make `name` the account's active script; "" deactivates them all."""
    from sieve import actions as sieve_actions

    account = get_account(address, acting_user=acting_user)
    before = sieve_actions.active_script(account)
    script = sieve_actions.set_active(account, name)
    audit(acting_user, "sieve.activate", f"{name or '(none)'} of {account.address}", domain=account.domain,
          before={"active": before.name if before else None}, after={"active": name or None})
    return script


@transaction.atomic
def delete_sieve_script(address, name, *, acting_user=None):
    from sieve import actions as sieve_actions

    account = get_account(address, acting_user=acting_user)
    script = sieve_actions.get_script(account, name)
    sieve_actions.delete_script(account, name)
    audit(acting_user, "sieve.delete", f"{name} of {account.address}", domain=account.domain,
          before=_script_state(script))


# Spam thresholds and allow/block lists, changed by an administrator for a domain or an
# account (an account's own list changes in the webmail call antispam.actions directly) ---


def _spam_scope(domain, account, acting_user):
    """({"domain": Domain} or {"account": Account}, the Domain it is about, a label)."""
    if (domain is None) == (account is None):
        raise InvalidInput("give a domain or an account, not both")
    if domain is not None:
        found = get_domain(domain, acting_user=acting_user)
        return {"domain": found}, found, found.name
    found = get_account(account, acting_user=acting_user)
    return {"account": found}, found.domain, found.address


def _thresholds(row):
    if row is None:
        return None
    return {"tag": row.tag_threshold, "junk": row.junk_threshold, "reject": row.reject_threshold,
            "never_reject": row.never_reject}


@transaction.atomic
def set_spam_thresholds(*, domain=None, account=None, tag=None, junk=None, reject=None, never_reject=False,
                        acting_user=None):
    """Thresholds of a domain (by name) or an account (by address); None inherits."""
    from antispam import actions as spam_actions
    from antispam.models import SpamSettings

    scope, about, label = _spam_scope(domain, account, acting_user)
    before = _thresholds(SpamSettings.objects.filter(**scope).first())
    try:
        row = spam_actions.set_thresholds(**scope, tag=tag, junk=junk, reject=reject, never_reject=never_reject)
    except spam_actions.SpamSettingsError as error:
        raise InvalidInput(str(error)) from None
    audit(acting_user, "spam.thresholds", f"spam thresholds of {label}", domain=about, before=before,
          after=_thresholds(row))
    return row


@transaction.atomic
def add_spam_list_entry(kind, pattern, *, domain=None, account=None, acting_user=None):
    """Put a sender (address or domain) on the allow or block list of a domain or an account;
    one already there moves to the list named."""
    from antispam import actions as spam_actions
    from antispam.models import ListEntry

    scope, about, label = _spam_scope(domain, account, acting_user)
    try:
        pattern = spam_actions.normalise_pattern(pattern)
        before = ListEntry.objects.filter(**scope, pattern=pattern).values_list("kind", flat=True).first()
        entry = spam_actions.add_list_entry(kind, pattern, **scope)
    except spam_actions.SpamSettingsError as error:
        raise InvalidInput(str(error)) from None
    audit(acting_user, "spam.list_add", f"{entry.pattern} on {label}", domain=about,
          before={"kind": before} if before else None, after={"kind": entry.kind, "pattern": entry.pattern})
    return entry


@transaction.atomic
def remove_spam_list_entry(entry_id, *, domain=None, account=None, acting_user=None):
    """Remove an entry of a domain's or an account's lists (NotFound when it has none such)."""
    from antispam import actions as spam_actions
    from antispam.models import ListEntry

    scope, about, label = _spam_scope(domain, account, acting_user)
    entry = ListEntry.objects.filter(pk=entry_id, **scope).first()
    if entry is None or not spam_actions.remove_list_entry(entry_id, **scope):
        raise NotFound(f"no such list entry of {label}")
    audit(acting_user, "spam.list_remove", f"{entry.pattern} on {label}", domain=about,
          before={"kind": entry.kind, "pattern": entry.pattern})
