"""Vacation replies (RFC 5230) and the rules of automatic responses (RFC 3834). Pure.

    refusal(message, mail_from=…, own_addresses=…, vacation=…) -> reason or None
    build_reply(message, vacation, …) -> bytes

Whether one was sent to this sender within :days is the caller's (sieve.delivery,
with sieve.actions.record_vacation_reply); everything else that decides "answer or
not" is here, so it can be checked in a table.
"""
import email.utils
import re
import uuid
from email.header import Header

from sieve.message import MessageView

MIN_DAYS, MAX_DAYS = 1, 365  # RFC 5230 §4.1 lets the implementation bound :days

# RFC 5230 §4.5: senders that are lists or robots.
_ROBOT_LOCALPART = re.compile(r"(owner-.*|.*-request|mailer-daemon|postmaster|listserv|majordomo|mailer|noreply|no-reply|bounce[s]?)", re.IGNORECASE)
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")  # RFC 5230 §4.5
_LIST_FIELDS = ("list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive")


def clamp_days(days):
    return max(MIN_DAYS, min(MAX_DAYS, days))


def refusal(message: MessageView, *, mail_from, own_addresses, vacation_addresses=()):
    """Why no vacation reply may go to this message, or None when one may.

    `own_addresses` are the recipient's addresses (its account, the envelope recipient);
    `vacation_addresses` those the script named with :addresses (RFC 5230 §4.5).
    """
    if not mail_from:
        return "the sender is <> (a bounce or an automatic message)"  # RFC 5230 §4.5, RFC 3834 §2
    auto = [v.split(";", 1)[0].strip().lower() for v in message.values("auto-submitted")]
    if any(value != "no" for value in auto):
        return "Auto-Submitted says the message was sent automatically"  # RFC 3834 §2, §5
    if any(v.strip().lower() in ("bulk", "list", "junk") for v in message.values("precedence")):
        return "Precedence says bulk, list or junk mail"  # RFC 3834 §2
    if any(message.has(name) for name in _LIST_FIELDS):
        return "the message comes from a mailing list (List-* fields)"  # RFC 2369, RFC 2919
    if message.has("x-auto-response-suppress") and any(
        w.strip().lower() in ("oof", "all", "autoreply") for v in message.values("x-auto-response-suppress") for w in v.split(",")
    ):
        return "the sender asked for no automatic replies"
    own = {a.lower() for a in (*own_addresses, *vacation_addresses) if a}
    sender = mail_from.lower()
    if sender in own:
        return "the sender is the recipient"  # RFC 5230 §4.5
    if _ROBOT_LOCALPART.fullmatch(sender.rpartition("@")[0]):
        return "the sender is a list or robot address"  # RFC 5230 §4.5
    named = {
        address.lower()
        for name in _RECIPIENT_FIELDS
        for value in message.values(name)
        for address in message.addresses(value)
    }
    if not named & own:
        return "the recipient is not named in To, Cc or Bcc"  # RFC 5230 §4.5
    return None


def _encode_header(text):
    text = " ".join(text.split())
    if text.isascii():
        return text
    return Header(text, "utf-8").encode()


def subject_for(message, vacation):
    """:subject (RFC 5230 §4.3), else "Auto: " and the original subject (RFC 3834 §3.1.5)."""
    if vacation.subject is not None:
        return vacation.subject
    original = (message.values("subject") or [""])[0]
    return f"Auto: {original}" if original else "Automatic reply"


def build_reply(message: MessageView, vacation, *, to, from_address, hostname, now):
    """The bytes of the reply to `to` (the envelope sender; RFC 5230 §5.2/§5.6)."""
    fields = [
        ("From", _encode_header(vacation.from_address or from_address)),  # RFC 5230 §5.5
        ("To", f"<{to}>"),
        ("Subject", _encode_header(subject_for(message, vacation))),
        ("Date", email.utils.format_datetime(now)),
        ("Message-ID", f"<{uuid.uuid4().hex}@{hostname}>"),
        ("Auto-Submitted", "auto-replied (vacation)"),  # RFC 3834 §5, RFC 5230 §5.7
        ("Precedence", "bulk"),  # what older responders look at
    ]
    original_id = (message.values("message-id") or [""])[0].strip()
    if original_id:
        # RFC 5230 §5.8, RFC 3834 §3.1.4
        references = " ".join((message.values("references") or [""])[0].split()[-20:] + [original_id])
        fields += [("In-Reply-To", original_id), ("References", references.strip())]
    fields.append(("MIME-Version", "1.0"))
    header = "".join(f"{name}: {value}\r\n" for name, value in fields)
    reason = vacation.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if vacation.mime:
        # RFC 5230 §4.4: the reason is a MIME entity, its own header fields first.
        body = reason if reason.endswith("\r\n") else reason + "\r\n"
        return (header + body).encode("utf-8")
    body = reason if reason.endswith("\r\n") else reason + "\r\n"
    encoding = "7bit" if body.isascii() else "8bit"
    return (
        header
        + "Content-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
        + body
    ).encode("utf-8")
