"""The operator admin's lists with thousands of rows of every kind: a few queries a page,
search and filters that stay usable. The rows are made once for this module
(tests.conftest.rows_for_the_module): every test here only reads them."""
from types import SimpleNamespace

import pytest
from django.utils import timezone

from accounts import actions
from accounts.models import Account, Alias, AliasTarget, Domain, DomainAlias, Redirect
from mailstore.models import Blob, Folder, Message
from mta.models import QueuedMessage, QueuedRecipient
from tests.accounts.test_admin import CROWD, GOOD_PASSWORD, GiB, add_accounts, fast_hashing, results, url  # noqa: F401
from tests.conftest import rows_for_the_module

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def crowd(django_db_setup, django_db_blocker):
    """Thousands of rows of every kind the admin lists, around alice's mailbox in example.test."""
    with rows_for_the_module(django_db_blocker):
        example = actions.create_domain("example.test")
        alice = actions.create_account("alice@example.test", password=GOOD_PASSWORD, quota=GiB, display_name="Alice")
        add_accounts(example, CROWD)
        Domain.objects.bulk_create(Domain(name=f"d{i}.example") for i in range(CROWD))
        DomainAlias.objects.bulk_create(DomainAlias(name=f"alias{i}.example", target=example) for i in range(CROWD))
        aliases = Alias.objects.bulk_create(Alias(domain=example, localpart=f"list{i}") for i in range(CROWD))
        AliasTarget.objects.bulk_create(AliasTarget(alias=alias, address="alice@example.test") for alias in aliases)
        Redirect.objects.bulk_create(
            Redirect(domain=example, localpart=f"gone{i}", target=f"gone{i}@elsewhere.example") for i in range(CROWD)
        )
        accounts = Account.objects.filter(localpart__startswith="user")
        Folder.objects.bulk_create(Folder(account=account, name="INBOX", uidvalidity=1) for account in accounts)
        blob = Blob.objects.create(name="test/blob", size=1234, sha256="0" * 64, preview="Hello there")
        inbox = Folder.objects.get(account=alice, name="INBOX")
        now = timezone.now()
        Message.objects.bulk_create(
            Message(
                folder=inbox,
                uid=i + 1,
                modseq=1,
                internaldate=now,
                size=1234,
                blob=blob,
                subject=f"Message {i}",
                from_address="mallory@elsewhere.example",
                seen=i % 2 == 0,
            )
            for i in range(CROWD)
        )
        queued = QueuedMessage.objects.bulk_create(
            QueuedMessage(blob=blob, mail_from="alice@example.test", queue_id=f"Q{i:06}") for i in range(CROWD)
        )
        QueuedRecipient.objects.bulk_create(
            QueuedRecipient(message=message, address=f"r{n}@elsewhere.example")
            for message in queued
            for n in range(2)
        )
        yield SimpleNamespace(example=example, alice=alice)


# Lists ------------------------------------------------------------------------------

CHANGELISTS = [
    "accounts_domain_changelist",
    "accounts_domainalias_changelist",
    "accounts_account_changelist",
    "accounts_alias_changelist",
    "accounts_redirect_changelist",
    "mailstore_folder_changelist",
    "mailstore_message_changelist",
    "mta_queuedmessage_changelist",
]


@pytest.mark.parametrize("name", CHANGELISTS)
def test_it_lists_thousands_of_rows_in_a_few_queries(admin_client, crowd, name, django_assert_max_num_queries):
    admin_client.get(url(name))  # warm the session and content types
    with django_assert_max_num_queries(8):
        response = admin_client.get(url(name))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 100


def test_it_searches_accounts_by_local_part_and_domain(admin_client, crowd):
    other = actions.create_domain("other.test")
    actions.create_account("user00042@other.test", password=GOOD_PASSWORD)
    assert other.accounts.count() == 1

    def search(q):
        return results(admin_client.get(url("accounts_account_changelist"), {"q": q}))

    assert search("user00042@example") == ["user00042@example.test"]
    assert search("user00042") == ["user00042@example.test", "user00042@other.test"]
    assert search("@other.test") == ["user00042@other.test"]
    assert search("alice") == ["alice@example.test"]
    assert search("Alice") == ["alice@example.test"]  # display name
    assert search("nobody@") == []


def test_it_shows_messages_read_only(admin_client, crowd):
    message = Message.objects.filter(folder__account=crowd.alice).first()
    page = admin_client.get(url("mailstore_message_change", message.pk)).content.decode()
    assert "Hello there" in page and message.subject in page
    assert admin_client.get(url("mailstore_message_add")).status_code == 403
    assert admin_client.post(url("mailstore_message_delete", message.pk), {"post": "yes"}).status_code == 403
    assert Message.objects.filter(pk=message.pk).exists()


def test_it_shows_message_flags_in_the_list(admin_client, crowd):
    html = admin_client.get(url("mailstore_message_changelist"), {"seen__exact": "1"}).content.decode()
    assert "\\Seen" in html


def test_it_shows_a_queued_message_with_its_recipients(admin_client, crowd):
    queued = QueuedMessage.objects.first()
    response = admin_client.get(url("mta_queuedmessage_change", queued.pk))
    page = response.content.decode()
    assert response.status_code == 200
    assert "r0@elsewhere.example" in page and "r1@elsewhere.example" in page
    assert admin_client.get(url("mta_queuedmessage_add")).status_code == 403
    listed = admin_client.get(url("mta_queuedmessage_changelist"), {"q": "r1@elsewhere.example"})
    assert listed.context["cl"].result_list[0].recipient_count == 2
