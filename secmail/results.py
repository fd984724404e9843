"""What a verification or decryption found, in objects made for the reading UI.

A SignatureResult says who signed, whether the signature holds and, if not, why — each
reason a distinct Status so the UI can word it (RFC 8551 §3.5 and RFC 3156 leave the
presentation to the client). It also names the MIME part it covers (`part`, "" for the
root of what is displayed), because only that part is signed: a signed attachment
forwarded inside an unsigned message, or an unsigned part added beside a signed one,
must not turn the whole message "signed" (signature spoofing and EFAIL-style tricks).

MessageSecurity.badge is the one place that decides the badge: "verified" only when a
single valid signature covers the whole displayed content.
"""
import enum
from dataclasses import dataclass, field
from datetime import datetime

from django.utils.translation import gettext_lazy as _


class Status(enum.Enum):
    VALID = "valid"  # signature holds, signer trusted, address matches, certificate/key current
    TAMPERED = "tampered"  # the signed content or signature does not match: changed in transit
    UNTRUSTED = "untrusted"  # S/MIME: no chain to a trusted CA
    UNKNOWN_KEY = "unknown-key"  # OpenPGP: the signer's key is not known here
    EXPIRED = "expired"  # certificate/key past its end of validity
    NOT_YET_VALID = "not-yet-valid"
    REVOKED = "revoked"  # key revoked (when known)
    WRONG_ADDRESS = "wrong-address"  # valid signature by someone whose key is not for the From address
    MALFORMED = "malformed"  # not a signature we can read
    UNSUPPORTED = "unsupported"  # an algorithm or structure we do not verify


# Worded for people; the UI may translate these.
DESCRIPTIONS = {
    Status.VALID: _("Signature verified"),
    Status.TAMPERED: _("The message was changed after it was signed"),
    Status.UNTRUSTED: _("Signed with a certificate from an authority that is not trusted"),
    Status.UNKNOWN_KEY: _("Signed with a key that is not known here"),
    Status.EXPIRED: _("Signed with an expired certificate or key"),
    Status.NOT_YET_VALID: _("Signed with a certificate that is not valid yet"),
    Status.REVOKED: _("Signed with a revoked certificate or key"),
    Status.WRONG_ADDRESS: _("Signed, but not by the sender's address"),
    Status.MALFORMED: _("The signature cannot be read"),
    Status.UNSUPPORTED: _("The signature uses something not supported here"),
}


@dataclass
class SignatureResult:
    scheme: str  # "smime" or "openpgp"
    status: Status
    part: str = ""  # MIME part number covered ("" = root of the displayed content, "1.2", …)
    signer_addresses: list = field(default_factory=list)
    signer_name: str = ""
    fingerprint: str = ""
    signed_at: datetime | None = None
    detail: str = ""  # one more line for the curious (never shown instead of the status)
    key_source: str = ""  # OpenPGP: where the key came from (PeerKey.source), or "own"
    inline: bool = False  # inline PGP: only the armoured text of that part is covered
    certificate_pem: str = ""  # S/MIME: the signer's certificate, to harvest after a valid check
    chain_pem: list = field(default_factory=list)
    # S/MIME, once the chain verified: "good", "revoked" or "unknown" (secmail.revocation);
    # "" when not checked. "unknown" leaves a valid signature valid, with a note.
    revocation: str = ""

    @property
    def valid(self):
        return self.status is Status.VALID

    @property
    def description(self):
        return DESCRIPTIONS[self.status]


class Decryption(enum.Enum):
    NONE = "none"  # not encrypted
    DECRYPTED = "decrypted"
    LOCKED = "locked"  # encrypted to one of our keys, which is not unlocked in this session
    NO_KEY = "no-key"  # encrypted, but to no key we hold
    FAILED = "failed"  # our key, but the ciphertext does not open (damaged)
    NESTED_REFUSED = "nested-refused"  # an encrypted part inside an unencrypted message: not opened (EFAIL)


@dataclass
class MessageSecurity:
    """Everything secmail found in one message."""

    encrypted: bool = False
    scheme: str = ""  # of the encryption layer
    decryption: Decryption = Decryption.NONE
    signatures: list = field(default_factory=list)  # SignatureResult, outermost first
    content: bytes | None = None  # the displayable message (decrypted/unwrapped), full RFC 5322 bytes
    detail: str = ""
    key_parts: list = field(default_factory=list)  # webmail.message.Part of attached keys/certificates (offered for import)
    subject: str = ""  # the protected (encrypted) Subject of a decrypted message, if it had one

    @property
    def whole_signature(self):
        """The signature covering the whole displayed content, if any."""
        for signature in self.signatures:
            if signature.part == "" and not signature.inline:
                return signature
        return None

    @property
    def badge(self):
        """verified | invalid | partial | unsigned — decided here only.

        `partial` whenever a signature covers less than the whole content: the UI then marks
        the signed part alone and never shows the message as signed.
        """
        whole = self.whole_signature
        if whole is not None:
            return "verified" if whole.valid else "invalid"
        if self.signatures:
            return "partial"
        return "unsigned"
