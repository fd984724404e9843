"""The webmail's import/export and external-account pages (Django test client; the
browser tests drive the same pages in Chromium)."""
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import AuditEntry
from mailsuite.lib import secrets
from mailstore.actions import append, create_folder
from migration import actions, tasks
from migration.models import ExternalAccount, TransferJob
from tests.conftest import PASSWORD
from tests.pop3.conftest import pop3_servers


@pytest.fixture
def signed_in():
    def signed_in(account):
        client = Client()
        assert client.post("/login/", {"address": account.address, "password": PASSWORD}).status_code == 302
        return client

    return signed_in


@pytest.fixture
def queued(monkeypatch):
    ids = []
    monkeypatch.setattr(tasks.run_transfer_job, "delay", ids.append)
    return ids


@pytest.fixture(autouse=True)
def uploads_in_tmp(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"


MBOX = (b"From carol@elsewhere.test Mon Jan 15 10:30:00 2024\nSubject: one\n\nHi.\n\n"
        b"From carol@elsewhere.test Mon Jan 15 10:31:00 2024\nSubject: two\n\nHo.\n\n")


def test_the_page_lists_the_users_jobs_only(alice, bob, signed_in, queued, tmp_path):
    actions.create_job(alice, "import", source=tmp_path / "a", label="alice.mbox")
    actions.create_job(bob, "import", source=tmp_path / "b", label="bob.mbox")
    page = signed_in(alice).get("/settings/transfer/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "alice.mbox" in text and "bob.mbox" not in text
    assert "Waiting for a worker…" in text
    assert 'href="/settings/transfer/" hx-boost="false" aria-current="page"' in text  # the settings menu's entry
    assert page["Content-Security-Policy"].startswith("default-src 'self'")


def test_an_upload_answers_with_its_job_for_the_progress_bar(alice, signed_in, queued, django_capture_on_commit_callbacks):
    client = signed_in(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/settings/transfer/upload/", {"file": SimpleUploadedFile("old.mbox", MBOX), "folder": "Archive"},
                               headers={"Accept": "application/json"})
    assert response.status_code == 201, response.content
    job = TransferJob.objects.get()
    assert queued == [job.pk]
    answer = response.json()
    assert answer["status_url"] == f"/settings/transfer/jobs/{job.pk}/"
    assert (answer["job"]["state"], answer["job"]["percent"], answer["job"]["folder"]) == ("queued", 0, "Archive")

    tasks.run_transfer_job(job.pk)
    status = client.get(answer["status_url"]).json()
    assert (status["state"], status["messages"], status["percent"], status["state_text"]) == (
        "done", 2, 100, "Done: 2 imported, 0 already there")


def test_an_upload_refused_says_why(alice, signed_in, queued):
    client = signed_in(alice)
    response = client.post("/settings/transfer/upload/", {"folder": "INBOX"}, headers={"Accept": "application/json"})
    assert (response.status_code, response.json()) == (400, {"error": "This field is required."})
    response = client.post("/settings/transfer/upload/", {"file": SimpleUploadedFile("a.mbox", MBOX), "folder": "Nope"},
                           headers={"Accept": "application/json"})
    assert response.status_code == 400 and "Nope is not one of the available choices" in response.json()["error"]
    assert not TransferJob.objects.exists()


def test_jobs_are_cancelled_resumed_and_removed_by_their_owner_only(alice, bob, signed_in, queued, tmp_path,
                                                                     django_capture_on_commit_callbacks):
    job = actions.create_job(alice, "import", source=tmp_path / "a")
    assert signed_in(bob).post(f"/settings/transfer/jobs/{job.pk}/cancel/").status_code == 404
    assert signed_in(bob).get(f"/settings/transfer/jobs/{job.pk}/").status_code == 404
    client = signed_in(alice)
    assert client.post(f"/settings/transfer/jobs/{job.pk}/cancel/").status_code == 302
    assert TransferJob.objects.get(pk=job.pk).state == "cancelled"
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/settings/transfer/jobs/{job.pk}/resume/")
    assert TransferJob.objects.get(pk=job.pk).state == "queued"
    assert queued == [job.pk]
    client.post(f"/settings/transfer/jobs/{job.pk}/cancel/")
    client.post(f"/settings/transfer/jobs/{job.pk}/discard/")
    assert not TransferJob.objects.exists()


def test_a_download_is_a_streamed_zip_of_the_folder(alice, bob, signed_in):
    append(alice, "INBOX", b"Subject: hello\r\n\r\nHi.\r\n", flags=["\\Seen"])
    append(alice, "Archive", b"Subject: old\r\n\r\nOld.\r\n")
    client = signed_in(alice)
    response = client.get("/settings/transfer/export/", {"folder": "Archive", "format": "maildir"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="alice@example.test-Archive-maildir.zip"'
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        [name] = archive.namelist()
        assert name.startswith(".Archive/cur/") and archive.read(name) == b"Subject: old\n\nOld.\n"
    assert client.get("/settings/transfer/export/", {"folder": "Nope", "format": "mbox"}).status_code == 400
    assert client.get("/settings/transfer/export/", {"format": "tar"}).status_code == 400


def test_external_accounts_are_added_tested_and_removed(transactional_db, settings, alice, bob, signed_in):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    append(bob, "INBOX", b"Subject: waiting\r\n\r\nHi.\r\n")
    client = signed_in(alice)
    with pop3_servers() as server:
        response = client.post("/settings/transfer/external/", {
            "protocol": "pop3", "host": "127.0.0.1", "port": server.ports["pop3"], "tls": "none",
            "username": "bob@example.test", "password": PASSWORD, "local_folder": "INBOX", "keep": "on",
        })
        assert response.status_code == 302, response.content.decode()
        external = ExternalAccount.objects.get(account=alice)
        assert external.password.startswith("fernet:") and external.keep

        page = client.post(f"/settings/transfer/external/{external.pk}/test/", follow=True).content.decode()
        assert "bob@example.test@127.0.0.1: logged in: 1 message on the server" in page
        page = client.post(f"/settings/transfer/external/{external.pk}/fetch/", follow=True).content.decode()
        assert "1 new message fetched." in page and "Last fetched" in page

        ExternalAccount.objects.filter(pk=external.pk).update(password=actions.secrets.encrypt("wrong"))
        page = client.post(f"/settings/transfer/external/{external.pk}/fetch/", follow=True).content.decode()
        assert "Failing (1 in a row):" in page and "refused the login" in page

    assert signed_in(bob).post(f"/settings/transfer/external/{external.pk}/remove/").status_code == 404
    client.post(f"/settings/transfer/external/{external.pk}/remove/")
    assert not ExternalAccount.objects.exists()


def test_it_changes_an_external_account_and_the_audit_log_names_the_user(alice, bob, signed_in):
    client = signed_in(alice)
    assert client.post("/settings/transfer/external/", {
        "protocol": "imap", "host": "imap.old.example", "tls": "implicit", "verify_certificate": "on",
        "username": "alice.old", "password": "old secret", "local_folder": "INBOX", "keep": "on",
    }).status_code == 302
    external = ExternalAccount.objects.get(account=alice)
    edit = f"/settings/transfer/external/{external.pk}/"
    assert f'href="{edit}"' in client.get("/settings/transfer/external/").content.decode()
    page = client.get(edit).content.decode()
    assert 'value="imap.old.example"' in page and "old secret" not in page and external.password not in page
    assert signed_in(bob).get(edit).status_code == 404
    assert signed_in(bob).post(edit, {"protocol": "pop3"}).status_code == 404

    create_folder(alice, "Fetched")
    ExternalAccount.objects.filter(pk=external.pk).update(failures=2, next_attempt="2099-01-01T00:00:00Z")
    changes = {"protocol": "imap", "host": " mail.old.example ", "port": "", "tls": "starttls", "username": "alice.old",
               "password": "", "local_folder": "Fetched", "keep": "on", "enabled": "on"}
    assert client.post(edit, changes).status_code == 302
    external.refresh_from_db()
    assert (external.host, external.port, external.tls, external.local_folder) == ("mail.old.example", 143, "starttls",
                                                                                  "Fetched")
    assert not external.verify_certificate and secrets.decrypt(external.password) == "old secret"
    assert external.next_attempt is not None  # the login did not change: still backing off

    assert client.post(edit, {**changes, "password": "new secret"}).status_code == 302
    external.refresh_from_db()
    assert secrets.decrypt(external.password) == "new secret" and external.next_attempt is None
    assert client.post(edit, {**changes, "password": ""}).status_code == 302  # nothing changed: nothing recorded

    refused = client.post(edit, {**changes, "host": ""})
    assert refused.status_code == 400 and "This field is required." in refused.content.decode()
    client.post(f"/settings/transfer/external/{external.pk}/remove/")

    entries = list(AuditEntry.objects.filter(object_type="external").order_by("id"))
    assert [(e.action, e.actor_name, e.actor, e.via, e.domain_name) for e in entries] == [
        (action, "alice@example.test", None, "webmail", "example.test")
        for action in ("external.add", "external.change", "external.change", "external.remove")
    ]
    assert entries[1].object_repr == "alice.old@mail.old.example for alice@example.test"
    assert (entries[1].before["host"], entries[1].after["host"]) == ("imap.old.example", "mail.old.example")
    assert (entries[1].before["verify_certificate"], entries[1].after["verify_certificate"]) == (True, False)
    assert "password" not in entries[1].after and entries[2].after["password"] == "changed"
    logged = str([[e.before, e.after] for e in entries])
    assert "old secret" not in logged and "new secret" not in logged


def test_a_bad_external_account_form_is_shown_again(alice, signed_in):
    response = signed_in(alice).post("/settings/transfer/external/", {"protocol": "imap", "tls": "implicit"})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()


def test_jobs_started_from_the_cli_show_what_they_do(alice, signed_in, queued, tmp_path):
    job = actions.create_job(alice, "migrate", source="dana@old.example:993", password="x",
                             options={"host": "old.example", "port": 993, "user": "dana"})
    TransferJob.objects.filter(pk=job.pk).update(state="running", messages=12)
    status = signed_in(alice).get(f"/settings/transfer/jobs/{job.pk}/").json()
    assert (status["state_text"], status["percent"], status["active"]) == (
        "Copying from the other server: 12 messages", None, True)
    TransferJob.objects.filter(pk=job.pk).update(messages=1)
    status = signed_in(alice).get(f"/settings/transfer/jobs/{job.pk}/").json()
    assert status["state_text"] == "Copying from the other server: 1 message"
