"""Blob storage: message bytes written once and made durable before anything names them.

DurableFileSystemStorage fsyncs each file as it is written; the directory entries are
made durable by sync_names() (one fsync per directory, however many files a batch
wrote there), which the mail store calls before committing the rows that name them.
Inside synced_together() a thread's files are fsynced by sync_names() instead, all at
once: a file system commits the metadata of files fsynced together in one journal
transaction, where one after another each waits for its own.
Names are random, never reused, and grouped by minute so a batch shares a directory
and no directory grows past what a minute of mail brings.

Several machines share S3-compatible object storage instead (mailstore.objectstore,
chosen by MAILSUITE_BLOB_STORAGE, see blob_storage_setting): a PUT that returned is
durable, so there is nothing to sync, and readers go through storage.open().
"""
import os
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, storages
from django.utils import timezone


# A process that writes many blobs for one commit (an import's worker processes) may turn
# this off and instead call sync_everything() once before the rows naming them commit: one
# syncfs of the file system costs far less than an fsync per file.
fsync_each_file = True

_together = threading.local()  # .files: {path: open fd} saved in synced_together(), not yet synced
_fsyncs = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")


@contextmanager
def synced_together():
    """Within the block, the files this thread saves are made durable by sync_names(),
    together, rather than one by one as they are written. Each stays open until then
    (fsync reports a failed write to descriptors open when it happened); whatever
    sync_names() did not sync is closed at the end. A block inside another keeps its
    files apart: the outer block's are there again when it ends."""
    previous = getattr(_together, "files", None)
    files = _together.files = {}
    try:
        yield
    finally:
        _together.files = previous
        for fd in files.values():
            os.close(fd)


class DurableFileSystemStorage(FileSystemStorage):
    def _save(self, name, content):
        path = self.path(name)
        _makedirs_durably(os.path.dirname(path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        together = getattr(_together, "files", None)
        try:
            if together is not None:
                view = memoryview(content.read())
                while view:
                    view = view[os.write(fd, view):]
                together[path] = fd  # sync_names() fsyncs and closes it
                return name
            with os.fdopen(fd, "wb") as f:
                for chunk in content.chunks():
                    f.write(chunk)
                f.flush()
                if fsync_each_file:
                    os.fsync(f.fileno())
        except BaseException:
            if together is not None:
                os.close(fd)  # (os.fdopen's block closed it otherwise)
            os.unlink(path)
            raise
        return name

    def sync_everything(self):
        """Make everything written to this storage's file system so far durable, from
        any process (syncfs(2); sync(2) where there is none)."""
        _syncfs(self.location)

    def get_available_name(self, name, max_length=None):
        return name  # names are unique by construction; O_EXCL catches the impossible

    def sync_names(self, names):
        """Make these saved names durable: the files saved in synced_together() and not
        synced yet (all at once), then the directory entries."""
        paths = [self.path(name) for name in names]
        together = getattr(_together, "files", None)
        if together:
            fds = [together.pop(path) for path in paths if path in together]
            try:
                for _ in _fsyncs.map(os.fsync, fds):
                    pass
            finally:
                for fd in fds:
                    os.close(fd)
        for directory in {os.path.dirname(path) for path in paths}:
            _fsync_dir(directory)


def _syncfs(directory):
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "syncfs"):
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        if libc.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), directory)
    finally:
        os.close(fd)


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


# The names new_blob_name() makes: they need no check against leaving the storage's root.
_PLAIN_NAME = re.compile(r"\d{8}/\d{4}/[0-9a-f]{32}")


def blob_reader():
    """read(name, size) -> the first `size` octets of a blob, for readers of many blobs
    (an IMAP FETCH of a mailbox). On the file system: straight from the file, without
    Django's File objects or a safe_join() per name for the names this module makes
    (together several times the cost of reading a few kilobytes)."""
    storage = blob_storage()
    try:
        root = storage.path("")
    except NotImplementedError:
        def read_object(name, size):
            with storage.open(name, "rb") as f:
                return f.read(size)

        return read_object

    def read_file(name, size):
        path = os.path.join(root, name) if _PLAIN_NAME.fullmatch(name) else storage.path(name)
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while size > 0:
                chunk = os.read(fd, size)
                if not chunk:
                    break
                chunks.append(chunk)
                size -= len(chunk)
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    return read_file


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3 bucket naming rules
_S3_OPTIONS = {"endpoint", "region", "addressing"}


def blob_storage_setting(value, data_dir):
    """settings.STORAGES["blobs"] from MAILSUITE_BLOB_STORAGE.

    Empty: DurableFileSystemStorage under DATA_DIR/blobs.
    s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&addressing=path|virtual]: S3-compatible
    object storage; credentials come from the environment as boto3 reads them
    (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role), never from the URL.
    """
    if not value:
        return {"BACKEND": "mailstore.storage.DurableFileSystemStorage", "OPTIONS": {"location": data_dir / "blobs"}}

    def bad(why):
        return ImproperlyConfigured(f"MAILSUITE_BLOB_STORAGE={value!r}: {why}")

    url = urlsplit(value)
    if url.scheme != "s3":
        raise bad("expected s3://BUCKET[/PREFIX]?endpoint=URL&region=NAME, or nothing for local files")
    if url.username or url.password:
        raise bad("credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if not _BUCKET.fullmatch(url.netloc):
        raise bad(f"{url.netloc!r} is not a bucket name (3-63 of a-z 0-9 . -)")
    if url.fragment:
        raise bad("unexpected #fragment")
    try:
        query = parse_qsl(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
    except ValueError:
        raise bad("malformed ?query") from None
    options = dict(query)
    if len(options) != len(query):
        raise bad("an option is given twice")
    if unknown := set(options) - _S3_OPTIONS:
        raise bad(f"unknown option {sorted(unknown)[0]!r} (known: {', '.join(sorted(_S3_OPTIONS))})")
    endpoint = options.get("endpoint")
    if endpoint is not None:
        parsed = urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
            raise bad(f"endpoint {endpoint!r}: expected http(s)://host[:port]")
    region = options.get("region")
    if region is not None and not re.fullmatch(r"[a-z0-9-]+", region):
        raise bad(f"region {region!r}: expected a name such as eu-west-1")
    addressing = options.get("addressing")
    if addressing is not None and addressing not in ("path", "virtual"):
        raise bad(f"addressing {addressing!r}: expected path or virtual")
    prefix = url.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise bad(f"prefix {prefix!r}: expected names separated by single slashes")
    return {
        "BACKEND": "mailstore.objectstore.ObjectStorage",
        "OPTIONS": {
            "bucket_name": url.netloc,
            "location": prefix,
            "endpoint_url": endpoint,
            "region_name": region,
            "addressing_style": addressing,
            "file_overwrite": True,  # names are unique: no HEAD request before each PUT
            "default_acl": None,  # the bucket's policy applies; blobs are never public
            "querystring_auth": False,  # nothing hands out blob URLs
        },
    }


def sync_names(names):
    """Make saved blobs' names durable, on storages that need it (object stores do not)."""
    sync = getattr(blob_storage(), "sync_names", None)
    if sync is not None and names:
        sync(names)


def new_blob_name():
    return f"{timezone.now():%Y%m%d/%H%M}/{uuid.uuid4().hex}"
