"""Submission (587 with STARTTLS, 465 with implicit TLS): AUTH, identities, limits."""
import base64
import shutil
import smtplib
import ssl
import subprocess

import pytest

from accounts import actions
from mailsuite.lib import sasl
from mta.models import QueuedRecipient
from tests.conftest import PASSWORD, inbox, message_bytes

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = b"From: Alice <alice@example.test>\r\nTo: friend@faraway.test\r\nSubject: hi\r\n\r\nhello\r\n"


def insecure_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def submission(servers, *, tls=True):
    client = smtplib.SMTP("127.0.0.1", servers.ports["submission"], local_hostname="laptop.test", timeout=10)
    client.ehlo()
    if tls:
        client.starttls(context=insecure_context())
        client.ehlo()
    return client


def smtps(servers):
    client = smtplib.SMTP_SSL(
        "127.0.0.1", servers.ports["smtps"], local_hostname="laptop.test", context=insecure_context(), timeout=10
    )
    client.ehlo()
    return client


def test_no_auth_before_tls_and_no_mail_before_auth(submission_servers, alice):
    client = submission(submission_servers, tls=False)
    assert "starttls" in client.esmtp_features and "auth" not in client.esmtp_features
    assert client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@example.test\0x").decode()) == (
        538,
        b"5.7.11 Encryption required for requested authentication mechanism",
    )
    assert client.mail("alice@example.test") == (530, b"5.7.0 Authentication required")
    client.quit()


def test_auth_is_offered_after_starttls_and_mail_needs_it(submission_servers, alice):
    client = submission(submission_servers)
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN", "SCRAM-SHA-256"]
    assert client.mail("alice@example.test") == (530, b"5.7.0 Authentication required")
    client.quit()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_user_sends_to_the_world_after_auth(submission_servers, alice, bob, mechanism):
    client = submission(submission_servers)
    client.user, client.password = "alice@example.test", PASSWORD
    code, text = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
    assert (code, text) == (235, b"2.7.0 Authentication successful")
    assert client.sendmail("alice@example.test", ["friend@faraway.test", "bob@example.test"], MESSAGE) == {}
    client.quit()
    [queued] = QueuedRecipient.objects.select_related("message")
    assert (queued.address, queued.message.mail_from) == ("friend@faraway.test", "alice@example.test")


def test_submission_adds_date_and_message_id_and_marks_esmtpsa(submission_servers, alice, bob):
    client = submission(submission_servers)
    client.login("alice@example.test", PASSWORD)
    client.sendmail("alice@example.test", ["bob@example.test"], b"From: alice@example.test\r\nSubject: x\r\n\r\nhi\r\n")
    client.quit()
    stored = message_bytes(inbox(bob)[0])
    assert b" with ESMTPSA id " in stored
    assert b"\r\nDate: " in stored and b"\r\nMessage-ID: <" in stored and b"@mx.example.test>\r\n" in stored
    assert inbox(bob)[0].message_id.endswith("@mx.example.test>")


def test_smtps_speaks_tls_from_the_first_byte(submission_servers, alice, bob):
    client = smtps(submission_servers)
    assert "starttls" not in client.esmtp_features
    client.login("alice@example.test", PASSWORD)
    assert client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE) == {}
    client.quit()
    assert b" with ESMTPSA id " in message_bytes(inbox(bob)[0])


def test_scram_sha_256(submission_servers, alice):
    client = submission(submission_servers)
    scram = sasl.ScramSha256Client("alice@example.test", PASSWORD)
    code, text = client.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(scram.start()).decode())
    assert code == 334
    code, text = client.docmd(base64.b64encode(scram.step(base64.b64decode(text))).decode())
    assert code == 334
    assert scram.step(base64.b64decode(text)) == b""  # the server proved it knows the password too
    assert scram.done
    assert client.docmd("") == (235, b"2.7.0 Authentication successful")
    assert client.sendmail("alice@example.test", ["friend@faraway.test"], MESSAGE) == {}
    client.quit()


