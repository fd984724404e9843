"""Webmail tests: personas from tests/conftest.py (alice and bob have mailboxes, mallory
writes from outside), a signed-in client, and mail built and delivered for real."""
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from django.test import Client

from mailstore import actions as store
from tests.conftest import PASSWORD


def make_mail(subject="Hello", *, sender="Mallory <mallory@elsewhere.test>", to="alice@example.test",
              text="Hi there.", html=None, attachments=(), date=None, headers=()):
    """Bytes of a message built with the stdlib (CRLF line ends, as SMTP stores them)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    if date is not None:
        message["Date"] = format_datetime(date)
    for name, value in headers:
        message[name] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def deliver(account, raw, folder="INBOX", **placement):
    """Deliver raw bytes to the account's folder through the mail store; the Message."""
    recipient = store.Recipient(account, account.address, folder)
    [outcome] = store.deliver(raw, [recipient], return_path="mallory@elsewhere.test", **placement)
    assert outcome.error is None, outcome.error
    return outcome.message


@pytest.fixture
def client_for():
    def signed_in(account, **kwargs):
        client = Client(**kwargs)
        response = client.post("/login/", {"address": account.address, "password": PASSWORD})
        assert response.status_code == 302, response.content
        return client

    return signed_in


@pytest.fixture
def alice_client(alice, client_for):
    return client_for(alice)


def folder(account, name):
    from mailstore.models import Folder

    return Folder.objects.get(account=account, name=name)
