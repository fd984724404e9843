"""The streamed ZIP download: the same layout as `mail export`, read back by the importer
with the same bytes, flags and dates, produced a chunk at a time."""
import io
import zipfile

import pytest

from migration import actions, archive
from tests.migration.test_import_export import stored, varied_account


def zip_of(account, **kwargs):
    return b"".join(archive.zip_chunks(account, **kwargs))


@pytest.mark.parametrize("format", ["mbox", "maildir"])
def test_a_downloaded_zip_imports_back_the_same_mail(alice, bob, tmp_path, format):
    varied_account(alice, tmp_path)
    (tmp_path / "mail.zip").write_bytes(zip_of(alice, format=format))
    report = actions.import_path(bob, tmp_path / "mail.zip")
    assert report.imported == 4
    before, after = stored(alice), stored(bob)
    assert {k: v for k, v in before.items() if v} == {k: v for k, v in after.items() if v}


def test_the_zip_holds_what_the_export_writes_on_disk(alice, tmp_path):
    varied_account(alice, tmp_path)
    actions.export_account(alice, tmp_path / "out", format="maildir")
    on_disk = {str(p.relative_to(tmp_path / "out")): p.read_bytes()
               for p in (tmp_path / "out").rglob("*") if p.is_file()}
    with zipfile.ZipFile(io.BytesIO(zip_of(alice, format="maildir"))) as zipped:
        in_zip = {name: zipped.read(name) for name in zipped.namelist()}
    assert in_zip == on_disk
    assert ".Work.Entw&APw-rfe/cur/" in " ".join(in_zip)


def test_a_folder_alone_and_the_chunks_stay_small(alice, tmp_path, monkeypatch):
    from mailstore.actions import append

    monkeypatch.setattr(archive, "CHUNK", 4096)
    body = b"".join(b"line %d of a longer message, with some text\r\n" % i for i in range(200))
    for i in range(30):
        append(alice, "Archive", b"Subject: %d\r\n\r\n" % i + body)
    append(alice, "INBOX", b"Subject: elsewhere\r\n\r\nx\r\n")
    chunks = list(archive.zip_chunks(alice, format="mbox", folder="Archive"))
    assert max(len(c) for c in chunks) < 4096 + len(body)  # one message at most beyond a chunk
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zipped:
        assert zipped.namelist() == ["Archive.mbox"]
        assert zipped.read("Archive.mbox").count(b"\nFrom ") == 29
    with pytest.raises(actions.TransferError, match="folder Nope does not exist"):
        archive.zip_chunks(alice, format="mbox", folder="Nope")
