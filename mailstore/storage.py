"""Blob storage: message bytes written once and made durable before anything names them.

DurableFileSystemStorage fsyncs each file as it is written; the directory entries are
made durable by sync_names() (one fsync per directory, however many files a batch
wrote there), which the mail store calls before committing the rows that name them.
Names are random, never reused, and grouped by minute so a batch shares a directory
and no directory grows past what a minute of mail brings.
"""
import os
import uuid

from django.core.files.storage import FileSystemStorage, storages
from django.utils import timezone


class DurableFileSystemStorage(FileSystemStorage):
    def _save(self, name, content):
        path = self.path(name)
        _makedirs_durably(os.path.dirname(path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in content.chunks():
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(path)
            raise
        return name

    def get_available_name(self, name, max_length=None):
        return name  # names are unique by construction; O_EXCL catches the impossible

    def sync_names(self, names):
        """Make the directory entries of these saved names durable."""
        for directory in {os.path.dirname(self.path(name)) for name in names}:
            _fsync_dir(directory)


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durably(directory):
    """Create missing directories, each made durable in its parent."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o750)
        except FileExistsError:
            continue
        _fsync_dir(os.path.dirname(path))


def blob_storage():
    return storages["blobs"]


def sync_names(names):
    """Make saved blobs' names durable, on storages that need it (object stores do not)."""
    sync = getattr(blob_storage(), "sync_names", None)
    if sync is not None and names:
        sync(names)


def new_blob_name():
    return f"{timezone.now():%Y%m%d/%H%M}/{uuid.uuid4().hex}"
