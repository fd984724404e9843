"""Message blobs on S3-compatible object storage, shared by several machines.

Chosen by MAILSUITE_BLOB_STORAGE=s3://… (mailstore.storage.blob_storage_setting); imported
only then, so a single machine never loads boto3.

Implementation notes:
- A PUT that returned is durable (the store acknowledges only what it has kept), so there
  is no sync_names() here and the mail store's call to it does nothing.
- Reading a blob is one GET. django-storages' own S3File asks twice for the object's
  metadata before it downloads it and spools it to a temporary file: three round trips for
  a message of a few kilobytes that every IMAP FETCH, POP3 RETR and webmail page reads.
- Writing a message is one PUT; only objects too large for one go through the transfer
  manager's multipart upload (and its threads).
- delete() fails with OSError, as a file system's would, so callers that tidy up after a
  failed delivery catch one kind of error whichever storage is configured.
- Connections are per thread (django-storages keeps them thread-local), so the protocol
  servers' ORM threads each reuse their own.
"""
import io

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.base import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

SINGLE_PUT_LIMIT = 64 << 20  # bytes; S3 accepts up to 5 GiB in one PUT, mail is far smaller


class ObjectStorage(S3Storage):
    def _open(self, name, mode="rb"):
        if mode != "rb":
            return super()._open(name, mode)
        key = self._normalize_name(clean_name(name))
        try:
            body = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key)["Body"]
            data = body.read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"no blob {name!r} in the object store") from None
            raise
        return File(io.BytesIO(data), name)

    def _save(self, name, content):
        if content.size is None or content.size > SINGLE_PUT_LIMIT:
            return super()._save(name, content)
        cleaned = clean_name(name)
        content.seek(0)
        data = content.read()
        self.connection.meta.client.put_object(
            Bucket=self.bucket_name, Key=self._normalize_name(cleaned),
            Body=data if isinstance(data, bytes) else data.encode(),
            ContentType="application/octet-stream",
        )
        return cleaned

    def download(self, name, fileobj):
        """Stream an object into a file without holding it in memory (an import's upload
        may be gigabytes; _open reads a message whole)."""
        key = self._normalize_name(clean_name(name))
        try:
            self.connection.meta.client.download_fileobj(self.bucket_name, key, fileobj)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"no blob {name!r} in the object store") from None
            raise

    def delete(self, name):
        try:
            super().delete(name)
        except (BotoCoreError, ClientError) as error:
            raise OSError(f"could not delete blob {name!r}: {error}") from error
