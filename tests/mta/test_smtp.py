"""The MX SMTP server over real loopback sockets, driven by smtplib and raw sockets."""
import smtplib
import socket
import ssl

import pytest

from accounts import actions
from mailstore.models import Blob, Message
from mta.models import QueuedRecipient
from tests.conftest import inbox, message_bytes

pytestmark = pytest.mark.django_db(transaction=True)

SIMPLE = (
    b"From: Mallory <mallory@elsewhere.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <m1@elsewhere.test>\r\n"
    b"\r\n"
    b"Hi Alice.\r\n"
)


def connect(server):
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.elsewhere.test", timeout=10)
    client.ehlo()
    return client


def transact(server, lines):
    """Send raw command lines in one write (pipelining); return the reply lines read back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        greeting = reader.readline()
        assert greeting.startswith(b"220 ")
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        replies = []
        while len(replies) < len(lines):
            line = reader.readline()
            assert line, f"connection closed after {replies}"
            if line[3:4] == b"-":
                continue
            replies.append(line.rstrip(b"\r\n").decode())
        return replies


def test_it_advertises_the_extensions(smtp_server):
    client = connect(smtp_server)
    code, text = client.ehlo()
    lines = text.decode().splitlines()
    assert code == 250
    assert lines[0] == "mx.example.test"
    for extension in ("SIZE 52428800", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS"):
        assert extension in lines
    assert not any(line.startswith("AUTH") for line in lines)
    client.quit()


def test_it_delivers_to_a_local_mailbox_with_trace_fields(smtp_server, alice):
    client = connect(smtp_server)
    refused = client.sendmail("mallory@elsewhere.test", ["alice@example.test"], SIMPLE)
    assert refused == {}
    client.quit()
    [message] = inbox(alice)
    stored = message_bytes(message)
    assert stored.startswith(
        b"Return-Path: <mallory@elsewhere.test>\r\nDelivered-To: alice@example.test\r\n"
        # The recipient's spam verdict (antispam.policy): no Date field, a sender never seen.
        b"X-Spam-Score: 1.5\r\nX-Spam-Status: No, score=1.5 required=4.0 tests=MISSING_DATE,NEVER_SEEN\r\n"
        b"Received: from client.elsewhere.test ([127.0.0.1])\r\n\tby mx.example.test (mailsuite) with ESMTP id "
    )
    assert b"\r\n\tfor <alice@example.test>; " in stored
    assert stored.endswith(SIMPLE)
    assert message.size == len(stored)
    assert message.uid == 1
    assert message.subject == "hello"
    assert message.from_address == "mallory@elsewhere.test"
    alice.refresh_from_db()
    assert alice.quota_used == len(stored)
    assert message.folder.message_count == 1
    assert message.folder.unseen_count == 1


def test_the_reply_names_the_queue_id_used_in_received(smtp_server, alice):
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test")
    client.rcpt("alice@example.test")
    code, text = client.data(SIMPLE)
    client.quit()
    assert code == 250
    assert text.startswith(b"2.0.0 Ok: queued as ")
    queue_id = text.split()[-1]
    [message] = inbox(alice)
    assert b" id " + queue_id + b"\r\n" in message_bytes(message)


@pytest.mark.parametrize(
    "recipient, expected",
    [
        ("nobody@example.test", (550, b"5.1.1 <nobody@example.test>: no such user here")),
        ("someone@elsewhere.test", (554, b"5.7.1 <someone@elsewhere.test>: relay access denied")),
    ],
)
def test_it_refuses_recipients_it_cannot_take(smtp_server, alice, recipient, expected):
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test")
    assert client.rcpt(recipient) == expected
    client.quit()
    assert QueuedRecipient.objects.count() == 0


def test_a_disabled_account_is_refused(smtp_server, alice):
    actions.set_account_active("alice@example.test", False)
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test")
    assert client.rcpt("alice@example.test") == (550, b"5.2.1 <alice@example.test>: mailbox disabled")
    client.quit()


def test_a_trusted_network_may_relay_and_it_is_queued(smtp_server, settings, alice):
    import ipaddress

    smtp_server.service.handler.trusted_networks = (ipaddress.ip_network("127.0.0.0/8"),)
    client = connect(smtp_server)
    assert client.sendmail("alice@example.test", ["someone@elsewhere.test"], SIMPLE) == {}
    client.quit()
    [row] = QueuedRecipient.objects.select_related("message")
    assert row.address == "someone@elsewhere.test"
    assert row.message.mail_from == "alice@example.test"
    assert row.message.received_from == "127.0.0.1"


def test_over_quota_is_refused_at_rcpt(smtp_server, alice):
    actions.set_quota("alice@example.test", 1000)
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test", ["SIZE=5000"])
    assert client.rcpt("alice@example.test") == (452, b"4.2.2 <alice@example.test>: mailbox full")
    client.rset()
    client.mail("mallory@elsewhere.test", ["SIZE=200"])
    assert client.rcpt("alice@example.test")[0] == 250
    client.quit()


def test_over_quota_at_data_is_a_temporary_failure(smtp_server, alice):
    actions.set_quota("alice@example.test", 300)
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test")
    assert client.rcpt("alice@example.test")[0] == 250
    code, text = client.data(SIMPLE + b"x" * 400 + b"\r\n")
    client.quit()
    assert (code, text) == (452, b"4.2.2 Mailbox full")
    assert inbox(alice) == []
    assert Blob.objects.count() == 0


def test_too_many_recipients(smtp_server, settings, alice):
    smtp_server.service.handler.max_recipients = 3
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test")
    for _ in range(3):
        assert client.rcpt("alice@example.test")[0] == 250
    assert client.rcpt("alice@example.test") == (452, b"4.5.3 Too many recipients")
    client.quit()


def test_size_limit_on_declared_and_actual_size(smtp_server, settings, alice):
    limit = settings.MAILSUITE_MESSAGE_SIZE_LIMIT
    client = connect(smtp_server)
    code, text = client.mail("mallory@elsewhere.test", [f"SIZE={limit + 1}"])
    assert code == 552 and text.startswith(b"5.3.4 ")
    client.rset()
    client.mail("mallory@elsewhere.test")
    client.rcpt("alice@example.test")
    code, text = client.data(SIMPLE + (b"y" * 998 + b"\r\n") * (limit // 1000 + 1))
    assert code == 552 and text.startswith(b"5.3.4 ")
    client.quit()
    assert inbox(alice) == []


def test_to_cc_bcc_each_land_once_and_bcc_is_not_shown(smtp_server, alice, bob):
    carol = actions.create_account("carol@example.test")
    message = (
        b"From: mallory@elsewhere.test\r\nTo: alice@example.test\r\nCc: bob@example.test\r\n"
        b"Bcc: carol@example.test\r\nSubject: three\r\n\r\nbody\r\n"
    )
    client = connect(smtp_server)
    recipients = ["alice@example.test", "bob@example.test", "carol@example.test", "ALICE@example.test"]
    assert client.sendmail("mallory@elsewhere.test", recipients, message) == {}
    client.quit()
    copies = [inbox(alice), inbox(bob), inbox(carol)]
    assert [len(c) for c in copies] == [1, 1, 1]
    for [copy] in copies:
        stored = message_bytes(copy)
        assert b"Bcc:" not in stored
        assert stored.endswith(b"To: alice@example.test\r\nCc: bob@example.test\r\nSubject: three\r\n\r\nbody\r\n")
        assert b"\tfor <" not in stored  # several recipients: none named in Received
    assert Blob.objects.count() == 1


def test_aliases_domain_aliases_catchall_and_subaddresses(smtp_server, alice, bob):
    actions.create_alias("team@example.test", ["alice@example.test", "bob@example.test"])
    actions.create_domain_alias("example.org", "example.test")
    client = connect(smtp_server)
    for recipient in ("team@example.test", "alice@example.org", "alice+lists@example.test"):
        assert client.sendmail("mallory@elsewhere.test", [recipient], SIMPLE) == {}
    client.mail("mallory@elsewhere.test")
    assert client.rcpt("stranger@example.test")[0] == 550
    client.rset()
    actions.create_alias("@example.test", ["bob@example.test"])
    assert client.sendmail("mallory@elsewhere.test", ["stranger@example.test"], SIMPLE) == {}
    client.quit()
    assert len(inbox(alice)) == 3
    assert len(inbox(bob)) == 2
    assert all(message_bytes(m).startswith(b"Return-Path: <mallory@elsewhere.test>\r\nDelivered-To: alice@example.test\r\n") for m in inbox(alice))


def test_mail_for_a_redirect_and_external_alias_targets_is_queued(smtp_server, alice):
    actions.create_redirect("old@example.test", "new@elsewhere.test")
    actions.create_alias("list@example.test", ["alice@example.test", "friend@faraway.test"])
    client = connect(smtp_server)
    assert client.sendmail("mallory@elsewhere.test", ["old@example.test", "list@example.test"], SIMPLE) == {}
    client.quit()
    queued = sorted(QueuedRecipient.objects.values_list("address", "state"))
    assert queued == [("friend@faraway.test", "queued"), ("new@elsewhere.test", "queued")]
    assert len(inbox(alice)) == 1
    assert Blob.objects.count() == 1  # mailbox and queue share the stored bytes


def test_eight_bit_and_utf8_round_trip_byte_for_byte(smtp_server, alice):
    actions.create_account("jürgen@example.test")
    body = (
        "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <jürgen@example.test>\r\n"
        "To: alice@example.test\r\n"
        "Subject: =?ISO-8859-1?Q?Caf=E9?= and ünïcödé 日本語\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Grüße aus Köln — 日本語のテキスト\r\n"
    ).encode("utf-8") + b"raw latin-1 byte: \xe9\r\n"
    client = connect(smtp_server)
    assert client.sendmail("jürgen@example.test", ["alice@example.test", "jürgen@example.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    client.quit()
    [message] = inbox(alice)
    assert message_bytes(message).endswith(body)
    assert message.subject == "Café and ünïcödé 日本語"
    assert b"with UTF8SMTP id" in message_bytes(message)
    from accounts.models import Account

    [copy] = inbox(Account.objects.get(localpart="jürgen"))
    assert message_bytes(copy).endswith(body)


def test_a_utf8_address_needs_smtputf8(smtp_server, alice):
    replies = transact(
        smtp_server,
        ["EHLO client.test".encode(), "MAIL FROM:<jürgen@example.test>".encode(), b"MAIL FROM:<m@elsewhere.test>",
         "RCPT TO:<jürgen@example.test>".encode()],
    )
    assert replies[1] == "553 5.6.7 Non-ASCII sender address needs SMTPUTF8"
    assert replies[3] == "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8"


def test_pipelined_commands_get_replies_in_order(smtp_server, alice, bob):
    replies = transact(
        smtp_server,
        [
            b"EHLO client.test",
            b"MAIL FROM:<mallory@elsewhere.test>",
            b"RCPT TO:<alice@example.test>",
            b"RCPT TO:<nobody@example.test>",
            b"RCPT TO:<bob@example.test>",
            b"DATA",
            b"Subject: piped\r\n\r\nline one\r\n..dot line\r\n.",
            b"QUIT",
        ],
    )
    assert replies[1:6] == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "550 5.1.1 <nobody@example.test>: no such user here",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert replies[6].startswith("250 2.0.0 Ok: queued as ")
    assert replies[7] == "221 2.0.0 Bye"
    assert message_bytes(inbox(bob)[0]).endswith(b"Subject: piped\r\n\r\nline one\r\n.dot line\r\n")


def test_protocol_errors_carry_enhanced_codes(smtp_server):
    replies = transact(
        smtp_server,
        [b"EHLO client.test", b"RCPT TO:<a@example.test>", b"DATA", b"BOGUS", b"MAIL FROM:<not an address>", b"NOOP"],
    )
    assert replies[1] == "503 5.5.1 Error: need MAIL command"
    assert replies[2] == "503 5.5.1 Error: need RCPT command"
    assert replies[3] == '500 5.5.2 Error: command "BOGUS" not recognized'
    assert replies[4].startswith("553 5.1.")
    assert replies[5] == "250 2.0.0 OK"


def test_null_sender_is_accepted(smtp_server, alice):
    client = connect(smtp_server)
    assert client.sendmail("", ["alice@example.test"], SIMPLE) == {}
    client.quit()
    assert message_bytes(inbox(alice)[0]).startswith(b"Return-Path: <>\r\n")


def test_starttls_then_delivery_is_recorded_as_esmtps(smtp_server, alice):
    client = connect(smtp_server)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client.starttls(context=context)
    client.ehlo()
    assert client.sendmail("mallory@elsewhere.test", ["alice@example.test"], SIMPLE) == {}
    client.quit()
    assert b" with ESMTPS id " in message_bytes(inbox(alice)[0])


def test_uids_ascend_and_modseq_grows(smtp_server, alice):
    client = connect(smtp_server)
    for _ in range(3):
        client.sendmail("mallory@elsewhere.test", ["alice@example.test"], SIMPLE)
    client.quit()
    messages = inbox(alice)
    assert [m.uid for m in messages] == [1, 2, 3]
    assert [m.modseq for m in messages] == sorted({m.modseq for m in messages})
    folder = messages[0].folder
    folder.refresh_from_db()
    assert (folder.uidnext, folder.highestmodseq, folder.message_count) == (4, messages[-1].modseq, 3)


def test_a_looping_message_is_refused(smtp_server, settings, alice):
    looped = b"".join(b"Received: from hop%d by x; Fri, 27 Nov 2026 10:00:00 +0000\r\n" % i for i in range(60))
    client = connect(smtp_server)
    client.mail("mallory@elsewhere.test")
    client.rcpt("alice@example.test")
    assert client.data(looped + SIMPLE) == (554, b"5.4.6 Too many hops: this message is looping")
    client.quit()
    assert inbox(alice) == []
