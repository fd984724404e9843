"""Composing: building a message from the compose form, sending it through the same
submission policy as SMTP AUTH, drafts, and the starting points of reply and forward.

send() is what the webmail has instead of an SMTP loopback connection. It makes the
calls mta.smtpd's SubmissionHandler makes, in the same order: each recipient through
mta.recipients.check_recipient as an authenticated client, the attachments and the virus
scan (antispam.attachments), the whole message through
mta.submission.check_submission (identities, sending limits, Date/Message-ID, DKIM),
then mta.inbound.accept_message, which answers 250 only once every local copy and the
outbound queue entry are committed. Only then is the copy filed in Sent.
"""
import email.utils
import html
import logging
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP

import nh3
from django.conf import settings

from antispam import attachments
from mailstore import actions as store
from mailstore.actions import queue_id
from mailstore.storage import new_blob_name
from mta import inbound
from mta.headers import received_field
from mta.recipients import Client, check_recipient
from mta.submission import Login, check_submission
from webmail import mailbox
from webmail.message import Reading, safe_filename

log = logging.getLogger(__name__)


class SendRefused(Exception):
    """The message was not sent; the text (an SMTP-style reply) says why."""


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Draft:
    """What the compose form holds."""

    from_address: str
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    html: bool = False  # the body is also sent as HTML (a text/plain alternative goes with it)
    attachments: list = field(default_factory=list)  # [Attachment]
    in_reply_to: str = ""
    references: str = ""
    display_name: str = ""


def addresses(text):
    """The addresses of a To/Cc/Bcc field as typed ("A <a@x>, b@y")."""
    return [address for _, address in email.utils.getaddresses([text]) if address]


def recipients_of(draft):
    seen, result = set(), []
    for address in addresses(draft.to) + addresses(draft.cc) + addresses(draft.bcc):
        if address.lower() not in seen:
            seen.add(address.lower())
            result.append(address)
    return result


def text_to_html(text):
    """The plain body as simple HTML: escaped, paragraphs kept, quoted lines as blockquote-ish."""
    lines = []
    for line in text.split("\n"):
        lines.append(html.escape(line) or "&nbsp;")
    return "<!DOCTYPE html><html><body><div>" + "<br>\n".join(lines) + "</div></body></html>"


