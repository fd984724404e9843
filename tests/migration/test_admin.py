"""The Django admin's external accounts: the password is write-only, stored encrypted as the
webmail and the CLI store it, and never sent back to the browser."""
import json
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEntry
from mailsuite.lib import secrets
from migration import fetching
from migration.models import ExternalAccount

SECRET = "s3cret-Pa55word"


def form_data(alice, **changes):
    data = {
        "account": alice.pk, "protocol": "imap", "host": "imap.old.example", "port": 993, "tls": "implicit",
        "verify_certificate": "on", "username": "alice@old.example", "new_password": SECRET, "remote_folders": "",
        "local_folder": "INBOX", "keep": "on", "enabled": "on",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_it_adds_an_external_account_with_its_password_encrypted(admin_client, alice):
    page = admin_client.get(reverse("admin:migration_externalaccount_add"))
    assert page.status_code == 200
    assert 'type="password" name="new_password"' in page.content.decode()

    response = admin_client.post(reverse("admin:migration_externalaccount_add"), form_data(alice))
    assert response.status_code == 302, response.content.decode()[:2000]
    external = ExternalAccount.objects.get()
    assert external.password.startswith(secrets.PREFIX) and SECRET not in external.password
    assert secrets.decrypt(external.password) == SECRET


def test_an_external_account_cannot_be_added_without_a_password(admin_client, alice):
    response = admin_client.post(reverse("admin:migration_externalaccount_add"), form_data(alice, new_password=""))
    assert response.status_code == 200
    assert "An external account needs the remote password." in response.content.decode()
    assert not ExternalAccount.objects.exists()


def test_the_password_is_never_shown_and_kept_unless_a_new_one_is_typed(admin_client, alice):
    external = fetching.add_external_account(
        alice, acting_user=None, protocol="imap", host="imap.old.example", username="alice@old.example",
        password=SECRET)
    stored = external.password
    ExternalAccount.objects.filter(pk=external.pk).update(failures=3, next_attempt=timezone.now() + timedelta(hours=1),
                                                          last_error="authentication failed")
    change = reverse("admin:migration_externalaccount_change", args=[external.pk])
    text = admin_client.get(change).content.decode()
    assert SECRET not in text and stored not in text and stored[len(secrets.PREFIX):][:20] not in text
    assert 'name="password"' not in text and "set (encrypted)" in text

    response = admin_client.post(change, form_data(alice, new_password="", host="imap2.old.example"))
    assert response.status_code == 302
    external.refresh_from_db()
    assert (external.host, external.password) == ("imap2.old.example", stored)
    assert external.next_attempt is not None  # still backing off: nothing about the login changed

    response = admin_client.post(change, form_data(alice, new_password="new one"))
    assert response.status_code == 302
    external.refresh_from_db()
    assert secrets.decrypt(external.password) == "new one"
    assert external.next_attempt is None  # the next periodic run tries the new password


def test_set_password_refuses_an_empty_one(alice):
    import pytest

    external = fetching.add_external_account(
        alice, acting_user=None, protocol="pop3", host="pop.old.example", username="a", password="x")
    with pytest.raises(fetching.ExternalAccountError, match="must not be empty"):
        fetching.set_password(external, "")


def test_every_admin_change_is_audited_without_the_password(admin_client, alice):
    admin_client.post(reverse("admin:migration_externalaccount_add"), form_data(alice))
    external = ExternalAccount.objects.get()
    change = reverse("admin:migration_externalaccount_change", args=[external.pk])
    admin_client.post(change, form_data(alice, new_password="", host="imap2.old.example"))
    admin_client.post(change, form_data(alice, new_password="new one"))
    admin_client.post(reverse("admin:migration_externalaccount_delete", args=[external.pk]), {"post": "yes"})
    entries = list(AuditEntry.objects.filter(object_type="external").order_by("id"))
    assert [(e.action, e.via) for e in entries] == [
        ("external.add", "admin"), ("external.change", "admin"), ("external.change", "admin"), ("external.remove", "admin"),
    ]
    assert entries[0].object_repr == "alice@old.example@imap.old.example for alice@example.test"
    assert (entries[1].before["host"], entries[1].after["host"]) == ("imap.old.example", "imap2.old.example")
    assert entries[2].after["password"] == "changed"
    logged = json.dumps([[e.before, e.after] for e in entries])
    assert SECRET not in logged and "new one" not in logged


def test_switching_one_off_in_the_list_is_audited_and_its_account_stays(admin_client, admin_user, alice, bob):
    external = fetching.add_external_account(
        alice, acting_user=None, protocol="imap", host="imap.old.example", username="alice@old.example",
        password=SECRET)
    response = admin_client.post(reverse("admin:migration_externalaccount_changelist"), {
        "form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-MIN_NUM_FORMS": "0", "form-MAX_NUM_FORMS": "1000",
        "form-0-id": external.pk, "_save": "Save",  # the enabled box left unticked
    })
    assert response.status_code == 302
    external.refresh_from_db()
    assert not external.enabled
    [entry] = AuditEntry.objects.filter(object_type="external", action="external.change")
    assert (entry.action, entry.actor, entry.actor_name, entry.via) == ("external.change", admin_user, "admin", "admin")
    assert (entry.before["enabled"], entry.after["enabled"]) == (True, False)

    change = reverse("admin:migration_externalaccount_change", args=[external.pk])
    refused = admin_client.post(change, form_data(alice, new_password="", local_folder="Nope"))
    assert refused.status_code == 200 and "folder Nope does not exist" in refused.content.decode()
    assert admin_client.post(change, form_data(alice, account=bob.pk, new_password="")).status_code == 302
    external.refresh_from_db()
    assert external.account == alice and external.enabled
