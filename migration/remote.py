"""Talking to other mail servers as a client: IMAP (migration, external accounts) and POP3.

Implementation notes:
- Only the stdlib clients (imaplib, poplib), with a socket timeout on every connection:
  a remote server that stops answering fails the run instead of hanging it.
- TLS modes: "implicit" (TLS from the first byte, 993/995), "starttls" (STLS for POP3),
  "none" (plaintext: meant for loopback and tests). Certificates are verified unless
  `verify=False` is asked for, and then only the chain is skipped.
- Responses are parsed here, tolerant of the order in which a server lists FETCH items,
  and of unsolicited FETCH responses (flag changes by other sessions), which are ignored.
- No database work: callers store what comes back.
"""
import imaplib
import poplib
import re
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime

from imap.parser import ParseError, decode_modified_utf7

TIMEOUT = 60  # seconds for any one read from a remote server
USE_CONDSTORE = True  # a test seam: False behaves as with a server without CONDSTORE
TLS_MODES = ("implicit", "starttls", "none")
DEFAULT_PORTS = {("imap", "implicit"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                 ("pop3", "implicit"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110}


class RemoteError(Exception):
    """The remote server refused or failed; the message is one line for the user."""


def tls_context(verify):
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe(error):
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, socket.timeout):
        return "the server did not answer in time"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


# --- IMAP -------------------------------------------------------------------------------


@dataclass
class RemoteFolder:
    name: str  # as the server spells it (decoded from modified UTF-7)
    encoded: str  # as it goes on the wire
    delimiter: str
    attributes: tuple


@dataclass
class RemoteMessage:
    uid: int
    flags: tuple = ()
    internaldate: datetime | None = None
    size: int = 0
    raw: bytes | None = None


_LIST_LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"(?P<delim>\\.|[^"])"|NIL) (?P<name>.*)$')
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_FETCH_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def parse_list_line(line):
    """A LIST response (without `* LIST `) as a RemoteFolder, or None if unreadable."""
    if isinstance(line, tuple):  # the name came as a literal
        line = line[0].rsplit(b"{", 1)[0] + b'"' + line[1].replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    match = _LIST_LINE.match(line)
    if not match:
        return None
    name = match["name"]
    if name.startswith(b'"') and name.endswith(b'"'):
        name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
    delimiter = (match["delim"] or b"").replace(b"\\\\", b"\\").replace(b'\\"', b'"').decode("ascii", "replace")
    encoded = name.decode("utf-8", "replace")
    try:
        decoded = decode_modified_utf7(name)
    except ParseError:
        decoded = encoded  # a server sending UTF-8 names without UTF8=ACCEPT
    return RemoteFolder(decoded, encoded, delimiter, tuple(match["attrs"].decode("ascii", "replace").split()))