def test_scram_with_a_wrong_password_fails_at_the_proof(submission_servers, alice):
    client = submission(submission_servers)
    scram = sasl.ScramSha256Client("alice@example.test", "not the password")
    code, text = client.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(scram.start()).decode())
    assert code == 334
    assert client.docmd(base64.b64encode(scram.step(base64.b64decode(text))).decode()) == (
        535, b"5.7.8 Authentication credentials invalid",
    )
    client.quit()


def test_wrong_password_then_throttled(submission_servers, alice):
    plain = lambda password: "PLAIN " + base64.b64encode(f"\0alice@example.test\0{password}".encode()).decode()
    client = submission(submission_servers)
    for _ in range(4):
        assert client.docmd("AUTH", plain("wrong password")) == (535, b"5.7.8 Authentication credentials invalid")
    client.close()
    client = submission(submission_servers)  # a new connection does not start over
    assert client.docmd("AUTH", plain("wrong password"))[0] == 535
    assert client.docmd("AUTH", plain(PASSWORD)) == (454, b"4.7.0 Too many failed logins; try again later")
    client.close()


def test_sender_spoofing_is_refused(submission_servers, alice, bob):
    actions.create_alias("sales@example.test", ["alice@example.test", "bob@example.test"])
    actions.create_alias("@example.test", ["alice@example.test"])
    client = submission(submission_servers)
    client.login("alice@example.test", PASSWORD)
    assert client.mail("bob@example.test") == (553, b"5.7.1 <bob@example.test>: not an address you may send as")
    client.rset()
    assert client.mail("ceo@example.test")[0] == 553  # the catch-all is no licence
    client.rset()
    for allowed in ("alice@example.test", "alice+news@example.test", "sales@example.test"):
        assert client.mail(allowed)[0] == 250, allowed
        client.rset()
    client.mail("alice@example.test")
    client.rcpt("friend@faraway.test")
    code, text = client.data(b"From: bob@example.test\r\nSubject: x\r\n\r\nhi\r\n")
    assert (code, text) == (553, b"5.7.1 <bob@example.test>: not an address you may send as")
    client.quit()
    assert QueuedRecipient.objects.count() == 0


def test_sending_limit(submission_servers, alice):
    actions.set_send_limits("alice@example.test", messages_per_hour=2)
    client = submission(submission_servers)
    client.login("alice@example.test", PASSWORD)
    for _ in range(2):
        assert client.sendmail("alice@example.test", ["friend@faraway.test"], MESSAGE) == {}
    client.mail("alice@example.test")
    client.rcpt("friend@faraway.test")
    code, text = client.data(MESSAGE)
    assert code == 451 and text.startswith(b"4.7.1 ")
    client.quit()
    assert QueuedRecipient.objects.count() == 2


def test_plaintext_auth_on_loopback_only_when_allowed(transactional_db, settings, alice):
    from tests.conftest import smtp_servers

    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    with smtp_servers("submission") as servers:
        client = submission(servers, tls=False)
        assert "auth" in client.esmtp_features
        client.login("alice@example.test", PASSWORD)
        client.quit()


def test_swaks_submits_with_starttls_and_auth(submission_servers, alice, bob):
    assert shutil.which("swaks"), "swaks is not installed (make test installs it from Debian)"
    port = submission_servers.ports["submission"]
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--auth", "PLAIN", "--auth-user", "alice@example.test",
         "--auth-password", PASSWORD, "--from", "alice@example.test", "--to", "bob@example.test",
         "--header", "From: alice@example.test"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(inbox(bob)) == 1
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{submission_servers.ports['smtps']}", "--tlsc", "--auth", "LOGIN",
         "--auth-user", "alice@example.test", "--auth-password", PASSWORD, "--from", "alice@example.test",
         "--to", "bob@example.test", "--header", "From: alice@example.test"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(inbox(bob)) == 2
