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
            alice, acting_user=None, protocol="pop3", host="127.0.0.1", port=server.ports["pop3"], tls="none",
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
            alice, acting_user=None, protocol="pop3", host="127.0.0.1", port=server.ports["pop3"], tls="none",
            username="bob@example.test", password=PASSWORD, keep=False, local_folder="Archive",
        )
        assert fetching.fetch_external(external) == 2
    assert subjects(alice, "Archive") == ["one", "two"]
    assert Message.objects.filter(folder__account=bob).count() == 0


def test_it_fetches_imap_folders_by_uid(remote_mail, alice, bob):
    append(bob, "Sent", raw("sent"))
    with imap_servers() as server:
        external = fetching.add_external_account(
            alice, acting_user=None, protocol="imap", host="127.0.0.1", port=server.ports["imaps"], tls="implicit",
            verify_certificate=False, username="bob@example.test", password=PASSWORD, remote_folders="INBOX\nSent",
        )
        assert fetching.fetch_external(external) == 3
        assert fetching.fetch_external(external) == 0
    assert sorted(subjects(alice)) == ["one", "sent", "two"]


def test_failures_are_shown_and_back_off(remote_mail, alice):
    with pop3_servers() as server:
        external = fetching.add_external_account(
            alice, acting_user=None, protocol="pop3", host="127.0.0.1", port=server.ports["pop3"], tls="none",
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
        fetching.add_external_account(
            alice, acting_user=None, protocol="imap", host="h", username="u", password="p", local_folder="Nope")
    assert not ExternalAccount.objects.exists()


def test_a_refused_change_changes_and_records_nothing(alice):
    from accounts.models import AuditEntry

    external = fetching.add_external_account(
        alice, acting_user=None, protocol="pop3", host="pop.old.example", username="a", password="p")
    for change, field in (({"local_folder": "Nope"}, "local_folder"), ({"port": 0}, "port"), ({"tls": "x"}, "tls"),
                          ({"host": "", "keep": False}, "host"), ({"protocol": "smtp"}, "protocol")):
        with pytest.raises(fetching.ExternalAccountError) as refused:
            fetching.update_external_account(external, acting_user=None, **change)
        assert refused.value.field == field
    with pytest.raises(TypeError, match="not a setting of an external account: account"):
        fetching.update_external_account(external, acting_user=None, account=alice)
    stored = ExternalAccount.objects.get()
    assert (stored.host, stored.keep, stored.port, stored.local_folder) == ("pop.old.example", True, 995, "INBOX")
    assert list(AuditEntry.objects.filter(object_type="external").values_list("action", flat=True)) == ["external.add"]


def test_a_local_folder_removed_since_does_not_stop_other_changes(alice):
    from accounts.models import AuditEntry

    external = fetching.add_external_account(
        alice, acting_user=None, protocol="imap", host="imap.old.example", username="a", password="p")
    ExternalAccount.objects.filter(pk=external.pk).update(local_folder="Gone")
    external.refresh_from_db()
    fetching.update_external_account(external, acting_user=None, enabled=False, tls="none", port=None)
    stored = ExternalAccount.objects.get()
    assert (stored.enabled, stored.tls, stored.port, stored.local_folder) == (False, "none", 143, "Gone")
    [entry] = AuditEntry.objects.filter(object_type="external", action="external.change")
    assert (entry.action, entry.actor_name, entry.before["port"], entry.after["port"]) == ("external.change", "system",
                                                                                          993, 143)


def test_the_cli_adds_and_removes_an_external_account_with_an_audit_entry_each(alice):
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from accounts.models import AuditEntry

    def mail(*args, stdin=""):
        out = io.StringIO()
        call_command("mail", *args, stdin=io.StringIO(stdin), stdout=out)
        return out.getvalue()

    with pytest.raises(CommandError, match="folder Nope does not exist"):
        mail("fetch-add", "alice@example.test", "--protocol", "imap", "--host", "imap.old.example", "--user", "a",
             "--password-stdin", "--folder", "Nope", stdin="old secret\n")
    assert not AuditEntry.objects.filter(object_type="external").exists()

    shown = mail("fetch-add", "alice@example.test", "--protocol", "imap", "--host", "imap.old.example", "--user", "a",
                 "--password-stdin", "--remote-folder", "Work", "--delete", stdin="old secret\n")
    external = ExternalAccount.objects.get()
    assert shown == f"external account {external.pk}: a@imap.old.example:993 (imap) into INBOX\n"
    assert mail("fetch-remove", str(external.pk)) == f"removed external account {external.pk}\n"
    assert not ExternalAccount.objects.exists()

    entries = list(AuditEntry.objects.filter(object_type="external").order_by("id"))
    assert [(e.action, e.actor_name, e.actor, e.via, e.object_repr, e.domain_name) for e in entries] == [
        (action, "system", None, "cli", "a@imap.old.example for alice@example.test", "example.test")
        for action in ("external.add", "external.remove")
    ]
    assert (entries[0].before, entries[1].after) == (None, None)
    assert entries[0].after == entries[1].before == {
        "protocol": "imap", "host": "imap.old.example", "port": 993, "tls": "implicit", "verify_certificate": True,
        "username": "a", "remote_folders": "Work", "local_folder": "INBOX", "keep": False, "enabled": True,
    }
