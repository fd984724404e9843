"""Errors the account actions raise; each message is one line fit for a user or operator."""


class AccountsError(Exception):
    """Base class: a request about domains/accounts/aliases that cannot be carried out."""


class InvalidInput(AccountsError):
    pass


class NotFound(AccountsError):
    pass


class Conflict(AccountsError):
    pass


class AliasLoop(AccountsError):
    pass


class UnknownRecipient(AccountsError):
    """No mailbox, alias or redirect claims the address (SMTP 550 5.1.1)."""


class DisabledRecipient(AccountsError):
    """The address exists but its account or domain is disabled (SMTP 550 5.2.1)."""


class NotLocal(AccountsError):
    """The address is in a domain this server does not serve."""


class ExpansionTooLarge(AccountsError):
    """An alias expands to more addresses than we are willing to deliver to at once."""
