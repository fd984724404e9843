"""Errors the secmail actions raise; each message is one line fit for the user."""

from django.utils.translation import gettext


class SecmailError(Exception):
    """Base class: a key or message-security request that cannot be carried out."""


class InvalidInput(SecmailError):
    """A key, certificate, passphrase or message that is not what it claims to be."""


class NotFound(SecmailError):
    pass


class Conflict(SecmailError):
    pass


class BadPassphrase(SecmailError):
    """The passphrase does not open the sealed private key (or the PKCS#12 file)."""


class Locked(SecmailError):
    """The operation needs a private key that is not unlocked in this session."""


class PrivateKeysDisabled(SecmailError):
    """The operator turned server-side private keys off (MAILSUITE_SERVER_PRIVATE_KEYS=off)."""


class NoKeyFor(SecmailError):
    """Encryption was asked for but some recipients have no usable certificate or key."""

    def __init__(self, addresses):
        self.addresses = sorted(addresses)
        super().__init__(gettext("no encryption key for %(addresses)s") % {"addresses": ", ".join(self.addresses)})


class CryptoFailure(SecmailError):
    """The cryptographic operation itself failed (corrupt data, not for our key, …)."""
