"""What the content filter learns and what operators and users set.

- Bayes counts (BayesCorpus, BayesToken): per account, and site-wide where account is
  NULL; Learned remembers which message (by its SHA-256) taught which lesson, so a
  message is never counted twice and a change of mind moves it from one side to the other.
- SenderMark: senders the user marked (moved into or out of Junk), for reputation.
- SpamSettings and ListEntry: thresholds and allow/block lists, per domain or per
  account (exactly one of the two is set; the account's win over its domain's).
- Verdict: the rules that fired for a stored message, so the webmail can explain it.

All writes go through antispam.actions (lists, settings) and antispam.bayes (counts).
"""
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce


class ScopedQuerySet(models.QuerySet):
    """Rows of one domain or one account: visible_to() gives a domain admin those about
    their domains and their domains' accounts (accounts.models' one scoping rule)."""

    def visible_to(self, user):
        from accounts.models import _is_system_or_superuser, administered_domain_ids

        if _is_system_or_superuser(user):
            return self
        ids = administered_domain_ids(user)
        return self.filter(Q(domain_id__in=ids) | Q(account__domain_id__in=ids))


def _one_scope(prefix):
    return models.CheckConstraint(
        condition=(Q(domain__isnull=False) & Q(account__isnull=True)) | (Q(domain__isnull=True) & Q(account__isnull=False)),
        name=f"{prefix}_one_scope",
    )


class BayesCorpus(models.Model):
    """How many spam and ham messages a filter learned from (account NULL: site-wide)."""

    account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    spam = models.PositiveIntegerField(default=0)
    ham = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "Bayes corpora"
        constraints = [
            # One row per filter: trainers lock it to serialise their updates of the counts.
            # (NULL, the site-wide filter, counts as 0 so that it too is unique.)
            models.UniqueConstraint(Coalesce("account", Value(0)), name="bayescorpus_unique_account"),
        ]

    def __str__(self):
        return f"{self.account_id or 'site'}: {self.spam} spam, {self.ham} ham"


class BayesToken(models.Model):
    account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    token = models.CharField(max_length=64)
    spam = models.PositiveIntegerField(default=0)
    ham = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # A token is counted once per filter; these unique indexes also answer the
            # scorer's "these tokens of this filter" query.
            models.UniqueConstraint(fields=["account", "token"], name="bayestoken_unique"),
            models.UniqueConstraint(fields=["token"], condition=Q(account__isnull=True), name="bayestoken_unique_site"),
        ]


class Learned(models.Model):
    """A message a filter learned from, by the SHA-256 of its bytes."""

    SPAM, HAM = "spam", "ham"
    account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64)
    verdict = models.CharField(max_length=4, choices=[(SPAM, "spam"), (HAM, "ham")])

    class Meta:
        constraints = [
            # A message teaches a filter one lesson: learning it again changes or repeats it.
            models.UniqueConstraint(fields=["account", "digest"], name="learned_unique"),
            models.UniqueConstraint(fields=["digest"], condition=Q(account__isnull=True), name="learned_unique_site"),
        ]


class SenderMark(models.Model):
    """How often the user moved mail from this sender out of Junk (ham) or into it (spam)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    address = models.CharField(max_length=320, help_text="Lower-case address")
    ham = models.PositiveIntegerField(default=0)
    spam = models.PositiveIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One tally per sender; the scorer looks a sender up by it.
            models.UniqueConstraint(fields=["account", "address"], name="sendermark_unique"),
        ]


class SpamSettings(models.Model):
    """Score thresholds for a domain or an account; an empty one inherits (account →
    domain → server default). Actions: tag (X-Spam-Status: Yes), file into Junk, reject
    at SMTP time (550 5.7.1)."""

    domain = models.ForeignKey("accounts.Domain", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    tag_threshold = models.FloatField(null=True, blank=True, help_text="Score from which mail is marked as spam")
    junk_threshold = models.FloatField(null=True, blank=True, help_text="Score from which mail is filed into Junk")
    reject_threshold = models.FloatField(
        null=True, blank=True, help_text="Score from which mail is refused at SMTP time (550 5.7.1); empty: inherit",
    )
    never_reject = models.BooleanField(default=False, help_text="Never refuse: file into Junk instead")

    objects = ScopedQuerySet.as_manager()

    class Meta:
        verbose_name = "spam settings"
        verbose_name_plural = "spam settings"
        constraints = [
            _one_scope("spamsettings"),
            # One row per domain and per account.
            models.UniqueConstraint(fields=["domain"], name="spamsettings_unique_domain"),
            models.UniqueConstraint(fields=["account"], name="spamsettings_unique_account"),
        ]

    def __str__(self):
        return f"spam settings of {self.account or self.domain}"


class ListEntry(models.Model):
    """An allow or block list entry: an address (sam@example.org) or a domain
    (example.org, which also covers its subdomains)."""

    ALLOW, BLOCK = "allow", "block"
    domain = models.ForeignKey("accounts.Domain", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    account = models.ForeignKey("accounts.Account", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=5, choices=[(ALLOW, "allow"), (BLOCK, "block")])
    pattern = models.CharField(max_length=320, help_text="Lower-case address or domain")
    created = models.DateTimeField(auto_now_add=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "list entries"
        ordering = ["kind", "pattern"]
        constraints = [
            _one_scope("listentry"),
            # A sender is on one list once per scope; these also answer the scorer's lookups.
            models.UniqueConstraint(fields=["account", "pattern"], name="listentry_unique_account"),
            models.UniqueConstraint(fields=["domain", "pattern"], name="listentry_unique_domain"),
        ]

    def __str__(self):
        return f"{self.kind} {self.pattern}"


class Verdict(models.Model):
    """The filter's verdict on a message delivered to an account (keyed by its bytes: every
    copy the account holds shares it)."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE, related_name="+")
    blob = models.ForeignKey("mailstore.Blob", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    action = models.CharField(max_length=8, help_text="none, tag, junk or reject (filed into Junk instead)")
    rules = models.JSONField(default=list, help_text="[name, points, explanation] of each rule that fired")
    results = models.JSONField(default=dict, help_text="Authentication results: spf, dkim, dmarc, arc")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # The message page looks its verdict up by account and blob.
            models.UniqueConstraint(fields=["account", "blob"], name="verdict_unique"),
        ]
