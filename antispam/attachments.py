"""Dangerous attachments and viruses: in mail arriving on the MX port, and in mail our
users send (submission) or trusted networks relay, so that no one sends a program or a
virus out through us.

inspect() looks at every leaf part of the message:
- by name (Content-Disposition filename or Content-Type name, RFC 2231 decoded): programs
  and scripts Windows or a desktop runs on a double click (.exe, .scr, .js, .vbs, .ps1,
  .lnk, …), with a "double extension" named as such when a harmless-looking one comes
  first (invoice.pdf.exe);
- by content, whatever the name and type claim: executables (PE "MZ", ELF, Mach-O, Java
  class) and, in attachments, scripts starting with "#!";
- ZIP archives (by content), two levels deep: each member's name, and the first bytes of
  each member. Encrypted members are judged by name only. Bounded: MAX_MEMBERS per archive,
  MAX_PARTS parts per message, and only a member's first bytes are ever decompressed.

check() turns the findings into the action the recipients' domains ask for
(mta.models.InboundPolicy.attachments, else MAILSUITE_ATTACHMENT_POLICY; for outgoing
mail, remote recipients get the sender's domain's policy): one message has one fate at
DATA, so the strictest of the policies applies: reject (554 5.7.1) > quarantine (into
Junk; for outgoing mail, refused too) > allow.

Virus scanning (antispam.clamd) when MAILSUITE_CLAMD is set: scanning is then required.
An infected message is refused `554 5.7.1`; no verdict (clamd down, slow, confused) is a
temporary `451 4.7.1`, so the message is never delivered unscanned; a message larger than
clamd will take is refused `552 5.3.4` (retrying cannot help).

All of it is synchronous and CPU- or socket-bound, no database: mta.smtpd runs check()
in the checks' thread pool. The webmail, which sends without SMTP, calls check_outgoing().
"""
import base64
import binascii
import email
import email.errors
import email.header
import email.policy
import io
import logging
import re
import zipfile
from dataclasses import dataclass

from django.conf import settings

from antispam import clamd

log = logging.getLogger(__name__)

MAX_PARTS = 500
MAX_MEMBERS = 1000
MAX_DEPTH = 2  # an archive in an archive is opened; one more level is not
MAGIC_BYTES = 8

# Run by the operating system or a desktop on a double click.
DANGEROUS_EXTENSIONS = frozenset("""
    ade adp app application appref-ms apk bas bat cab chm cmd com cpl crt dll dmg exe gadget hlp hta
    inf ins isp jar jnlp js jse ksh lib lnk mde msc msh msh1 msh2 msi msp mst pif ps1 ps1xml ps2
    psc1 psc2 reg scf scr sct sh shb shs sys url vb vbe vbs vxd wsc wsf wsh xbap xll
""".split())
# What the name before a dangerous extension pretends to be.
DECOY_EXTENSIONS = frozenset("""
    doc docx xls xlsx ppt pptx pdf txt rtf jpg jpeg png gif bmp tif tiff mp3 mp4 avi mov wav zip rar
    htm html csv odt ods
""".split())
ARCHIVE_EXTENSIONS = frozenset({"zip", "jar"})

