"""Message blobs on S3-compatible object storage (moto's server on loopback): mail delivered
over SMTP is read back byte for byte over IMAP, POP3 and the webmail, its bytes are in the
bucket, and nothing is written to the local blob directory."""
import imaplib
import poplib
import smtplib
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from mailstore.models import Message
from mailstore.storage import blob_storage, blob_storage_setting
from tests.conftest import PASSWORD
from tests.e2e.helpers import free_port
from tests.imap.conftest import imap_servers
from tests.objectstore import CREDENTIALS, ObjectStore
from tests.pop3.conftest import pop3_servers

MESSAGE = (
    b"From: Mallory <mallory@elsewhere.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: stored far away\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"the first part\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQFBgcICQ==\r\n"
    b"--b1--\r\n"
)


@pytest.fixture
def s3_blobs(settings, monkeypatch, blob_dir):
    """Blob storage in a fresh bucket; yields the ObjectStore."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with ObjectStore() as store:
        settings.STORAGES = {**settings.STORAGES, "blobs": blob_storage_setting(store.url, Path(settings.DATA_DIR))}
        yield store


def section_value(data):
    """The one section in an imaplib FETCH answer: a literal, or a short quoted string."""
    if isinstance(data[0], tuple):
        return data[0][1]
    quoted = data[0].rstrip(b")")
    return quoted[quoted.index(b'"') + 1 : -1]


def files_under(directory):
    return [p for p in Path(directory).rglob("*") if p.is_file()]


def test_it_delivers_into_the_bucket_and_reads_back_over_every_protocol(
    s3_blobs, blob_dir, smtp_server, alice, settings
):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        assert client.sendmail("mallory@elsewhere.test", ["alice@example.test"], MESSAGE) == {}

    message = Message.objects.select_related("blob").get(folder__account=alice)
    stored = s3_blobs.objects()
    assert list(stored) == [message.blob.name]
    assert files_under(blob_dir) == []
    whole = bytes(message.prefix) + stored[message.blob.name]
    assert whole.endswith(MESSAGE) and whole.startswith(b"Return-Path: <mallory@elsewhere.test>\r\n")

    with imap_servers() as imap_server:
        imap = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"], timeout=10)
        try:
            imap.login("alice@example.test", PASSWORD)
            imap.select("INBOX", readonly=True)
            fetched = {}
            for item in ("BODY.PEEK[]", "BODY.PEEK[]<20.30>", "BODY.PEEK[HEADER]", "BODY.PEEK[1]", "BODY.PEEK[2]"):
                status, data = imap.uid("FETCH", str(message.uid), f"({item})")
                assert status == "OK", data
                fetched[item] = section_value(data)
        finally:
            imap.logout()
    header_end = whole.index(b"\r\n\r\n") + 4
    assert fetched == {
        "BODY.PEEK[]": whole,
        "BODY.PEEK[]<20.30>": whole[20:50],
        "BODY.PEEK[HEADER]": whole[:header_end],
        "BODY.PEEK[1]": b"the first part",
        "BODY.PEEK[2]": b"AAECAwQFBgcICQ==",
    }

    with pop3_servers() as pop3_server:
        pop = poplib.POP3("127.0.0.1", pop3_server.ports["pop3"], timeout=10)
        try:
            pop.user("alice@example.test")
            pop.pass_(PASSWORD)
            _, lines, octets = pop.retr(1)
        finally:
            pop.quit()
    assert b"\r\n".join(lines) + b"\r\n" == whole
    assert octets == len(whole) + sum(line.startswith(b".") for line in whole.split(b"\r\n"))

    browser = Client()
    assert browser.post("/login/", {"address": alice.address, "password": PASSWORD}).status_code == 302
    response = browser.get(f"/f/{message.folder_id}/m/{message.uid}/raw/?download=1")
    assert response.status_code == 200 and response.content == whole
    assert files_under(blob_dir) == []


def test_it_stores_multi_recipient_mail_once_and_removes_what_nobody_kept(s3_blobs, alice, bob):
    from mailstore import actions

    outcomes = actions.deliver(MESSAGE, [actions.Recipient(alice, alice.address, "INBOX"),
                                         actions.Recipient(bob, bob.address, "INBOX")],
                               return_path="mallory@elsewhere.test")
    assert [o.error for o in outcomes] == [None, None]
    assert len(s3_blobs.keys()) == 1
    stored = actions.store_bytes(b"Subject: nobody\r\n\r\n")
    assert len(s3_blobs.keys()) == 2
    actions.discard_bytes(stored)
    assert s3_blobs.keys() == [outcomes[0].message.blob.name]


def test_the_object_store_needs_no_sync_and_keeps_a_prefix(s3_blobs, settings):
    settings.STORAGES = {**settings.STORAGES,
                         "blobs": blob_storage_setting(s3_blobs.url.replace("?", "/mail/node-a?"), Path("/x"))}
    assert not hasattr(blob_storage(), "sync_names")
    name = blob_storage().save("20260101/0000/abc", __import__("io").BytesIO(b"bytes"))
    assert name == "20260101/0000/abc"
    assert s3_blobs.objects() == {"mail/node-a/20260101/0000/abc": b"bytes"}
    with blob_storage().open(name, "rb") as f:
        assert f.read() == b"bytes"
    with pytest.raises(FileNotFoundError):
        blob_storage().open("20260101/0000/gone", "rb")


def test_the_default_is_durable_files_in_the_data_dir():
    assert blob_storage_setting("", Path("/srv/mail")) == {
        "BACKEND": "mailstore.storage.DurableFileSystemStorage", "OPTIONS": {"location": Path("/srv/mail/blobs")},
    }


def test_an_s3_url_names_bucket_prefix_endpoint_region_and_addressing():
    config = blob_storage_setting(
        "s3://mail-blobs/node/a?endpoint=https://s3.example.test:9000&region=eu-west-1&addressing=virtual", Path("/x"))
    assert config["BACKEND"] == "mailstore.objectstore.ObjectStorage"
    assert {k: config["OPTIONS"][k] for k in ("bucket_name", "location", "endpoint_url", "region_name", "addressing_style")} == {
        "bucket_name": "mail-blobs", "location": "node/a", "endpoint_url": "https://s3.example.test:9000",
        "region_name": "eu-west-1", "addressing_style": "virtual",
    }
    plain = blob_storage_setting("s3://mail-blobs", Path("/x"))["OPTIONS"]
    assert (plain["location"], plain["endpoint_url"], plain["region_name"]) == ("", None, None)


@pytest.mark.parametrize("value, complaint", [
    ("/srv/blobs", "expected s3://"),
    ("file:///srv/blobs", "expected s3://"),
    ("s3://", "is not a bucket name"),
    ("s3://Mail_Blobs", "is not a bucket name"),
    ("s3://key:secret@mail-blobs", "credentials do not belong in the URL"),
    ("s3://mail-blobs?endpoint=127.0.0.1:9000", "expected http(s)://host[:port]"),
    ("s3://mail-blobs?endpoint=http://s3.test/path", "expected http(s)://host[:port]"),
    ("s3://mail-blobs?region=EU West", "expected a name such as eu-west-1"),
    ("s3://mail-blobs?addressing=dns", "expected path or virtual"),
    ("s3://mail-blobs?bucket=other", "unknown option 'bucket'"),
    ("s3://mail-blobs?region=a&region=b", "given twice"),
    ("s3://mail-blobs?region", "malformed ?query"),
    ("s3://mail-blobs/a//b", "single slashes"),
    ("s3://mail-blobs/../b", "single slashes"),
    ("s3://mail-blobs#x", "fragment"),
])
def test_a_bad_blob_storage_setting_stops_the_server(value, complaint):
    with pytest.raises(ImproperlyConfigured) as error:
        blob_storage_setting(value, Path("/x"))
    assert complaint in str(error.value) and str(error.value).startswith(f"MAILSUITE_BLOB_STORAGE={value!r}: ")


def test_a_failed_delete_is_an_oserror_as_on_a_file_system(s3_blobs, settings, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retries against a store that is not there
    gone = s3_blobs.url.replace(f":{s3_blobs.port}", f":{free_port()}")
    settings.STORAGES = {**settings.STORAGES, "blobs": blob_storage_setting(gone, Path("/x"))}
    with pytest.raises(OSError):
        blob_storage().delete("20260101/0000/abc")
