"""Keys and certificates for message security.

- OwnKey: an account's own S/MIME certificate or OpenPGP key. The private part is sealed
  with the user's key passphrase (secmail.sealing); it is null when the server keeps no
  private key (MAILSUITE_SERVER_PRIVATE_KEYS=off, or a public key published for WKD while
  the secret stays in the user's own client). An S/MIME key generated here waits for its
  certificate with only `csr_pem` set.
- PeerKey: correspondents' public certificates/keys, the account's address book of keys:
  harvested from verified signed mail, learned from Autocrypt headers, found by WKD, or
  imported by hand.
- TrustedCA: a CA certificate this user trusts for S/MIME besides the system store.
- RevocationList: a CRL imported by the user or the operator (secmail.revocation).

Fingerprints: S/MIME = SHA-256 of the certificate's DER, lower-case hex; OpenPGP = the
key's fingerprint as gpg prints it (upper-case hex). Writes go through secmail.actions.
"""
from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import Account

SMIME = "smime"
OPENPGP = "openpgp"
KINDS = [(SMIME, "S/MIME"), (OPENPGP, "OpenPGP")]


class OwnKey(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="secmail_keys")
    kind = models.CharField(max_length=8, choices=KINDS)
    fingerprint = models.CharField(max_length=64)
    addresses = models.JSONField(default=list, help_text="Lower-case addresses the key is for")
    label = models.CharField(max_length=255, blank=True, help_text="Subject or user id, for display")
    public_data = models.TextField(blank=True, help_text="PEM certificate or ASCII-armoured public key")
    csr_pem = models.TextField(blank=True, help_text="S/MIME: request awaiting its certificate")
    # Never shown, exported or logged; secmail.sealing opens it with the user's key passphrase.
    sealed_private = models.BinaryField(null=True, blank=True, editable=False)
    not_after = models.DateTimeField(null=True, blank=True)
    published = models.BooleanField(default=False, help_text="Served by WKD and sent in Autocrypt headers")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "-created"]
        constraints = [
            # Importing the same key twice would give two rows to keep in step.
            models.UniqueConstraint(fields=["account", "kind", "fingerprint"], name="secmail_ownkey_unique"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.label or self.fingerprint[:16]}"

    @property
    def has_private(self):
        return self.sealed_private is not None

    @property
    def pending(self):
        """S/MIME: a key whose certificate has not come back from the CA yet."""
        return self.kind == SMIME and not self.public_data

    def context(self):
        """Associated data for sealing: binds the sealed blob to this key."""
        return f"{self.kind}:{self.fingerprint}".encode()


class PeerKey(models.Model):
    HARVESTED, AUTOCRYPT, WKD, IMPORTED = "harvested", "autocrypt", "wkd", "imported"
    SOURCES = [(HARVESTED, _("signed mail")), (AUTOCRYPT, _("Autocrypt header")), (WKD, "Web Key Directory"), (IMPORTED, _("imported"))]

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="secmail_peer_keys")
    kind = models.CharField(max_length=8, choices=KINDS)
    address = models.CharField(max_length=320, help_text="Lower case")
    fingerprint = models.CharField(max_length=64)
    label = models.CharField(max_length=255, blank=True)
    public_data = models.TextField()
    source = models.CharField(max_length=10, choices=SOURCES)
    prefer_encrypt = models.BooleanField(default=False, help_text="Autocrypt prefer-encrypt=mutual")
    not_after = models.DateTimeField(null=True, blank=True)
    # Autocrypt Level 1 §2.3: the effective date of the newest message the key came with.
    seen_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["address", "-seen_at"]
        constraints = [
            models.UniqueConstraint(fields=["account", "kind", "address", "fingerprint"], name="secmail_peerkey_unique"),
        ]
        indexes = [
            # Compose asks "can every recipient get encrypted mail?" by address.
            models.Index(fields=["account", "address"], name="secmail_peer_address"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.address} {self.fingerprint[:16]}"


class TrustedCA(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="secmail_trusted_cas")
    fingerprint = models.CharField(max_length=64)
    subject = models.CharField(max_length=500)
    pem = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subject"]
        constraints = [
            models.UniqueConstraint(fields=["account", "fingerprint"], name="secmail_trustedca_unique"),
        ]

    def __str__(self):
        return self.subject


class RevocationList(models.Model):
    """A CRL imported by a user (for their own reading) or by the operator (account null:
    for everyone), consulted before any network lookup (secmail.revocation). Its signature
    is checked when used, against the issuer of the certificate being checked."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, null=True, blank=True, related_name="secmail_crls")
    issuer = models.CharField(max_length=500, help_text="The CRL issuer's name, for display")
    issuer_key = models.CharField(max_length=64, help_text="SHA-256 of the issuer name's DER (secmail.revocation.name_key)")
    der = models.BinaryField()
    this_update = models.DateTimeField()
    next_update = models.DateTimeField(null=True, blank=True)
    entries = models.PositiveIntegerField(default=0, help_text="Revoked certificates listed")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["issuer"]
        constraints = [
            # One CRL per issuer and owner: a newer import replaces the older one.
            models.UniqueConstraint(fields=["account", "issuer_key"], name="secmail_crl_unique"),
            # The same for the operator's (account null; NULLs are distinct in the constraint above).
            models.UniqueConstraint(fields=["issuer_key"], condition=models.Q(account__isnull=True), name="secmail_crl_operator_unique"),
        ]

    def __str__(self):
        return f"CRL {self.issuer} ({self.this_update:%Y-%m-%d})"
