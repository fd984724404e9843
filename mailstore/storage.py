"""Blob storage: message bytes written once and made durable before anything names them.

DurableFileSystemStorage fsyncs the file and its directory before returning, so the
database row committed afterwards never points at bytes a crash could lose. Names are
random, never reused, and spread over two directory levels.
"""
import os
import uuid

from django.core.files.storage import FileSystemStorage, storages


class DurableFileSystemStorage(FileSystemStorage):
    def _save(self, name, content):
        path = self.path(name)
        directory = os.path.dirname(path)
        created = _makedirs_durably(directory)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o640)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in content.chunks():
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(path)
            raise
        _fsync_dir(directory)
        for parent in created:
            _fsync_dir(os.path.dirname(parent))
        return name

    def get_available_name(self, name, max_length=None):
        return name  # names are unique by construction; O_EXCL catches the impossible


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durably(directory):
    """Create missing directories; return those created."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o750)
        except FileExistsError:
            pass
    return missing


def blob_storage():
    return storages["blobs"]


def new_blob_name():
    key = uuid.uuid4().hex
    return f"{key[:2]}/{key[2:4]}/{key}"
