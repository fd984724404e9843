"""Domains, accounts, aliases and redirects: who receives mail here.

Names are stored normalised (mailsuite.lib.addresses): domains in ASCII lower case,
local parts lower-cased. Writes go through accounts.actions.
"""
from django.contrib.auth.hashers import check_password
from django.db import models
from django.db.models import Q

from mailsuite.lib.addresses import display_domain


class Domain(models.Model):
    name = models.CharField(max_length=253, unique=True, help_text="ASCII (IDNA) form, lower case")
    active = models.BooleanField(default=True)
    default_quota = models.PositiveBigIntegerField(
        default=0, help_text="Quota in bytes for new accounts; 0 uses the server default"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return display_domain(self.name)


class DomainAlias(models.Model):
    """Every address at `name` is the same address at `target`."""

    name = models.CharField(max_length=253, unique=True)
    target = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="aliases")
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "domain aliases"

    def __str__(self):
        return f"{display_domain(self.name)} → {self.target}"


class AddressModel(models.Model):
    """Common shape of everything that owns one address in a local domain."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE)
    localpart = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    @property
    def address(self):
        return f"{self.localpart}@{self.domain.name}"

    def __str__(self):
        return f"{self.localpart or '*'}@{self.domain}"


class Account(AddressModel):
    """A mailbox owner: can log in, has folders and a quota."""

    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="accounts")
    password = models.CharField(max_length=255, blank=True, help_text="Django password hash")
    display_name = models.CharField(max_length=255, blank=True)
    quota = models.PositiveBigIntegerField(default=0, help_text="Bytes; 0 means unlimited")
    # Maintained by mailstore.actions in the same transaction as each change, never recomputed per request.
    quota_used = models.PositiveBigIntegerField(default=0)
    # Last UIDVALIDITY handed to a folder of this account: a recreated folder gets a larger one.
    uidvalidity_counter = models.PositiveBigIntegerField(default=0)
    last_login = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["domain__name", "localpart"]
        constraints = [
            # One mailbox per address.
            models.UniqueConstraint(fields=["domain", "localpart"], name="account_unique_address"),
            # Usage may not be negative: a bug in accounting must fail loudly.
            models.CheckConstraint(condition=Q(quota_used__gte=0), name="account_quota_used_nonneg"),
        ]
        indexes = [
            # Admin and API search accounts by local part across domains.
            models.Index(fields=["localpart"], name="account_localpart"),
        ]

    def check_password(self, raw_password):
        return bool(self.password) and check_password(raw_password, self.password)

    def over_quota_with(self, extra_bytes):
        return self.quota > 0 and self.quota_used + extra_bytes > self.quota

    @property
    def quota_percent(self):
        if not self.quota:
            return 0
        return min(100, round(100 * self.quota_used / self.quota))


class Alias(AddressModel):
    """An address whose mail goes to one or more other addresses (local or external).

    An empty local part is the domain's catch-all: it receives mail for every
    address of the domain that nothing else claims.
    """

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="alias_set")

    class Meta:
        ordering = ["domain__name", "localpart"]
        verbose_name_plural = "aliases"
        constraints = [
            models.UniqueConstraint(fields=["domain", "localpart"], name="alias_unique_address"),
        ]

    @property
    def is_catchall(self):
        return self.localpart == ""


class AliasTarget(models.Model):
    alias = models.ForeignKey(Alias, on_delete=models.CASCADE, related_name="targets")
    address = models.CharField(max_length=320, help_text="Normalised address")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["alias", "address"], name="aliastarget_unique"),
        ]

    def __str__(self):
        return self.address


class Redirect(AddressModel):
    """An address with no mailbox whose mail goes to an address in another domain."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="redirects")
    target = models.CharField(max_length=320)

    class Meta:
        ordering = ["domain__name", "localpart"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "localpart"], name="redirect_unique_address"),
        ]
