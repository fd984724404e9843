"""Errors the account actions raise; each message is one line fit for a user or operator."""


class AccountsError(Exception):
    """Base class: a request about domains/accounts/aliases that cannot be carried out."""


class InvalidInput(AccountsError):
    pass


class NotFound(AccountsError):
    pass


class UnknownAddress(NotFound):
    """The domain is there (and visible), but no account, alias or redirect has the address."""


class Conflict(AccountsError):
    pass


class AliasLoop(AccountsError):
    pass


class Forbidden(AccountsError):
    """The acting user may not do this at all (say a domain admin adding a domain).

    Objects of another tenant are NotFound instead, worded as if they did not exist."""


class LimitExceeded(AccountsError):
    """A change would take a domain past a limit a superadmin set (Domain.max_*)."""


class UnknownRecipient(AccountsError):
    """No mailbox, alias or redirect claims the address (SMTP 550 5.1.1)."""


class DisabledRecipient(AccountsError):
    """The address exists but its account or domain is disabled (SMTP 550 5.2.1)."""


class NotLocal(AccountsError):
    """The address is in a domain this server does not serve."""


class ExpansionTooLarge(AccountsError):
    """An alias expands to more addresses than we are willing to deliver to at once."""


class LoginThrottled(AccountsError):
    """Too many failed logins from this IP or for this address: refused without a password
    check until the block ends (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]).

    `retry_after` is the whole number of seconds (at least 1) until the block ends;
    `scope` is "ip" or "account", for logs. The message names neither.
    """

    def __init__(self, retry_after, scope):
        self.retry_after = retry_after
        self.scope = scope
        super().__init__(f"Too many failed logins; try again in {retry_after} seconds")


class SendLimitExceeded(AccountsError):
    """An account has sent as much as it may for now (SMTP 451 4.7.1).

    `limit_name` is "messages_per_hour" or "recipients_per_day", `limit` the number
    allowed in the window and `used` how many the window already holds. The message
    is one ASCII line fit for the SMTP reply text.
    """

    def __init__(self, limit_name, limit, used):
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        unit = "messages per hour" if limit_name == "messages_per_hour" else "recipients per day"
        super().__init__(f"Sending limit reached: at most {limit} {unit}; try again later")