def build(draft, *, include_bcc, message_id=None, date=None):
    """The message bytes (CRLF) for `draft`."""
    message = EmailMessage(policy=SMTP)
    message["From"] = email.utils.formataddr((draft.display_name, draft.from_address)) if draft.display_name else draft.from_address
    if draft.to.strip():
        message["To"] = draft.to.strip()
    if draft.cc.strip():
        message["Cc"] = draft.cc.strip()
    if include_bcc and draft.bcc.strip():
        message["Bcc"] = draft.bcc.strip()
    message["Subject"] = draft.subject
    message["Date"] = date or email.utils.formatdate(localtime=False)
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@{settings.MAILSUITE_HOSTNAME}>"
    if draft.in_reply_to:
        message["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        message["References"] = draft.references
    message["MIME-Version"] = "1.0"
    message.set_content(draft.body.replace("\r\n", "\n"))
    if draft.html:
        message.add_alternative(text_to_html(draft.body.replace("\r\n", "\n")), subtype="html")
    for attachment in draft.attachments:
        if attachment.content_type.lower() == "message/rfc822" and _attach_message(message, attachment):
            continue
        maintype, _, subtype = attachment.content_type.partition("/")
        if not maintype or not subtype or "/" in subtype:
            maintype, subtype = "application", "octet-stream"
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return message.as_bytes()


def _attach_message(message, attachment):
    """Attach a whole message as message/rfc822, which must stay 7bit/8bit (RFC 2046
    §5.2.1: no base64); False if it does not parse, so it goes as bytes instead."""
    try:
        inner = email.message_from_bytes(attachment.data, policy=SMTP)
        message.add_attachment(inner, filename=attachment.filename)
    except Exception:  # noqa: BLE001 - a malformed message is attached as plain bytes
        log.info("forwarded message did not parse; attached as bytes", exc_info=True)
        return False
    return True


def message_attachment(message):
    """The Attachment forwarding `message` whole (RFC 2046 §5.2.1)."""
    name = safe_filename((message.subject or "message")[:80]) or "message"
    return Attachment(f"{name}.eml", "message/rfc822", Reading(message).raw())


def check_size(draft):
    """SendRefused when the attachments alone pass the server's message size limit."""
    total = sum(len(a.data) for a in draft.attachments)
    # Base64 grows the bytes by a third.
    if total * 4 // 3 > settings.MAILSUITE_MESSAGE_SIZE_LIMIT:
        raise SendRefused("552 5.3.4 The attachments are larger than the message size limit")


def send(account, draft, *, client_ip, replaces=None, protect=None):
    """Submit `draft` as `account`; returns the Message filed in Sent (or None if the
    account has no Sent folder). Raises SendRefused. `replaces` is a (folder, uid) draft
    expunged once the message is sent. `protect(raw) -> raw` signs/encrypts both copies (secmail.compose)."""
    recipients = recipients_of(draft)
    if not recipients:
        raise SendRefused("554 5.5.1 No recipients")
    if len(recipients) > 100:
        raise SendRefused("452 4.5.3 Too many recipients")
    check_size(draft)
    client = Client(ip=client_ip or "127.0.0.1", authenticated=account.address)
    resolutions = []
    for address in recipients:
        decision = check_recipient(address, client=client)
        if not decision.accepted:
            raise SendRefused(decision.reply)
        resolutions.append(decision.resolution)
    message_id = f"<{uuid.uuid4().hex}@{settings.MAILSUITE_HOSTNAME}>"
    date = email.utils.formatdate(localtime=False)
    # Bcc must not reach recipients (RFC 5322 §3.6.3); the Sent copy keeps it.
    raw = build(draft, include_bcc=False, message_id=message_id, date=date)
    # Programs and viruses, as SMTP submission checks them (before encryption hides them).
    decision = attachments.check_outgoing(raw, sender=draft.from_address, resolutions=resolutions)
    if decision.refusal:
        raise SendRefused(decision.refusal)
    if protect is not None:
        raw = protect(raw)
    if len(raw) > settings.MAILSUITE_MESSAGE_SIZE_LIMIT:
        raise SendRefused("552 5.3.4 Message too big")
    login = Login(account.pk, account.address)
    content, refusal = check_submission(
        raw, login=login, mail_from=draft.from_address, recipient_count=len(recipients),
        hostname=settings.MAILSUITE_HOSTNAME,
    )
    if refusal:
        raise SendRefused(refusal)
    blob_name = new_blob_name()
    trace = received_field(
        helo="webmail", client_ip=client.ip, hostname=settings.MAILSUITE_HOSTNAME, protocol="HTTP",
        queue_id=queue_id(blob_name), recipient=recipients[0] if len(recipients) == 1 else None,
    )
    reply = inbound.accept_message(
        trace + content, mail_from=draft.from_address, resolutions=resolutions, client_ip=client.ip,
        blob_name=blob_name,
    )
    if not reply.startswith("250"):
        raise SendRefused(reply)
    log.info("webmail sent %s for %s to %d recipients", message_id, account.address, len(recipients))
    from webmail.actions import record_correspondents

    record_correspondents(account, email.utils.getaddresses([draft.to, draft.cc, draft.bcc]))
    sent = None
    sent_folder = mailbox.special_folder(account, mailbox.SENT)
    if sent_folder is not None:
        copy = build(draft, include_bcc=True, message_id=message_id, date=date)
        if protect is not None:
            copy = protect(copy)
        try:
            sent = store.append(account, sent_folder.name, copy, flags=["\\Seen"])
        except store.MailstoreError as error:  # sent all the same: the user must not send twice
            log.warning("no Sent copy of %s for %s: %s", message_id, account.address, error)
    if replaces is not None:
        discard_draft(*replaces)
    return sent


def save_draft(account, draft, *, replaces=None):
    """File `draft` in Drafts (\\Draft, \\Seen); the draft it replaces is expunged.
    Returns the new Message."""
    drafts = mailbox.special_folder(account, mailbox.DRAFTS)
    if drafts is None:
        drafts = store.create_folder(account, "Drafts", special_use=mailbox.DRAFTS)
    check_size(draft)
    message = store.append(account, drafts.name, build(draft, include_bcc=True), flags=["\\Draft", "\\Seen"])
    if replaces is not None:
        discard_draft(*replaces)
    return message


def discard_draft(folder, uid):
    """Expunge an old copy of a draft; a draft already gone (another client) is fine."""
    if folder.special_use == mailbox.DRAFTS or folder.name == "Drafts":
        store.expunge(folder, [uid])


# Starting points: reply, reply all, forward, resume a draft --------------------------------


def _plain_text(reading):
    pieces = reading.body()
    plain = [p.text for p in pieces if p.kind == "plain"]
    if plain:
        return "\n".join(plain)
    markup = "\n".join(p.text for p in pieces if p.kind == "html")
    text = nh3.clean(markup.replace("<br", "\n<br").replace("</p>", "</p>\n"), tags=set())
    return html.unescape(text)


def quote(text):
    return "\n".join(("> " + line) if line and not line.startswith(">") else (">" + line) for line in text.splitlines())


def forward_subject(subject):
    return _prefixed("Fwd:", subject)


def _prefixed(prefix, subject):
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}"


