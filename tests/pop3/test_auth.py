"""POP3 logins: USER/PASS only over TLS (or opted-in loopback), SASL with and without an
initial response, APOP on and off, the shared throttle, [AUTH] and [SYS/TEMP]."""
import base64
import io
import poplib

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts import actions
from accounts.models import Account, LoginEvent
from mailsuite.lib import sasl, secrets
from tests.conftest import PASSWORD
from tests.pop3.conftest import connect, deliver, insecure_context, pop3_servers

pytestmark = pytest.mark.django_db(transaction=True)

PLAINTEXT_REFUSED = "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS"
FAILED = "-ERR [AUTH] Authentication failed"
APOP_SECRET = "tanstaaf-apop-secret"


def b64(data):
    return base64.b64encode(data).decode()


def logged_in(reply, count=0, size=0):
    return reply == f"+OK Logged in; maildrop has {count} messages ({size} octets)"


def test_user_pass_is_refused_before_tls(pop3_server, alice):
    client = connect(pop3_server, tls=False)
    assert client.command("USER alice@example.test") == PLAINTEXT_REFUSED
    assert client.command("AUTH PLAIN " + b64(f"\0alice@example.test\0{PASSWORD}".encode())) == PLAINTEXT_REFUSED
    assert client.command("AUTH LOGIN") == PLAINTEXT_REFUSED
    assert client.command(f"PASS {PASSWORD}") == "-ERR USER first"
    client.quit()
    assert not LoginEvent.objects.exists()  # nothing was even tried


def test_plaintext_on_loopback_when_the_operator_allows_it(transactional_db, settings, alice):
    settings.MAILSUITE_HOSTNAME = "pop.example.test"
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    with pop3_servers() as server:
        client = connect(server, tls=False)
        assert "USER" in client.capa() and client.capa()["SASL"] == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        client.user("alice@example.test")
        assert client.pass_(PASSWORD) == b"+OK Logged in; maildrop has 0 messages (0 octets)"
        client.quit()


def test_user_pass_after_stls_and_the_login_audit(pop3_server, alice):
    client = connect(pop3_server)
    assert client.user("alice@example.test") == b"+OK Send PASS"
    assert client.pass_(PASSWORD) == b"+OK Logged in; maildrop has 0 messages (0 octets)"
    client.quit()
    event = LoginEvent.objects.get()
    assert (event.service, event.remote_ip, event.success, event.account_id) == ("pop3", "127.0.0.1", True, alice.pk)


def test_user_of_an_unknown_mailbox_says_nothing_until_pass(pop3_server, alice):
    client = connect(pop3_server)
    assert client.user("nobody@example.test") == b"+OK Send PASS"
    assert client.command(f"PASS {PASSWORD}") == FAILED
    assert client.command("USER alice@example.test") == "+OK Send PASS"
    assert client.command("PASS wrong") == FAILED
    client.quit()
    assert sorted(LoginEvent.objects.values_list("reason", flat=True)) == ["password", "unknown"]


def test_a_password_with_spaces_is_one_argument(pop3_server, alice):
    actions.set_password("alice@example.test", "  spaces inside and out  ")
    client = connect(pop3_server)
    client.user("alice@example.test")
    assert client.pass_("  spaces inside and out  ").startswith(b"+OK Logged in")
    client.quit()


def test_three_failures_on_one_connection_end_it(pop3_server, alice, settings):
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = 100
    client = connect(pop3_server)
    for reply in (FAILED, FAILED, "-ERR [AUTH] Authentication failed; closing connection"):
        client.command("USER alice@example.test")
        assert client.command("PASS wrong") == reply
    assert client.file.readline() == b""


