"""Mail our users send (submission) and trusted networks relay gets the attachment policy
and the virus scan too: nobody sends a program or a virus out through us. Outgoing mail
cannot be quarantined (no Junk at the other end): what a domain would quarantine is refused."""
import email.policy
import ipaddress
import smtplib
import ssl
from email.message import EmailMessage

import pytest

from antispam import inbound_policy
from mta import actions
from mta.models import QueuedRecipient
from tests.antispam.clamd_server import EICAR, FakeClamd, closed_port
from tests.antispam.conftest import STRANGER_IP
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

PE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56
REFUSED_EXE = "5.7.1 Message refused: it carries setup.exe: a .exe file, which runs as a program"


@pytest.fixture(autouse=True)
def fresh_policies(monkeypatch):
    monkeypatch.setattr(inbound_policy, "TTL", 0)
    yield
    inbound_policy.forget()


def mail(*files, sender="alice@example.test", body="See attached.\n"):
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = "Friend <friend@faraway.test>"
    msg["Subject"] = "The files"
    msg.set_content(body)
    for filename, data in files:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg.as_bytes(policy=email.policy.SMTP)


def submit(servers, raw, *, rcpts=("friend@faraway.test",)):
    """(code, text) of the DATA reply, sending as alice over submission (STARTTLS + AUTH)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = smtplib.SMTP("127.0.0.1", servers.ports["submission"], local_hostname="laptop.test", timeout=30)
    try:
        client.ehlo()
        client.starttls(context=context)
        client.ehlo()
        client.login("alice@example.test", PASSWORD)
        assert client.mail("alice@example.test")[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(raw)
        return code, text.decode()
    finally:
        client.close()


def queued():
    return QueuedRecipient.objects.count()


def test_a_user_cannot_send_a_program_out(submission_servers, alice):
    assert submit(submission_servers, mail(("setup.exe", PE))) == (554, REFUSED_EXE)
    assert queued() == 0
    assert submit(submission_servers, mail(("notes.txt", b"just text")))[0] == 250
    assert queued() == 1


def test_the_senders_domain_decides_for_mail_going_out(submission_servers, alice):
    actions.set_inbound_policy("example.test", attachments="allow")
    assert submit(submission_servers, mail(("setup.exe", PE)))[0] == 250
    actions.set_inbound_policy("example.test", attachments="quarantine")  # no Junk out there: refused
    assert submit(submission_servers, mail(("setup.exe", PE))) == (554, REFUSED_EXE)
    assert queued() == 1


def test_a_trusted_network_cannot_relay_a_program(settings, alice):
    from tests.conftest import smtp_servers

    settings.MAILSUITE_HOSTNAME = "mx.example.test"
    settings.MAILSUITE_TRUSTED_NETWORKS = (ipaddress.ip_network(f"{STRANGER_IP}/32"),)
    with smtp_servers("smtp") as server:
        client = smtplib.SMTP("127.0.0.1", server.port, local_hostname="app.example.test", timeout=30,
                              source_address=(STRANGER_IP, 0))
        try:
            client.ehlo()
            assert client.mail("alice@example.test")[0] == 250
            assert client.rcpt("friend@faraway.test")[0] == 250
            code, text = client.data(mail(("setup.exe", PE)))
        finally:
            client.close()
    assert (code, text.decode()) == (554, REFUSED_EXE)
    assert queued() == 0


@pytest.fixture
def scanner(settings):
    with FakeClamd() as server:
        settings.MAILSUITE_CLAMD = server.address
        settings.MAILSUITE_CLAMD_TIMEOUT = 2
        yield server


def test_a_user_cannot_send_a_virus_out(scanner, submission_servers, alice):
    assert submit(submission_servers, mail(body=EICAR.decode() + "\n")) == (
        554, "5.7.1 Message refused: virus found (Win.Test.EICAR_HDB-1)",
    )
    assert submit(submission_servers, mail())[0] == 250
    assert queued() == 1 and len(scanner.streams) == 2


def test_nothing_is_sent_unscanned_while_the_scanner_is_down(settings, submission_servers, alice, bob):
    settings.MAILSUITE_CLAMD = closed_port()
    assert submit(submission_servers, mail(), rcpts=("friend@faraway.test", "bob@example.test")) == (
        451, "4.7.1 Virus scanner unavailable; please try again later",
    )
    assert queued() == 0
    from mailstore.models import Message

    assert not Message.objects.filter(folder__account=bob).exists()


# The webmail sends without SMTP: the same checks --------------------------------------------


def webmail_send(account, *attachments, to="friend@faraway.test", body="See attached."):
    from webmail import compose

    draft = compose.Draft(
        from_address=account.address, to=to, subject="The files", body=body,
        attachments=[compose.Attachment(name, "application/octet-stream", data) for name, data in attachments],
    )
    try:
        compose.send(account, draft, client_ip="127.0.0.1")
    except compose.SendRefused as refusal:
        return str(refusal)
    return "sent"


def test_the_webmail_cannot_send_a_program_either(alice, bob):
    assert webmail_send(alice, ("setup.exe", PE)) == "554 " + REFUSED_EXE
    assert webmail_send(alice, ("setup.exe", PE), to="bob@example.test") == "554 " + REFUSED_EXE
    assert queued() == 0
    assert webmail_send(alice, ("notes.txt", b"just text")) == "sent"
    assert queued() == 1


def test_the_webmail_cannot_send_a_virus(scanner, alice):
    # In the text: the loopback scanner, unlike clamd, does not decode base64 attachments.
    assert webmail_send(alice, body=EICAR.decode()) == "554 5.7.1 Message refused: virus found (Win.Test.EICAR_HDB-1)"
    assert queued() == 0
