"""Reading mail out of files: mbox, Maildir (Maildir++ and Dovecot keywords), EML and ZIP.

Implementation notes:
- Readers are generators of SourceMessage, one message in memory at a time: an mbox is
  read line by line, never whole; a message larger than `max_size` is skipped (counted
  in `Skipped`) without being held.
- No database and no mail store here: the importer (migration.actions) decides what is
  new and stores it. Everything the readers return is what would be stored: line ends
  are CRLF (RFC 5322 §2.1; IMAP serves the bytes as stored), and the flag headers an
  mbox keeps in the message (Status, X-Status, X-Keywords, X-Mozilla-*) become flags
  and are removed, as Dovecot does, so export then import gives back the same bytes.
- Folder names use the mail store's "/" delimiter; Maildir++ names (".A.B") are
  modified UTF-7 on disk (RFC 3501 §5.1.3, as Dovecot writes them).
"""
import email.utils
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

from imap.parser import ParseError, decode_modified_utf7, encode_modified_utf7

HIERARCHY_DELIMITER = "/"  # mailstore.models.HIERARCHY_DELIMITER (kept import-free for pure tests)


class SourceError(Exception):
    """The path cannot be read as mail; the message is one line for the user."""


@dataclass
class SourceMessage:
    folder: str  # relative to the import's root folder ("" = the root itself)
    raw: bytes
    flags: tuple = ()
    internaldate: datetime | None = None


@dataclass
class Skipped:
    """Messages a reader passed over, with why (printed by the CLI)."""

    reasons: list = field(default_factory=list)

    def add(self, where, why):
        if len(self.reasons) < 1000:  # bounded: a broken source should not fill memory with excuses
            self.reasons.append(f"{where}: {why}")


# --- Line ends and flag headers -------------------------------------------------------

_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(raw):
    if b"\r" not in raw:  # files on disk mostly have LF alone: a plain replace is far cheaper
        return raw.replace(b"\n", b"\r\n")
    return _BARE_LF.sub(b"\r\n", raw)


def to_lf(raw):
    return raw.replace(b"\r\n", b"\n")


def split_header(raw):
    """(header bytes including the blank line, body) of a CRLF message."""
    end = raw.find(b"\r\n\r\n")
    if raw.startswith(b"\r\n"):
        return b"\r\n", raw[2:]
    if end < 0:
        return raw, b""
    return raw[: end + 4], raw[end + 4 :]


def add_header_fields(raw, fields):
    """`raw` (CRLF) with `fields` (CRLF-terminated) added at the end of its header."""
    header, body = split_header(raw)
    if header.endswith(b"\r\n\r\n"):
        return header[:-2] + fields + b"\r\n" + body
    if header == b"\r\n":
        return fields + b"\r\n" + body
    if not header.endswith(b"\r\n"):
        header += b"\r\n"
    return header + fields + b"\r\n" + body


def _header_fields(header):
    """[(lower-case name, whole field bytes with its folded lines)] of a CRLF header."""
    fields = []
    for line in header.split(b"\r\n")[:-1] if header.endswith(b"\r\n") else header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
        elif line:
            fields.append((line.split(b":", 1)[0].strip().lower(), [line]))
    return [(name, b"\r\n".join(lines) + b"\r\n") for name, lines in fields]


# The fields mbox writers keep flags in; they are state, not part of the message.
MBOX_STATE_FIELDS = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase",
                     b"x-mozilla-status", b"x-mozilla-status2", b"x-mozilla-keys"}


def take_mbox_flags(raw):
    """(raw without the state fields, flags they gave): Status R = \\Seen; X-Status A, F,
    D, T = \\Answered, \\Flagged, \\Deleted, \\Draft; X-Keywords (Dovecot) and
    X-Mozilla-Keys (Thunderbird) = keywords; X-Mozilla-Status bits as Thunderbird sets them."""
    header, body = split_header(raw)
    fields = _header_fields(header)
    if not any(name in MBOX_STATE_FIELDS for name, _ in fields):
        return raw, ()
    flags = []
    kept = []
    for name, whole in fields:
        if name not in MBOX_STATE_FIELDS:
            kept.append(whole)
            continue
        value = whole.split(b":", 1)[1].decode("utf-8", "replace").strip() if b":" in whole else ""
        if name == b"status" and "R" in value:
            flags.append("\\Seen")
        elif name == b"x-status":
            flags += [flag for letter, flag in _X_STATUS.items() if letter in value]
        elif name in (b"x-keywords", b"x-mozilla-keys"):
            flags += [word for word in re.split(r"[\s,]+", value) if word]
        elif name == b"x-mozilla-status":
            try:
                bits = int(value, 16)
            except ValueError:
                continue
            flags += [flag for bit, flag in _MOZILLA_BITS.items() if bits & bit]
    return b"".join(kept) + b"\r\n" + body, tuple(dict.fromkeys(flags))