def test_the_shared_throttle_answers_sys_temp(pop3_server, alice, settings):
    settings.MAILSUITE_LOGIN_MAX_FAILURES_PER_IP = 2
    for _ in range(2):
        client = connect(pop3_server)
        client.user("alice@example.test")
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] Authentication failed'$"):
            client.pass_("wrong")
        client.quit()
    client = connect(pop3_server)
    client.user("alice@example.test")
    assert client.command(f"PASS {PASSWORD}") == "-ERR [SYS/TEMP] Too many failed logins; try again later"
    assert client.command("AUTH PLAIN " + b64(f"\0alice@example.test\0{PASSWORD}".encode())) == (
        "-ERR [SYS/TEMP] Too many failed logins; try again later"
    )
    client.quit()


def test_a_disabled_account_cannot_log_in(pop3_server, alice):
    actions.set_account_active("alice@example.test", False)
    client = connect(pop3_server)
    client.user("alice@example.test")
    assert client.command(f"PASS {PASSWORD}") == FAILED
    client.quit()


# --- SASL (RFC 5034) -------------------------------------------------------------------


def test_auth_plain_with_an_initial_response(pop3_server, alice):
    deliver(alice)
    client = connect(pop3_server)
    reply = client.command("AUTH PLAIN " + b64(f"\0alice@example.test\0{PASSWORD}".encode()))
    assert logged_in(reply, 1, 180)
    assert client.command("STAT") == "+OK 1 180"
    client.quit()


def test_auth_plain_without_an_initial_response(pop3_server, alice):
    client = connect(pop3_server)
    assert client.command("AUTH PLAIN") == "+ "
    assert logged_in(client.command(b64(f"alice@example.test\0alice@example.test\0{PASSWORD}".encode())))
    client.quit()


@pytest.mark.parametrize(
    "initial",
    [
        "=",  # empty
        b64(b"\0alice@example.test"),  # one NUL
        b64(f"bob@example.test\0alice@example.test\0{PASSWORD}".encode()),  # acting as another user
    ],
)
def test_auth_plain_malformed_or_proxying_fails(pop3_server, alice, bob, initial):
    client = connect(pop3_server)
    assert client.command(f"AUTH PLAIN {initial}") == FAILED
    client.quit()


def test_auth_login_with_and_without_an_initial_response(pop3_server, alice):
    client = connect(pop3_server)
    assert client.command("AUTH LOGIN") == "+ " + b64(b"Username:")
    assert client.command(b64(b"alice@example.test")) == "+ " + b64(b"Password:")
    assert client.command(b64(b"wrong")) == FAILED
    assert client.command("AUTH LOGIN " + b64(b"alice@example.test")) == "+ " + b64(b"Password:")
    assert logged_in(client.command(b64(PASSWORD.encode())))
    client.quit()


def scram_login(client, password, *, initial_response=True):
    scram = sasl.ScramSha256Client("alice@example.test", password)
    if initial_response:
        challenge = client.command("AUTH SCRAM-SHA-256 " + b64(scram.start()))
    else:
        assert client.command("AUTH SCRAM-SHA-256") == "+ "
        challenge = client.command(b64(scram.start()))
    assert challenge.startswith("+ ")
    final = client.command(b64(scram.step(base64.b64decode(challenge[2:]))))
    if not final.startswith("+ "):
        return final
    scram.step(base64.b64decode(final[2:]))
    assert scram.done  # the server proved it knows the credentials
    return client.command("")


@pytest.mark.parametrize("initial_response", [True, False], ids=["with-ir", "without-ir"])
def test_auth_scram_sha_256_before_and_after_tls(pop3_server, alice, initial_response):
    for tls in (False, True):
        client = connect(pop3_server, tls=tls)
        assert logged_in(scram_login(client, PASSWORD, initial_response=initial_response))
        client.quit()


def test_auth_scram_with_a_wrong_password_fails(pop3_server, alice):
    client = connect(pop3_server)
    assert scram_login(client, "not the password") == FAILED
    client.quit()
    assert LoginEvent.objects.get().reason == "password"


