"""Dangerous attachments: by name, by content, inside ZIP archives (pure tables), then the
per-domain policy (reject, quarantine into Junk, allow) over real SMTP sessions."""
import email.policy
import io
import zipfile
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts import actions as account_actions
from antispam import attachments, inbound_policy
from mailstore.models import Message
from mta import actions
from tests.antispam.conftest import send

PE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56
MACHO = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 56
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"


@pytest.fixture(autouse=True)
def fresh_policies(monkeypatch):
    """Policies saved in a test apply at once and do not outlive it (the SMTP server's copy)."""
    monkeypatch.setattr(inbound_policy, "TTL", 0)
    yield
    inbound_policy.forget()


def mail(*files, body="See attached.\n"):
    """A message with `files`: (filename, bytes, content type) each."""
    msg = EmailMessage()
    msg["From"] = "Sam <sam@sender.test>"
    msg["To"] = "Alice <alice@example.test>"
    msg["Subject"] = "The files"
    msg["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<files@sender.test>"
    msg.set_content(body)
    for filename, data, content_type in files:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=email.policy.SMTP)


def zipped(**members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name.replace("__", "/").replace("_dot_", "."), data)
    return buffer.getvalue()


@pytest.mark.parametrize("filename, reason", [
    ("setup.exe", "a .exe file, which runs as a program"),
    ("SETUP.EXE", "a .exe file, which runs as a program"),
    ("invoice.pdf.exe", "a double extension hiding a .exe file"),
    ("Invoice.PDF .Scr", "a double extension hiding a .scr file"),
    ("photo.jpg.js", "a double extension hiding a .js file"),
    ("update.tar.exe", "a .exe file, which runs as a program"),  # .tar is no decoy
    ("run.sh", "a .sh file, which runs as a program"),
    ("macro.vbs", "a .vbs file, which runs as a program"),
    ("C:\\Users\\x\\payload.ps1", "a .ps1 file, which runs as a program"),
    ("shortcut.lnk", "a .lnk file, which runs as a program"),
    ("trailing.exe.", "a .exe file, which runs as a program"),
    ("report.pdf", None),
    ("archive.tar.gz", None),
    ("exe", None),
    ("README", None),
    ("notes.txt", None),
])
def test_name_reason(filename, reason):
    assert attachments.name_reason(filename) == reason


@pytest.mark.parametrize("head, attachment, reason", [
    (PE, True, "a Windows program (PE)"),
    (ELF, True, "a Linux program (ELF)"),
    (MACHO, True, "a macOS program (Mach-O)"),
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x02", True, "a macOS universal program or Java class"),
    (b"L\x00\x00\x00\x01\x14\x02\x00", True, "a Windows shortcut (LNK)"),
    (b"#!/bin/sh\n", True, "a script (#!)"),
    (b"#!/bin/sh\n", False, None),  # the message's own text may start so
    (PDF, True, None),
    (b"PK\x03\x04", True, None),  # an archive: looked into, not refused as such
    (b"", True, None),
])
def test_content_reason(head, attachment, reason):
    assert attachments.content_reason(head[:8], attachment=attachment) == reason


def found(raw):
    return [(f.filename, f.reason) for f in attachments.inspect(raw)]


def test_inspect_finds_programs_by_name_and_by_content():
    assert found(mail(("report.pdf", PDF, "application/pdf"))) == []
    assert found(mail(("photo.jpg", PE, "image/jpeg"))) == [("photo.jpg", "a Windows program (PE)")]
    assert found(mail(("update", ELF, "application/octet-stream"))) == [("update", "a Linux program (ELF)")]
    assert found(mail(("notes.txt", b"#!/usr/bin/perl\nprint 1;\n", "text/plain"))) == [("notes.txt", "a script (#!)")]
    assert found(mail(("factura.pdf.exe", PDF, "application/pdf"))) == [
        ("factura.pdf.exe", "a double extension hiding a .exe file"),
    ]
    assert found(mail(body="#!/bin/sh is how a script starts\n")) == []


def test_inspect_reads_rfc2231_file_names():
    raw = mail(("Rechnung ü.pdf.exe", b"x", "application/octet-stream"))
    assert b"filename*=" in raw
    assert found(raw) == [("Rechnung ü.pdf.exe", "a double extension hiding a .exe file")]
    # Some clients write RFC 2047 encoded words in the parameter instead.
    encoded = raw.replace(
        raw[raw.index(b"filename*="):].split(b"\r\n")[0], b'filename="=?UTF-8?B?UmVjaG51bmcgw7wucGRmLmV4ZQ==?="',
    )
    assert found(encoded) == [("Rechnung ü.pdf.exe", "a double extension hiding a .exe file")]


def test_inspect_looks_into_zip_archives_two_levels_deep():
    assert found(mail(("docs.zip", zipped(report_dot_pdf=PDF, notes_dot_txt=b"hello"), "application/zip"))) == []
    assert found(mail(("docs.zip", zipped(invoice_dot_pdf_dot_exe=b"x"), "application/zip"))) == [
        ("docs.zip → invoice.pdf.exe", "a double extension hiding a .exe file"),
    ]
    assert found(mail(("docs.zip", zipped(folder__data_dot_bin=PE), "application/zip"))) == [
        ("docs.zip → folder/data.bin", "a Windows program (PE)"),
    ]
    inner = zipped(tool_dot_js=b"WScript.Echo(1)")
    assert found(mail(("outer.zip", zipped(inner_dot_zip=inner), "application/octet-stream"))) == [
        ("outer.zip → inner.zip → tool.js", "a .js file, which runs as a program"),
    ]
    third = zipped(level2_dot_zip=zipped(level3_dot_zip=zipped(deep_dot_bin=PE)))
    assert found(mail(("deep.zip", third, "application/zip"))) == []  # the third level is not opened
    # An archive whatever its name says.
    assert found(mail(("photos.jpg", zipped(setup_dot_exe=b"x"), "image/jpeg"))) == [
        ("photos.jpg → setup.exe", "a .exe file, which runs as a program"),
    ]