_MAGIC = (
    (b"MZ", "a Windows program (PE)"),
    (b"\x7fELF", "a Linux program (ELF)"),
    (b"\xfe\xed\xfa\xce", "a macOS program (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "a macOS program (Mach-O)"),
    (b"\xce\xfa\xed\xfe", "a macOS program (Mach-O)"),
    (b"\xcf\xfa\xed\xfe", "a macOS program (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "a macOS universal program or Java class"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", "a Windows shortcut (LNK)"),
)
_ZIP_MAGIC = b"PK\x03\x04"
_ORDER = {"allow": 0, "quarantine": 1, "reject": 2}


@dataclass(frozen=True)
class Finding:
    filename: str  # as shown to people: "invoice.zip → setup.exe"
    reason: str


@dataclass(frozen=True)
class Decision:
    action: str  # "allow", "quarantine", "reject", or "tempfail" (no virus scan verdict)
    findings: tuple = ()
    refusal: str | None = None

    @property
    def junk(self):
        return self.action == "quarantine"


ALLOW = Decision("allow")


# What is in the message -------------------------------------------------------------------


def _extensions(filename):
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().strip(". ").lower()
    parts = [p.strip() for p in base.split(".")]
    return parts[1:] if len(parts) > 1 else []


def name_reason(filename):
    """Why a file of this name is dangerous, or None."""
    extensions = _extensions(filename)
    if not extensions or extensions[-1] not in DANGEROUS_EXTENSIONS:
        return None
    if len(extensions) >= 2 and extensions[-2] in DECOY_EXTENSIONS:
        return f"a double extension hiding a .{extensions[-1]} file"
    return f"a .{extensions[-1]} file, which runs as a program"


def content_reason(head, *, attachment=True):
    """Why content starting with `head` is dangerous, or None."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if attachment and head.startswith(b"#!"):
        return "a script (#!)"
    return None


def _archive_findings(data, shown, depth):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return []
    found = []
    for info in members[:MAX_MEMBERS]:
        if info.is_dir():
            continue
        member = f"{shown} → {info.filename}"
        reason = name_reason(info.filename)
        if reason:
            found.append(Finding(member, reason))
            continue
        if info.flag_bits & 0x1:  # encrypted: only the name can be judged
            continue
        try:
            with archive.open(info) as f:
                head = f.read(MAGIC_BYTES)
                reason = content_reason(head)
                if reason:
                    found.append(Finding(member, reason))
                elif head.startswith(_ZIP_MAGIC) and depth < MAX_DEPTH:
                    # A nested archive: read it whole, but no more than the message could hold.
                    inner = head + f.read(settings.MAILSUITE_MESSAGE_SIZE_LIMIT)
                    found += _archive_findings(inner, member, depth + 1)
        except (zipfile.BadZipFile, RuntimeError, ValueError, OSError, EOFError, NotImplementedError):
            continue  # a damaged or unsupported member: judged by its name only
    return found


def _filename(part):
    try:
        name = part.get_filename() or ""
    except (ValueError, TypeError, IndexError, LookupError):
        return ""
    if "=?" in name:  # an RFC 2047 encoded word, as some clients write names
        try:
            name = str(email.header.make_header(email.header.decode_header(name)))
        except (ValueError, LookupError, email.errors.HeaderParseError):
            pass
    return name


def inspect(raw, message=None):
    """[Finding] of the dangerous attachments in the message `raw` (bytes); `message` is
    `raw` already parsed with email.policy.compat32, if the caller has it."""
    # compat32: several times faster than email.policy.default, and enough here
    # (get_filename() decodes RFC 2231 and encoded words alike).
    if message is None:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    found = []
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            break
        if part.is_multipart():
            continue
        filename = _filename(part)
        shown = filename or part.get_content_type()
        reason = name_reason(filename) if filename else None
        if reason:
            found.append(Finding(shown, reason))
            continue
        is_attachment = bool(filename) or part.get_content_disposition() == "attachment"
        if part.get_content_maintype() == "text" and not is_attachment:
            continue  # the message's own text
        head = _head(part)
        reason = content_reason(head, attachment=is_attachment)
        if reason:
            found.append(Finding(shown, reason))
        elif head.startswith(_ZIP_MAGIC):
            found += _archive_findings(_payload(part), shown, 1)
    return found


def _payload(part):
    try:
        return part.get_payload(decode=True) or b""
    except (ValueError, TypeError, AssertionError):
        return b""


def _head(part):
    """The first MAGIC_BYTES of a part's decoded content, decoding no more of base64 than that."""
    if part.get("Content-Transfer-Encoding", "").strip().lower() == "base64":
        text = part.get_payload()
        if isinstance(text, str):
            start = "".join(text[:64].split())[:16]
            try:
                return base64.b64decode(start[: len(start) // 4 * 4])[:MAGIC_BYTES]
            except (ValueError, binascii.Error):
                pass
    return _payload(part)[:MAGIC_BYTES]


# What to do about it -----------------------------------------------------------------------


def strictest(actions):
    return max(actions, key=_ORDER.__getitem__, default=settings.MAILSUITE_ATTACHMENT_POLICY)


def _describe(findings):
    first = findings[0]
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    return f"{first.filename}: {first.reason}{more}"


def _printable(text):
    return re.sub(r"[^\x20-\x7e]", "?", text)[:200]


def check(raw, *, actions, outgoing=False, message=None):
    """The Decision for the message `raw` whose recipients' domains ask for `actions`
    (each "reject", "quarantine" or "allow"). Scans with clamd first when MAILSUITE_CLAMD is set.

    `outgoing`: mail from our own users (submission) or trusted networks, which may leave
    the server: there is no Junk folder at the other end to quarantine into, so
    "quarantine" refuses it as "reject" does (the user is told at once, nothing leaves).
    `message`: as for inspect()."""
    if settings.MAILSUITE_CLAMD:
        refusal = _scan(raw)
        if refusal:
            return Decision("reject" if refusal.startswith("5") else "tempfail", (), refusal)
    action = strictest(actions)
    if outgoing and action == "quarantine":
        action = "reject"
    if action == "allow":
        return ALLOW  # nothing to enforce: the parts are not even looked at
    findings = tuple(inspect(raw, message))
    if not findings:
        return ALLOW
    log.info("attachments: %s action=%s %s", len(findings), action, _printable(_describe(findings)))
    if action == "reject":
        return Decision(
            "reject", findings,
            f"554 5.7.1 Message refused: it carries {_printable(_describe(findings))}",
        )
    return Decision("quarantine", findings)


def check_outgoing(raw, *, sender, resolutions):
    """check() for a message a user sends other than over SMTP (the webmail's send()): the
    local recipients' domains' policies, the sender's domain's for recipients elsewhere
    (`resolutions`: mta.recipients' of each recipient). Synchronous: reads the policies
    (database, when not in memory) and talks to clamd."""
    from antispam import inbound_policy

    sender_domain = sender.rpartition("@")[2].lower()
    actions = {
        inbound_policy.get(sender_domain if r.relayed else r.address.rpartition("@")[2]).attachment_action
        for r in resolutions
    }
    return check(raw, actions=actions, outgoing=True)


def _scan(raw):
    try:
        verdict = clamd.scan(raw, address=settings.MAILSUITE_CLAMD, timeout=settings.MAILSUITE_CLAMD_TIMEOUT)
    except clamd.TooLarge:
        log.warning("clamd: message of %d bytes is over the scanner's limit", len(raw))
        return "552 5.3.4 Message too large to be scanned for viruses"
    except clamd.ScannerUnavailable as error:
        log.warning("clamd: no verdict: %s", error)
        return "451 4.7.1 Virus scanner unavailable; please try again later"
    if verdict.infected:
        log.info("clamd: infected signature=%s", verdict.signature)
        return f"554 5.7.1 Message refused: virus found ({_printable(verdict.signature)})"
    return None