_X_STATUS = {"A": "\\Answered", "F": "\\Flagged", "D": "\\Deleted", "T": "\\Draft"}
_MOZILLA_BITS = {0x1: "\\Seen", 0x2: "\\Answered", 0x4: "\\Flagged", 0x8: "\\Deleted", 0x1000: "$Forwarded"}


def mbox_state_fields(flags):
    """The Status/X-Status/X-Keywords fields (CRLF) that say `flags` in an mbox."""
    lower = {flag.lower() for flag in flags}
    status = "RO" if "\\seen" in lower else "O"
    x_status = "".join(letter for letter, flag in _X_STATUS.items() if flag.lower() in lower)
    keywords = [flag for flag in flags if not flag.startswith("\\")]
    out = f"Status: {status}\r\n"
    if x_status:
        out += f"X-Status: {x_status}\r\n"
    if keywords:
        out += f"X-Keywords: {' '.join(keywords)}\r\n"
    return out.encode("utf-8")


# --- mbox ------------------------------------------------------------------------------

_FROM_ESCAPED = re.compile(rb"^>+From ")


def parse_from_line(line):
    """INTERNALDATE from an mbox separator `From sender asctime-date`, or None."""
    parts = line.decode("latin-1").split()
    if len(parts) < 7:
        return None
    try:
        # asctime: Www Mmm dd hh:mm:ss yyyy, possibly with a zone after the time.
        text = " ".join(parts[2:6] + [parts[-1]])
        return datetime.strptime(text, "%a %b %d %H:%M:%S %Y").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def from_line(internaldate, sender="MAILER-DAEMON"):
    when = internaldate.astimezone(timezone.utc) if internaldate else datetime.now(timezone.utc)
    return f"From {sender or 'MAILER-DAEMON'} {when:%a %b %d %H:%M:%S %Y}\n".encode("ascii")


def is_mbox(path):
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False


def read_mbox(path, folder, *, max_size, skipped):
    """Messages of an mbox (mboxrd: one '>' is taken off '>From ' lines; a separator is a
    'From ' line at the start of the file or after an empty line)."""
    with open(path, "rb") as f:
        yield from _mbox_messages(f, folder, max_size=max_size, skipped=skipped, where=str(path))


def _mbox_messages(lines, folder, *, max_size, skipped, where):
    parts, size, too_big, date, previous_blank, number = None, 0, False, None, True, 0

    def finish():
        if parts is None:
            return None
        if too_big:
            skipped.add(f"{where} message {number}", f"larger than {max_size} bytes")
            return None
        raw = b"".join(parts)
        if raw.endswith(b"\n\n"):  # the empty line before the next separator is the mbox's
            raw = raw[:-1]
        elif raw.endswith(b"\r\n\r\n"):
            raw = raw[:-2]
        raw, flags = take_mbox_flags(to_crlf(raw))
        return SourceMessage(folder, raw, flags, date)

    for line in lines:
        if line.startswith(b"From ") and previous_blank:
            message = finish()
            if message is not None:
                yield message
            parts, size, too_big, date, number = [], 0, False, parse_from_line(line), number + 1
            previous_blank = False
            continue
        previous_blank = line in (b"\n", b"\r\n")
        if parts is None:
            raise SourceError(f"{where} is not an mbox file (it does not start with 'From ')")
        if too_big:
            continue
        if _FROM_ESCAPED.match(line):
            line = line[1:]
        size += len(line)
        if size > max_size:
            too_big, parts = True, []
            continue
        parts.append(line)
    message = finish()
    if message is not None:
        yield message


def escape_mbox_body(raw):
    """mboxrd: one more '>' in front of every line that reads '>*From '."""
    return re.sub(rb"(?m)^(>*From )", rb">\1", raw)


# --- Maildir ---------------------------------------------------------------------------

# Maildir info flags (cr.yp.to/proto/maildir.html), in the ASCII order they must be written.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}


def is_maildir(path):
    return os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new"))


def _keyword_lines(lines):
    keywords = {}
    for line in lines:
        number, _, name = line.strip().partition(" ")
        if number.isdigit() and name and int(number) < 26:
            keywords[chr(ord("a") + int(number))] = name
    return keywords


