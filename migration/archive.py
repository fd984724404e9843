"""An account or folder as a ZIP, produced while it is sent (the webmail's download).

Implementation notes:
- Constant memory: the archive is written to a sink that only buffers what was written
  since the last chunk was handed out; a message is read, written and given away before
  the next. ZIP members have no size up front (data descriptors, ZIP64 allowed), which is
  what zipfile does on a stream it cannot seek.
- The layout is `mail export`'s on disk: mbox files (INBOX.mbox, Work/Clients.mbox) or a
  Maildir++ tree (cur/… for INBOX, .Work.Clients/cur/…, dovecot-keywords), so the ZIP
  imports back (migration.sources.read_zip) with the same bytes, flags and dates.
- Reads only: nothing here changes the store.
"""
import zipfile

from migration import sources
from migration.actions import (MaildirNamer, _folders_to_export, _stored_messages, maildir_path, mbox_entry,
                               mbox_path)

CHUNK = 256 * 1024  # bytes handed to the web server at a time (at least; a message may be more)


class _Sink:
    """A write-only, unseekable file whose contents are taken away as they come."""

    def __init__(self):
        self.parts, self.size, self.position = [], 0, 0

    def write(self, data):
        self.parts.append(bytes(data))
        self.size += len(data)
        self.position += len(data)
        return len(data)

    def tell(self):
        return self.position

    def flush(self):
        pass

    def take(self):
        data = b"".join(self.parts)
        self.parts, self.size = [], 0
        return data


def _member(name, date_time):
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _zip_time(when):
    return max(when.utctimetuple()[:6], (1980, 1, 1, 0, 0, 0))


def zip_chunks(account, *, format, folder=None):
    """The bytes of a ZIP of `account`'s folders (or `folder` and its subfolders), in
    chunks. Raises actions.TransferError before the first chunk for an unknown folder."""
    if format not in ("mbox", "maildir"):
        raise ValueError(f"unknown format {format!r}")
    folders = _folders_to_export(account, folder)
    return _chunks(folders, format)


def _chunks(folders, format):
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for folder in folders:
            if format == "mbox":
                with archive.open(_member(mbox_path(folder.name), _zip_time(folder.created)), "w", force_zip64=True) as out:
                    for message, raw in _stored_messages(folder):
                        out.write(mbox_entry(message, raw))
                        if sink.size >= CHUNK:
                            yield sink.take()
            else:
                base = maildir_path(folder.name)
                prefix = f"{base}/" if base else ""
                namer = MaildirNamer(folder)
                for message, raw in _stored_messages(folder):
                    name = f"{prefix}cur/{namer.name(message, len(raw))}"
                    archive.writestr(_member(name, _zip_time(message.internaldate)), sources.to_lf(raw))
                    if sink.size >= CHUNK:
                        yield sink.take()
                keyword_file = namer.keyword_file()
                if keyword_file:
                    archive.writestr(_member(f"{prefix}dovecot-keywords", _zip_time(folder.created)), keyword_file)
            yield sink.take()
    yield sink.take()
