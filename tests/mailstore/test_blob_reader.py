"""storage.blob_reader(): the bytes of a blob as stored, whole or the first octets, for
the names the store makes and for any other name inside the storage; never a file
outside it."""
import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile

from mailstore.actions import store_bytes
from mailstore.storage import blob_reader, blob_storage

RAW = b"Subject: read me\r\n\r\n" + bytes(range(256)) * 300


def test_it_reads_a_stored_message_whole_or_its_first_octets():
    stored = store_bytes(RAW)
    read = blob_reader()
    assert read(stored.name, stored.size) == RAW
    assert read(stored.name, 20) == RAW[:20]


def test_other_names_inside_the_storage_are_read_and_outside_it_refused():
    name = blob_storage().save("imported/legacy-name.eml", ContentFile(b"From: a@b.test\r\n\r\nold\r\n"))
    read = blob_reader()
    assert read(name, 100) == b"From: a@b.test\r\n\r\nold\r\n"
    with pytest.raises(SuspiciousFileOperation):
        read("../../etc/passwd", 10)
    with pytest.raises(FileNotFoundError):
        read("20260101/0000/" + "0" * 32, 10)