def parse_internaldate(text):
    try:
        return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def parse_fetch(data):
    """RemoteMessages from imaplib's FETCH data (bytes and (prefix, literal) tuples)."""
    messages = []
    for item in data:
        head, literal = (item[0], item[1]) if isinstance(item, tuple) else (item, None)
        if not isinstance(head, bytes):
            continue
        uid = _FETCH_UID.search(head)
        if not uid:
            continue
        flags = _FETCH_FLAGS.search(head)
        date = _FETCH_DATE.search(head)
        size = _FETCH_SIZE.search(head)
        messages.append(
            RemoteMessage(
                uid=int(uid[1]),
                flags=tuple(flags[1].decode("utf-8", "replace").split()) if flags else (),
                internaldate=parse_internaldate(date[1].decode("ascii")) if date else None,
                size=int(size[1]) if size else 0,
                raw=literal,
            )
        )
    return messages


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class IMAPClient:
    """A logged-in IMAP session: `with IMAPClient(host, port, tls=…, user=…, password=…) as c`."""

    def __init__(self, host, port, *, tls, user, password, verify=True):
        if tls not in TLS_MODES:
            raise RemoteError(f"unknown TLS mode {tls!r}: implicit, starttls or none")
        self.where = f"{host}:{port}"
        try:
            if tls == "implicit":
                self.conn = imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(verify), timeout=TIMEOUT)
            else:
                self.conn = imaplib.IMAP4(host, port, timeout=TIMEOUT)
                if tls == "starttls":
                    self.conn.starttls(tls_context(verify))
        except (OSError, imaplib.IMAP4.error) as error:
            raise RemoteError(f"cannot connect to {self.where}: {_describe(error)}") from None
        try:
            self.conn.login(user, password)
        except imaplib.IMAP4.error as error:
            self.close()
            reason = error.args[0].decode("utf-8", "replace") if error.args and isinstance(error.args[0], bytes) else str(error)
            raise RemoteError(f"{self.where} refused the login: {reason}") from None
        except OSError as error:
            self.close()
            raise RemoteError(f"{self.where}: {_describe(error)}") from None
        # Servers announce more once logged in (RFC 9051 §6.2.3: the capability list may
        # change after LOGIN), e.g. Dovecot's CONDSTORE and NAMESPACE.
        data = self.call("CAPABILITY", self.conn.capability)
        self.capabilities = set(b" ".join(d for d in data if d).decode("ascii", "replace").upper().split())
        self.highestmodseq = 0  # of the folder last examined, when CONDSTORE is on
        self.condstore = False
        if USE_CONDSTORE and "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities:
            # RFC 7162 §3.1 + RFC 5161: after ENABLE CONDSTORE every EXAMINE reports HIGHESTMODSEQ.
            self.call("ENABLE CONDSTORE", self.conn.enable, "CONDSTORE")
            self.condstore = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.conn.logout()
        except Exception:  # noqa: BLE001 - the session is over either way
            pass

    def _ok(self, typ, data, what):
        if typ != "OK":
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise RemoteError(f"{self.where}: {what} failed: {text}")
        return data

    def call(self, what, fn, *args):
        try:
            typ, data = fn(*args)
        except (OSError, imaplib.IMAP4.error) as error:
            raise RemoteError(f"{self.where}: {what} failed: {_describe(error)}") from None
        return self._ok(typ, data, what)

    def folders(self):
        data = self.call("LIST", self.conn.list, '""', "*")
        folders = [parse_list_line(line) for line in data if line]
        return [f for f in folders if f and not {"\\noselect", "\\nonexistent"} & {a.lower() for a in f.attributes}]

    def personal_prefix(self):
        """The personal namespace's prefix (RFC 2342), e.g. "INBOX." on some servers; "" if none."""
        if "NAMESPACE" not in self.capabilities:
            return ""
        data = self.call("NAMESPACE", self.conn.namespace)
        match = re.match(rb'\(\("([^"]*)"', data[0] or b"")
        return match[1].decode("utf-8", "replace") if match else ""

    def examine(self, folder):
        """Open `folder` read-only; (UIDVALIDITY, message count). With CONDSTORE on,
        `highestmodseq` is then the folder's HIGHESTMODSEQ (RFC 7162 §3.1.2.1), else 0."""
        self.conn.response("HIGHESTMODSEQ")  # forget the previous folder's
        data = self.call(f"EXAMINE {folder.name}", self.conn.select, quote(folder.encoded), True)
        count = int(data[0]) if data and data[0] and data[0].isdigit() else 0
        # imaplib files response codes such as [UIDVALIDITY n] (RFC 9051 §7.1) by name.
        _, codes = self.conn.response("UIDVALIDITY")
        uidvalidity = int(codes[0]) if codes and codes[0] and codes[0].isdigit() else 0
        _, codes = self.conn.response("HIGHESTMODSEQ")
        self.highestmodseq = int(codes[-1]) if self.condstore and codes and codes[-1] and codes[-1].isdigit() else 0
        return uidvalidity, count

    def flags(self, changedsince=None):
        """{remote UID: flags} of every message in the examined folder, or with
        `changedsince` (CONDSTORE, RFC 7162 §3.1.4.1) only of those whose MODSEQ is above it."""
        modifier = f" (CHANGEDSINCE {changedsince})" if changedsince is not None else ""
        data = self.call("UID FETCH FLAGS", self.conn.uid, "FETCH", "1:*", f"(UID FLAGS){modifier}")
        return {m.uid: m.flags for m in parse_fetch(data)}

    def uids(self):
        data = self.call("UID SEARCH", self.conn.uid, "SEARCH", "ALL")
        return sorted(int(uid) for uid in b" ".join(d for d in data if d).split())

    def fetch(self, uids, items):
        if not uids:
            return []
        data = self.call("UID FETCH", self.conn.uid, "FETCH", sequence_set(uids), f"({items})")
        return parse_fetch(data)