def _message_id(reading):
    value = reading.header("Message-ID").strip()
    return value if value.startswith("<") and value.endswith(">") else ""


def reply_draft(account, identities, message, *, everyone, attribution, reading=None):
    """A Draft answering `message` (RFC 5322 §3.6.4): recipients, subject, threading
    fields and the quoted body. `attribution` is a format string with {date} and {sender}.
    `reading`: the message as read (secmail: decrypted, with its protected subject)."""
    reading = reading or Reading(message)
    reply_to = reading.header("Reply-To") or reading.header("From")
    to = addresses(reply_to)
    cc = []
    own = {address.lower() for address in identities}
    if everyone:
        for address in addresses(reading.header("To")) + addresses(reading.header("Cc")):
            if address.lower() not in own and address.lower() not in {a.lower() for a in to + cc}:
                cc.append(address)
    # Replying to one's own sent message: answer its recipients instead.
    if all(address.lower() in own for address in to):
        to = [a for a in addresses(reading.header("To")) if a.lower() not in own] or to
    parent = _message_id(reading)
    references = " ".join(reading.header("References").split() + ([parent] if parent else []))
    sender = reading.header("From")
    body = "\n\n" + attribution.format(date=reading.header("Date"), sender=sender) + "\n" + quote(_plain_text(reading)) + "\n"
    return Draft(
        from_address=_identity_for(reading, identities, account),
        to=", ".join(to), cc=", ".join(cc), subject=_prefixed("Re:", reading.header("Subject")),
        body=body, in_reply_to=parent, references=references,
    )


def forward_draft(account, identities, message, *, heading, labels, reading=None):
    """A Draft forwarding `message` inline; its attachments are kept (see kept_parts).
    `reading`: the message as read (secmail: decrypted, with its protected subject)."""
    reading = reading or Reading(message)
    lines = [heading]
    for name in ("From", "Date", "Subject", "To", "Cc"):
        value = reading.header(name)
        if value:
            lines.append(f"{labels.get(name, name)}: {value}")
    body = "\n\n" + "\n".join(lines) + "\n\n" + _plain_text(reading) + "\n"
    return Draft(
        from_address=_identity_for(reading, identities, account),
        subject=_prefixed("Fwd:", reading.header("Subject")), body=body,
    )


def resume_draft(account, message):
    """The Draft stored in a Drafts message."""
    reading = Reading(message)
    senders = addresses(reading.header("From"))
    return Draft(
        from_address=senders[0] if senders else account.address,
        to=reading.header("To"), cc=reading.header("Cc"), bcc=reading.header("Bcc"),
        # set_content() ended the text with a newline the user did not type.
        subject=reading.header("Subject"), body=_plain_text(reading).removesuffix("\n"),
        in_reply_to=reading.header("In-Reply-To").strip(), references=reading.header("References").strip(),
    )


def kept_parts(message):
    """The attachments of `message` a forward or a resumed draft carries on."""
    reading = Reading(message)
    return [(part, reading) for part in reading.attachments()]


def part_attachment(message, number):
    """The Attachment for part `number` (a tuple) of `message`, or None."""
    reading = Reading(message)
    part = reading.part(number)
    if part is None or part.number in reading.body_numbers:
        return None
    return Attachment(part.filename or "attachment", part.content_type, reading.part_bytes(part))


def _identity_for(reading, identities, account):
    """The identity the answered mail was addressed to, else the account's own address."""
    wanted = {a.lower() for a in addresses(reading.header("To")) + addresses(reading.header("Cc"))}
    for identity in identities:
        if identity.lower() in wanted:
            return identity
    return account.address


def identities_of(account):
    """The addresses the user may pick as From: their own, the aliases delivering to
    them, the admin's grants (accounts.identities decides; this lists)."""
    from accounts.identities import may_send_as
    from accounts.models import Alias

    found = [account.address]
    for grant in account.send_as_grants.values_list("address", flat=True):
        if grant not in found:
            found.append(grant)
    for alias in Alias.objects.filter(targets__address=account.address).select_related("domain")[:200]:
        address = alias.address
        if not alias.is_catchall and address not in found and may_send_as(account, address):
            found.append(address)
    return found