def test_inspect_survives_damaged_input():
    assert found(mail(("broken.zip", b"PK\x03\x04" + b"\xff" * 100, "application/zip"))) == []
    assert found(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Transfer-Encoding: base64\r\n"
                 b"Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\n!!!not base64\r\n--x--\r\n") == []
    assert found(b"\x00\xff garbage without a header") == []


def test_the_strictest_policy_of_the_recipients_applies(settings):
    assert attachments.strictest({"allow", "quarantine"}) == "quarantine"
    assert attachments.strictest({"allow", "quarantine", "reject"}) == "reject"
    assert attachments.strictest({"allow"}) == "allow"
    settings.MAILSUITE_ATTACHMENT_POLICY = "quarantine"
    assert attachments.strictest(set()) == "quarantine"


def test_check_decides(settings):
    settings.MAILSUITE_CLAMD = ""
    bad = mail(("setup.exe", PE, "application/octet-stream"), ("run.bat", b"echo", "application/octet-stream"))
    rejected = attachments.check(bad, actions={"reject"})
    assert rejected.refusal == "554 5.7.1 Message refused: it carries setup.exe: a .exe file, which runs as a program (and 1 more)"
    assert attachments.check(bad, actions={"quarantine"}) == attachments.Decision(
        "quarantine", tuple(attachments.inspect(bad)),
    )
    assert attachments.check(bad, actions={"allow"}) is attachments.ALLOW
    assert attachments.check(mail(("report.pdf", PDF, "application/pdf")), actions={"reject"}) is attachments.ALLOW


# Over SMTP ------------------------------------------------------------------------------

smtp_session = pytest.mark.django_db(transaction=True)
EXE = ("setup.exe", PE, "application/octet-stream")


def folders(account):
    return sorted(Message.objects.filter(folder__account=account).values_list("folder__name", "subject"))


@smtp_session
def test_by_default_a_program_is_refused(smtp_server, alice):
    assert send(smtp_server, mail(EXE)) == (554, "5.7.1 Message refused: it carries setup.exe: a .exe file, which runs as a program")
    assert folders(alice) == []
    assert send(smtp_server, mail(("report.pdf", PDF, "application/pdf")))[0] == 250
    assert folders(alice) == [("INBOX", "The files")]


@smtp_session
def test_a_domain_may_quarantine_instead(smtp_server, alice):
    actions.set_inbound_policy("example.test", attachments="quarantine")
    assert send(smtp_server, mail(EXE))[0] == 250
    assert folders(alice) == [("Junk", "The files")]


@smtp_session
def test_a_domain_may_allow_them(smtp_server, alice):
    actions.set_inbound_policy("example.test", attachments="allow")
    assert send(smtp_server, mail(EXE))[0] == 250
    assert folders(alice) == [("INBOX", "The files")]


@smtp_session
def test_the_server_default_is_configurable(smtp_server, alice, settings):
    settings.MAILSUITE_ATTACHMENT_POLICY = "quarantine"
    assert send(smtp_server, mail(EXE))[0] == 250
    assert folders(alice) == [("Junk", "The files")]


@smtp_session
def test_with_recipients_in_several_domains_the_strictest_wins(smtp_server, alice):
    account_actions.create_domain("other.test")
    carol = account_actions.create_account("carol@other.test", password="x" * 12)
    actions.set_inbound_policy("example.test", attachments="allow")
    actions.set_inbound_policy("other.test", attachments="quarantine")
    import smtplib

    client = smtplib.SMTP("127.0.0.1", smtp_server.port, local_hostname="mail.sender.test", timeout=30,
                          source_address=("127.0.0.2", 0))
    try:
        client.ehlo()
        client.mail("sam@sender.test")
        assert client.rcpt("alice@example.test")[0] == 250
        assert client.rcpt("carol@other.test")[0] == 250
        assert client.data(mail(EXE))[0] == 250
    finally:
        client.close()
    assert folders(alice) == [("Junk", "The files")]
    assert folders(carol) == [("Junk", "The files")]


# Never an exception, whatever arrives ------------------------------------------------------

_PIECES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"\r\n", b"--b\r\n", b"--b--\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Disposition: attachment; filename=\"a.zip\"\r\n",
    b"filename*=utf-8''%FF%FE.exe\r\n", b"UEsDBAoAAAAAA", b"TVqQAAMAAAAEAAAA", b"PK\x03\x04", b"=?x?B?@@?=",
    b"Content-Type: application/zip; name==?utf-8?q?a=2Eexe?=\r\n",
])


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=40)), max_size=25))
def test_inspect_never_raises(pieces):
    for finding in attachments.inspect(b"".join(pieces)):
        assert finding.filename is not None and finding.reason