# --- Sets of UIDs as text --------------------------------------------------------------------


def sequence_set(uids):
    """Sorted UIDs as IMAP sequence-set text: [1, 2, 3, 7] -> "1:3,7"."""
    parts, uids = [], sorted(set(uids))
    start = previous = None
    for uid in uids + [None]:
        if start is not None and uid == previous + 1:
            previous = uid
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}:{previous}")
        start = previous = uid
    return ",".join(parts)


def parse_sequence_set(text):
    uids = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition(":")
        uids.update(range(int(low), int(high or low) + 1))
    return uids


# --- POP3 --------------------------------------------------------------------------------


class POP3Client:
    """A logged-in POP3 session (RFC 1939; STLS RFC 2595)."""

    def __init__(self, host, port, *, tls, user, password, verify=True):
        if tls not in TLS_MODES:
            raise RemoteError(f"unknown TLS mode {tls!r}: implicit, starttls or none")
        self.where = f"{host}:{port}"
        try:
            if tls == "implicit":
                self.conn = poplib.POP3_SSL(host, port, context=tls_context(verify), timeout=TIMEOUT)
            else:
                self.conn = poplib.POP3(host, port, timeout=TIMEOUT)
                if tls == "starttls":
                    self.conn.stls(tls_context(verify))
        except (OSError, poplib.error_proto) as error:
            raise RemoteError(f"cannot connect to {self.where}: {_describe(error)}") from None
        try:
            self.conn.user(user)
            self.conn.pass_(password)
        except poplib.error_proto as error:
            self.close(quit=False)
            raise RemoteError(f"{self.where} refused the login: {_text(error)}") from None
        except OSError as error:
            self.close(quit=False)
            raise RemoteError(f"{self.where}: {_describe(error)}") from None

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        # QUIT commits DELEs (RFC 1939 §6); after a failure, drop the line so none happen.
        self.close(quit=kind is None)

    def close(self, *, quit=True):
        try:
            if quit:
                self.conn.quit()
            else:
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass

    def _do(self, what, fn, *args):
        try:
            return fn(*args)
        except (OSError, poplib.error_proto) as error:
            raise RemoteError(f"{self.where}: {what} failed: {_text(error)}") from None

    def listing(self):
        """[(message number, unique id, size)] (UIDL and LIST)."""
        _, uidl, _ = self._do("UIDL", self.conn.uidl)
        _, sizes, _ = self._do("LIST", self.conn.list)
        size_of = {int(n): int(s) for n, s in (line.split()[:2] for line in sizes)}
        result = []
        for line in uidl:
            number, uid = line.split(None, 1)
            result.append((int(number), uid.decode("ascii", "replace").strip(), size_of.get(int(number), 0)))
        return result

    def retrieve(self, number):
        _, lines, _ = self._do("RETR", self.conn.retr, number)
        return b"\r\n".join(lines) + b"\r\n"

    def delete(self, number):
        self._do("DELE", self.conn.dele, number)


def _text(error):
    value = error.args[0] if error.args else error
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else _describe(value) if isinstance(value, OSError) else str(value)