def read_keyword_file(path):
    """Dovecot's `dovecot-keywords`: lines `index name`; index 0 is letter a."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _keyword_lines(f)
    except FileNotFoundError:
        return {}


def maildir_flags(filename, keywords):
    """Flags in a Maildir file name's info part (`unique:2,FRS` plus keyword letters)."""
    _, sep, info = filename.rpartition(":2,")
    if not sep:
        return ()
    flags = []
    for letter in info:
        if letter in MAILDIR_FLAGS:
            flags.append(MAILDIR_FLAGS[letter])
        elif letter in keywords:
            flags.append(keywords[letter])
    return tuple(flags)


def maildir_folder_name(dirname):
    """'.Work.Clients' -> 'Work/Clients' (Maildir++, modified UTF-7 on disk)."""
    levels = dirname[1:].split(".")
    decoded = []
    for level in levels:
        try:
            decoded.append(decode_modified_utf7(level.encode("ascii")))
        except (ParseError, UnicodeEncodeError):
            decoded.append(level)  # not mUTF-7 (some writers store UTF-8): take it as it is
    return HIERARCHY_DELIMITER.join(decoded)


def maildir_dirname(folder):
    """'Work/Clients' -> '.Work.Clients'; a '.' inside a level becomes '_' (Maildir++ has no escape)."""
    levels = [encode_modified_utf7(level).decode("ascii").replace(".", "_") for level in folder.split(HIERARCHY_DELIMITER)]
    return "." + ".".join(levels)


def maildir_folders(root):
    """(folder name, directory) of a Maildir and its Maildir++ or fs-layout subfolders."""
    if is_maildir(root):
        yield "", root
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name in ("cur", "new", "tmp"):
            continue
        if entry.name.startswith(".") and entry.name not in (".", "..") and is_maildir(entry.path):
            yield maildir_folder_name(entry.name), entry.path
        elif not entry.name.startswith("."):
            for name, path in maildir_folders(entry.path):
                yield HIERARCHY_DELIMITER.join(filter(None, [entry.name, name])), path


def read_maildir_folder(path, folder, *, max_size, skipped):
    """Messages of one Maildir folder: new/ then cur/, oldest first (file mtime is
    INTERNALDATE, as Dovecot keeps it); keywords from the root's or folder's dovecot-keywords."""
    keywords = read_keyword_file(os.path.join(path, "dovecot-keywords"))
    entries = []
    for sub in ("new", "cur"):
        directory = os.path.join(path, sub)
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.is_file() and not entry.name.startswith("."):
                stat = entry.stat()
                entries.append((stat.st_mtime, entry.name, entry.path, stat.st_size, sub))
    entries.sort()
    for mtime, name, file_path, size, sub in entries:
        if size > max_size:
            skipped.add(file_path, f"larger than {max_size} bytes")
            continue
        with open(file_path, "rb") as f:
            raw = f.read()
        flags = maildir_flags(name, keywords) if sub == "cur" else ()
        yield SourceMessage(folder, to_crlf(raw), flags, datetime.fromtimestamp(int(mtime), timezone.utc))


# --- EML and ZIP -----------------------------------------------------------------------


def eml_date(raw):
    """INTERNALDATE for a lone message: its Date field, else None (now)."""
    header, _ = split_header(raw)
    for name, whole in _header_fields(header):
        if name == b"date":
            try:
                return email.utils.parsedate_to_datetime(whole.split(b":", 1)[1].decode("latin-1").strip())
            except (TypeError, ValueError, IndexError):
                return None
    return None


def _eml_message(raw, folder):
    raw = to_crlf(raw)
    return SourceMessage(folder, raw, (), eml_date(raw))


def _zip_folder(parts):
    """The folder of a ZIP member's directory parts: fs layout ("Work/Clients") or
    Maildir++ (".Work.Clients", as `mail export --format maildir` and the download write)."""
    if len(parts) == 1 and parts[0].startswith(".") and parts[0] not in (".", ".."):
        return maildir_folder_name(parts[0])
    return HIERARCHY_DELIMITER.join(parts)


