"""Delivery status notifications (RFC 3464 reports, RFC 3461 rules, RFC 6533 for UTF-8).

A DSN goes to the envelope sender, from the null sender, so a DSN that cannot be
delivered is never answered with another one. Recipients that asked for no
notification (NOTIFY=NEVER, or NOTIFY without FAILURE/DELAY) get none.
"""
import email.utils
import uuid

from django.conf import settings

from mta.headers import split_header

FAILED, DELAYED, DELIVERED, RELAYED = "failed", "delayed", "delivered", "relayed"
_NOTIFY_WORD = {FAILED: "FAILURE", DELAYED: "DELAY", DELIVERED: "SUCCESS", RELAYED: "SUCCESS"}


def wants(recipient, action):
    notify = {word.strip().upper() for word in recipient.notify.split(",") if word.strip()}
    if not notify:
        # RFC 3461 §4.1: without NOTIFY, failures and delays are reported, success is not.
        return action in (FAILED, DELAYED)
    return _NOTIFY_WORD[action] in notify


def _address_type(address):
    return f"utf-8; {address}" if not address.isascii() else f"rfc822; {address}"


def build(queued, recipients, *, action, original, now):
    """The bytes of a multipart/report DSN about `recipients` of `queued`."""
    hostname = settings.MAILSUITE_HOSTNAME
    boundary = f"=_dsn_{uuid.uuid4().hex}"
    utf8 = not original.isascii() or not queued.mail_from.isascii()
    date = email.utils.format_datetime(now)
    if action == FAILED:
        subject = "Undelivered Mail Returned to Sender"
        intro = (
            f"This is the mail system at {hostname}.\r\n\r\n"
            "Your message could not be delivered to one or more recipients.\r\n"
            "The reasons are given below.\r\n"
        )
    elif action in (DELIVERED, RELAYED):
        subject = "Successful Mail Delivery Report"
        intro = (
            f"This is the mail system at {hostname}.\r\n\r\n"
            + ("Your message was delivered to the recipients below.\r\n" if action == DELIVERED else
               "Your message was passed on to the recipients' mail systems, which will not send\r\n"
               "delivery reports of their own.\r\n")
        )
    else:
        until = email.utils.format_datetime(queued.expires_at) if queued.expires_at else "later"
        subject = "Delayed Mail (still being retried)"
        intro = (
            f"This is the mail system at {hostname}.\r\n\r\n"
            "Your message has not been delivered yet to the recipients below.\r\n"
            f"Delivery will be tried again until {until}; you need not send it again.\r\n"
        )
    lines = [intro, "\r\n"]
    for r in recipients:
        lines.append(f"<{r.address}>: {r.last_error or r.status or action}\r\n")
    human = "".join(lines)

    status = [f"Reporting-MTA: dns; {hostname}\r\n"]
    if queued.envid:
        status.append(f"Original-Envelope-Id: {queued.envid}\r\n")
    status.append(f"Arrival-Date: {email.utils.format_datetime(queued.created)}\r\n")
    for r in recipients:
        status.append("\r\n")
        if r.orcpt:
            status.append(f"Original-Recipient: {r.orcpt}\r\n")
        status.append(f"Final-Recipient: {_address_type(r.address)}\r\n")
        status.append(f"Action: {action}\r\n")
        default = {FAILED: "5.0.0", DELAYED: "4.0.0"}.get(action, "2.0.0")
        status.append(f"Status: {r.status or default}\r\n")
        if r.remote_mta:
            status.append(f"Remote-MTA: dns; {r.remote_mta.split('[')[0]}\r\n")
        if r.last_error:
            status.append(f"Diagnostic-Code: smtp; {' '.join(r.last_error.split())}\r\n")
        status.append(f"Last-Attempt-Date: {date}\r\n")
        if action == DELAYED and queued.expires_at:
            status.append(f"Will-Retry-Until: {email.utils.format_datetime(queued.expires_at)}\r\n")

    full = queued.ret == queued.Return.FULL
    if full:
        returned_type = "message/global" if utf8 else "message/rfc822"
        returned = original
    else:
        returned_type = "message/global-headers" if utf8 else "text/rfc822-headers"
        returned = split_header(original)[0]
    parts = [
        ("text/plain; charset=utf-8", human.encode("utf-8")),
        ("message/global-delivery-status" if utf8 else "message/delivery-status", "".join(status).encode("utf-8")),
        (returned_type, returned),
    ]
    header = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{queued.mail_from}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
    ).encode("utf-8")
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + content + (b"" if content.endswith(b"\r\n") else b"\r\n")
        for ctype, content in parts
    )
    return header + body + f"--{boundary}--\r\n".encode()