def test_auth_cancel_bad_base64_and_unknown_mechanisms(pop3_server, alice):
    client = connect(pop3_server)
    assert client.command("AUTH PLAIN") == "+ "
    assert client.command("*") == "-ERR Authentication cancelled"
    assert client.command("AUTH PLAIN") == "+ "
    assert client.command("%%% not base64") == "-ERR Invalid base64 in response"
    assert client.command("AUTH CRAM-MD5") == "-ERR Unsupported authentication mechanism"
    assert client.command("AUTH PLAIN ***") == "-ERR Invalid base64 in initial response"
    assert client.command("AUTH PLAIN") == "+ "
    assert client.command("A" * 9000) == "-ERR Line too long"
    assert capa_ok(client)
    client.quit()


def capa_ok(client):
    return bool(client.capa())


# --- APOP (RFC 1939 §7) ------------------------------------------------------------------


def test_apop_is_off_by_default(pop3_server, alice):
    client = connect(pop3_server, tls=False)
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] Authentication failed'$"):
        client.apop("alice@example.test", PASSWORD)
    client.quit()
    assert LoginEvent.objects.get().reason == "password"  # counted like a wrong password


def test_apop_works_without_tls_once_turned_on(pop3_server, alice):
    deliver(alice)
    actions.set_apop_secret("alice@example.test", APOP_SECRET)
    client = connect(pop3_server, tls=False)
    assert client.apop("alice@example.test", APOP_SECRET) == b"+OK Logged in; maildrop has 1 messages (180 octets)"
    assert client.stat() == (1, 180)
    client.quit()


def test_apop_with_the_wrong_secret_or_the_password_fails(pop3_server, alice):
    actions.set_apop_secret("alice@example.test", APOP_SECRET)
    client = connect(pop3_server, tls=False)
    for secret in ("wrong-secret", PASSWORD):
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.apop("alice@example.test", secret)
    client.quit()


def test_apop_off_again_refuses_the_old_secret(pop3_server, alice):
    actions.set_apop_secret("alice@example.test", APOP_SECRET)
    actions.clear_apop_secret("alice@example.test")
    client = connect(pop3_server, tls=False)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.apop("alice@example.test", APOP_SECRET)
    client.quit()


def test_apop_secret_is_stored_encrypted(alice):
    actions.set_apop_secret("alice@example.test", APOP_SECRET)
    stored = Account.objects.get(pk=alice.pk).apop_secret
    assert stored.startswith("fernet:") and APOP_SECRET not in stored
    assert secrets.decrypt(stored) == APOP_SECRET


@pytest.mark.parametrize(
    "secret, reason",
    [
        ("", "the APOP secret is empty"),
        ("short", "This password is too short"),
        (PASSWORD, "the APOP secret must not be the account's password"),
        ("line\x07breaks-and-bells", "the APOP secret contains control characters"),
    ],
)
def test_apop_secrets_that_are_refused(alice, secret, reason):
    with pytest.raises(actions.InvalidInput, match=reason):
        actions.set_apop_secret("alice@example.test", secret)
    assert Account.objects.get(pk=alice.pk).apop_secret == ""


def test_account_apop_command_on_and_off(alice):
    out = io.StringIO()
    call_command("account", "apop", "alice@example.test", "on", stdin=io.StringIO(APOP_SECRET + "\n"), stdout=out)
    assert out.getvalue() == "APOP turned on for alice@example.test\n"
    assert secrets.decrypt(Account.objects.get(pk=alice.pk).apop_secret) == APOP_SECRET
    out = io.StringIO()
    call_command("account", "apop", "alice@example.test", "off", stdout=out)
    assert out.getvalue() == "APOP turned off for alice@example.test\n"
    assert Account.objects.get(pk=alice.pk).apop_secret == ""


def test_account_apop_command_errors(alice):
    with pytest.raises(CommandError, match="no APOP secret on standard input"):
        call_command("account", "apop", "alice@example.test", "on", stdin=io.StringIO(""))
    with pytest.raises(CommandError, match="account nobody@example.test does not exist"):
        call_command("account", "apop", "nobody@example.test", "on", stdin=io.StringIO(APOP_SECRET))
    with pytest.raises(CommandError, match="must not be the account's password"):
        call_command("account", "apop", "alice@example.test", "on", stdin=io.StringIO(PASSWORD + "\n"))