def read_zip(path, *, max_size, skipped):
    """Messages of a ZIP: `*.eml` members (folder = the member's directory), `*.mbox`
    members (folder = the name without .mbox), and Maildir members (`dir/cur/name:2,S`,
    folder = `dir`, keywords from `dir/dovecot-keywords`); members are read one at a
    time, an mbox member line by line."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SourceError(f"{path} is not a readable ZIP file: {error}") from None
    with archive:
        members = sorted((m for m in archive.infolist() if not m.is_dir()), key=lambda m: m.filename)
        keywords = {}  # directory -> {letter: keyword}
        for member in members:
            directory, _, name = member.filename.rpartition("/")
            if name == "dovecot-keywords" and member.file_size < 65536:
                with archive.open(member) as f:
                    keywords[directory] = _keyword_lines(f.read().decode("utf-8", "replace").splitlines())
        for member in members:
            parts = member.filename.split("/")
            if parts[-1].lower().endswith(".mbox"):
                folder = HIERARCHY_DELIMITER.join(parts[:-1] + [parts[-1][: -len(".mbox")]])
                with archive.open(member) as f:
                    yield from _mbox_messages(f, folder, max_size=max_size, skipped=skipped,
                                              where=f"{path}:{member.filename}")
                continue
            if parts[-1].lower().endswith(".eml"):
                folder, flags = HIERARCHY_DELIMITER.join(parts[:-1]), ()
            elif len(parts) >= 2 and parts[-2] in ("cur", "new"):
                folder = _zip_folder(parts[:-2])
                directory = "/".join(parts[:-2])
                flags = maildir_flags(parts[-1], keywords.get(directory, {})) if parts[-2] == "cur" else ()
            else:
                continue
            if member.file_size > max_size:
                skipped.add(f"{path}:{member.filename}", f"larger than {max_size} bytes")
                continue
            with archive.open(member) as f:
                message = _eml_message(f.read(), folder)
            message.flags = flags
            if len(parts) >= 2 and parts[-2] in ("cur", "new"):
                # Maildir: a file name starts with its delivery time (INTERNALDATE), to the
                # second; the member's own time has only two-second steps.
                stamp = parts[-1].split(".", 1)[0]
                message.internaldate = (datetime.fromtimestamp(int(stamp), timezone.utc) if stamp.isdigit()
                                        else datetime(*member.date_time, tzinfo=timezone.utc))
            elif message.internaldate is None and flags:
                message.internaldate = datetime(*member.date_time, tzinfo=timezone.utc)
            yield message


# --- Choosing a reader -------------------------------------------------------------------


def read_path(path, *, max_size, skipped):
    """Every message under `path`, folder by folder, whatever its format:
    a Maildir (root = the root folder), a ZIP, an mbox file, an .eml file, or a directory
    of these (Thunderbird's `Name.sbd/` directories are the folder `Name`'s children)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SourceError(f"{path} does not exist")
    if os.path.isdir(path):
        if is_maildir(path) or any(e.name.startswith(".") and is_maildir(e.path) for e in os.scandir(path) if e.is_dir()):
            for folder, directory in maildir_folders(path):
                yield from read_maildir_folder(directory, folder, max_size=max_size, skipped=skipped)
            return
        yield from _read_tree(path, "", max_size=max_size, skipped=skipped)
        return
    yield from _read_file(path, "", max_size=max_size, skipped=skipped, named=False)


def _read_file(path, folder, *, max_size, skipped, named):
    name = os.path.basename(path)
    if zipfile.is_zipfile(path):
        for message in read_zip(path, max_size=max_size, skipped=skipped):
            message.folder = HIERARCHY_DELIMITER.join(filter(None, [folder, message.folder]))
            yield message
    elif is_mbox(path):
        if named:  # in a directory, an mbox file is the folder of its name
            folder = HIERARCHY_DELIMITER.join(filter(None, [folder, re.sub(r"\.mbox$", "", name)]))
        yield from read_mbox(path, folder, max_size=max_size, skipped=skipped)
    elif name.lower().endswith(".eml"):
        if os.path.getsize(path) > max_size:
            skipped.add(path, f"larger than {max_size} bytes")
            return
        with open(path, "rb") as f:
            yield _eml_message(f.read(), folder)
    elif name.endswith(".msf"):
        return  # Thunderbird's index beside an mbox
    elif not named:
        raise SourceError(f"{path} is not mbox, Maildir, EML or ZIP")
    else:
        skipped.add(path, "not mbox, EML or ZIP")


def _read_tree(directory, folder, *, max_size, skipped):
    entries = sorted(os.scandir(directory), key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            yield from _read_file(entry.path, folder, max_size=max_size, skipped=skipped, named=True)
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        child = HIERARCHY_DELIMITER.join(filter(None, [folder, re.sub(r"\.sbd$", "", entry.name)]))
        if is_maildir(entry.path):
            for name, path in maildir_folders(entry.path):
                yield from read_maildir_folder(path, HIERARCHY_DELIMITER.join(filter(None, [child, name])),
                                               max_size=max_size, skipped=skipped)
        else:
            yield from _read_tree(entry.path, child, max_size=max_size, skipped=skipped)
