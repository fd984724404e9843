"""External accounts (MRA): bob's mailbox on our own POP3 and IMAP servers is the remote,
alice fetches from it."""
from datetime import timedelta

import pytest

from mailstore.actions import append
from mailstore.models import Message
from migration import fetching
from migration.models import ExternalAccount
from tests.conftest import PASSWORD
from tests.imap.conftest import imap_servers
from tests.pop3.conftest import pop3_servers


def raw(subject):
    return f"From: carol@elsewhere.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nHi.\r\n".encode()


@pytest.fixture
def remote_mail(transactional_db, settings, alice, bob):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    for subject in ("one", "two"):
        append(bob, "INBOX", raw(subject))


def subjects(account, folder="INBOX"):
    return list(Message.objects.filter(folder__account=account, folder__name=folder).order_by("uid").values_list("subject", flat=True))


def test_it_fetches_new_pop3_mail_once_and_keeps_it(remote_mail, alice, bob):
    with pop3_servers() as server:
        external = fetching.add_external_account(
            alice, protocol="pop3", host="127.0.0.1", port=server.ports["pop3"], tls="none",
            username="bob@example.test", password=PASSWORD,
        )
        assert external.password.startswith("fernet:")
        assert fetching.fetch_external(external) == 2
        append(bob, "INBOX", raw("three"))
        assert fetching.fetch_external(external) == 1
    assert subjects(alice) == ["one", "two", "three"]
    assert Message.objects.filter(folder__account=bob).count() == 3
    external.refresh_from_db()
    assert (external.failures, external.last_error, external.last_success is not None) == (0, "", True)


def test_it_deletes_fetched_pop3_mail_when_asked(remote_mail, alice, bob):
    with pop3_servers() as server:
        external = fetching.add_external_account(
            alice, protocol="pop3", host="127.0.0.1", port=server.ports["pop3"], tls="none",
            username="bob@example.test", password=PASSWORD, keep=False, local_folder="Archive",
        )
        assert fetching.fetch_external(external) == 2
    assert subjects(alice, "Archive") == ["one", "two"]
    assert Message.objects.filter(folder__account=bob).count() == 0


def test_it_fetches_imap_folders_by_uid(remote_mail, alice, bob):
    append(bob, "Sent", raw("sent"))
    with imap_servers() as server:
        external = fetching.add_external_account(
            alice, protocol="imap", host="127.0.0.1", port=server.ports["imaps"], tls="implicit",
            verify_certificate=False, username="bob@example.test", password=PASSWORD, remote_folders="INBOX\nSent",
        )
        assert fetching.fetch_external(external) == 3
        assert fetching.fetch_external(external) == 0
    assert sorted(subjects(alice)) == ["one", "sent", "two"]


def test_failures_are_shown_and_back_off(remote_mail, alice):
    with pop3_servers() as server:
        external = fetching.add_external_account(
            alice, protocol="pop3", host="127.0.0.1", port=server.ports["pop3"], tls="none",
            username="bob@example.test", password="wrong",
        )
        fetching.fetch_external(external)
        fetching.fetch_external(external)
    assert "refused the login" in external.last_error
    assert external.failures == 2
    assert external.next_attempt - external.last_attempt == timedelta(minutes=10)
    assert fetching.fetch_due() == {}  # not due yet


def test_it_refuses_a_missing_local_folder(alice):
    with pytest.raises(fetching.ExternalAccountError, match="folder Nope does not exist"):
        fetching.add_external_account(alice, protocol="imap", host="h", username="u", password="p", local_folder="Nope")
    assert not ExternalAccount.objects.exists()
