"""End to end: a script uploaded over ManageSieve files mail sent over SMTP (smtplib) into
a folder IMAP (imaplib) then sees with the right flags."""
import imaplib
import smtplib

import pytest

from sieve import session as session_module
from sieve.client import ManageSieveClient
from tests.conftest import PASSWORD
from tests.imap.conftest import imap_server  # noqa: F401  (the fixture)
from tests.sieve.test_managesieve import managesieve_server

SCRIPT = """require ["fileinto", "imap4flags", "mailbox", "reject"];
if header :contains "subject" "invoice" {
  fileinto :create :flags ["\\\\Flagged", "$Invoice"] "Finance/Invoices";
}
elsif header :contains "subject" "newsletter" {
  addflag "\\\\Seen";
}
elsif header :contains "subject" "lottery" {
  reject "No lotteries, thank you.";
}
"""


def message(subject):
    return f"From: Mallory <mallory@elsewhere.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n"


def test_a_script_uploaded_over_managesieve_files_smtp_mail_that_imap_sees(
    smtp_server, imap_server, alice, monkeypatch  # noqa: F811
):
    monkeypatch.setattr(session_module, "FAILURE_DELAY_SECONDS", 0)
    with managesieve_server() as sieve_server:
        with ManageSieveClient("127.0.0.1", sieve_server.port) as client:
            client.authenticate_plain("alice@example.test", PASSWORD)
            client.checkscript(SCRIPT)
            client.putscript("main", SCRIPT)
            client.setactive("main")
            assert client.listscripts() == [("main", True)]

    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as smtp:
        assert smtp.sendmail("mallory@elsewhere.test", ["alice@example.test"], message("Your invoice 42")) == {}
        assert smtp.sendmail("mallory@elsewhere.test", ["alice@example.test"], message("Monthly newsletter")) == {}
        assert smtp.sendmail("mallory@elsewhere.test", ["alice@example.test"], message("Hello")) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("mallory@elsewhere.test", ["alice@example.test"], message("You won the lottery"))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (550, b"5.7.1 No lotteries, thank you.")

    imap = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    try:
        imap.login("alice@example.test", PASSWORD)
        status, folders = imap.list()
        assert any(b'"Finance/Invoices"' in line or b"Finance/Invoices" in line for line in folders)
        assert imap.select('"Finance/Invoices"')[1] == [b"1"]
        status, data = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"\\Flagged" in data[0][0] and b"$Invoice" in data[0][0]
        assert b"Subject: Your invoice 42" in data[0][1]
        assert imap.select("INBOX")[1] == [b"2"]
        status, data = imap.fetch("1:2", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        flags = {item[1].strip().decode(): item[0] for item in data if isinstance(item, tuple)}
        assert b"\\Seen" in flags["Subject: Monthly newsletter"]
        assert b"\\Seen" not in flags["Subject: Hello"]
    finally:
        imap.logout()
