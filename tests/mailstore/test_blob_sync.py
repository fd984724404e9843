"""When blob files reach the disk (mailstore.storage): each as it is written, or, inside
synced_together(), all of a batch at once when sync_names() is called for them."""
import os

import pytest
from django.core.files.base import ContentFile

from mailstore import storage
from mailstore.storage import blob_storage, new_blob_name, sync_names, synced_together


@pytest.fixture
def fsynced(monkeypatch):
    """The paths of the regular files os.fsync() was called on, in order."""
    paths = []
    real = os.fsync

    def recording(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isfile(path):
            paths.append(path)
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return paths


def save(raw=b"Subject: x\r\n\r\nbody\r\n"):
    return blob_storage().save(new_blob_name(), ContentFile(raw))


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_outside_the_block_each_file_is_fsynced_as_it_is_written(fsynced):
    name = save()
    assert fsynced == [blob_storage().path(name)]


def test_inside_the_block_files_wait_for_sync_names_and_are_fsynced_together(fsynced):
    with synced_together():
        names = [save() for _ in range(3)]
        assert fsynced == []
        sync_names(names[:2])
        assert sorted(fsynced) == sorted(blob_storage().path(name) for name in names[:2])
        sync_names(names[:2])  # synced already: only the directories again
        assert len(fsynced) == 2
        sync_names(names[2:])
        assert len(fsynced) == 3
    for name in names:
        with blob_storage().open(name, "rb") as f:
            assert f.read() == b"Subject: x\r\n\r\nbody\r\n"


def test_files_never_named_to_sync_names_are_closed_at_the_end(fsynced):
    before = open_fds()
    with synced_together():
        name = save()
        blob_storage().delete(name)  # released: a message nobody took
        assert open_fds() == before + 1
    assert open_fds() == before
    assert fsynced == []


def test_a_write_that_fails_leaves_no_file_and_no_descriptor(monkeypatch):
    before = open_fds()
    name = new_blob_name()

    def failing_write(fd, data):
        raise OSError(28, "No space left on device")

    with synced_together():
        monkeypatch.setattr(storage.os, "write", failing_write)
        with pytest.raises(OSError):
            blob_storage().save(name, ContentFile(b"x" * 100))
        monkeypatch.undo()
        assert not blob_storage().exists(name)
    assert open_fds() == before


def test_a_file_larger_than_one_write_is_written_whole():
    raw = os.urandom(3 * 1024 * 1024)
    with synced_together():
        name = save(raw)
        sync_names([name])
    with blob_storage().open(name, "rb") as f:
        assert f.read() == raw


def test_a_block_inside_another_keeps_the_outer_files_for_the_outer_sync(fsynced):
    with synced_together():
        outer = save()
        with synced_together():
            inner = save()
            sync_names([inner])
        assert fsynced == [blob_storage().path(inner)]
        sync_names([outer])
    assert fsynced == [blob_storage().path(inner), blob_storage().path(outer)]
