"""The classic open-relay tricks against the MX port: none of them relays."""
import socket

import pytest

from mta.models import QueuedRecipient

pytestmark = pytest.mark.django_db(transaction=True)

TRICKS = [
    "victim@elsewhere.test",
    "victim%elsewhere.test@example.test",
    "elsewhere.test!victim@example.test",
    "victim@elsewhere.test@example.test",
    '"victim@elsewhere.test"@example.test',
    '"victim%elsewhere.test"@example.test',
    "@example.test:victim@elsewhere.test",
    "@example.test,@mx.example.test:victim@elsewhere.test",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@elsewhere.test.",
    "victim@ELSEWHERE.TEST",
    "victim@example.test.elsewhere.test",
    "victim@xn--exmple-4nf.test",  # "exаmple.test" with a Cyrillic а
    "victim@exаmple.test",
    "victim@example.test%elsewhere.test",
    "victim@elsewhere.test%example.test",
    "elsewhere.test!victim",
    "victim",
]


def rcpt_replies(port, sender, recipients):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        lines = [b"EHLO relay.tester", f"MAIL FROM:{sender} SMTPUTF8".encode()]
        lines += [f"RCPT TO:<{r}>".encode() for r in recipients]
        lines += [b"RSET", b"QUIT"]
        sock.sendall(b"".join(line + b"\r\n" for line in lines))
        replies = []
        while len(replies) < len(lines):
            line = reader.readline()
            if not line:
                break
            if line[3:4] != b"-":
                replies.append(line.decode().rstrip())
        return replies[2 : 2 + len(recipients)]


@pytest.mark.parametrize("sender", ["<mallory@elsewhere.test>", "<>", "<alice@example.test>"])
def test_no_trick_relays(smtp_server, alice, sender):
    replies = rcpt_replies(smtp_server.port, sender, TRICKS)
    accepted = [(trick, reply) for trick, reply in zip(TRICKS, replies) if reply.startswith("2")]
    assert accepted == []
    assert all(reply[:1] in "45" for reply in replies), replies
    assert QueuedRecipient.objects.count() == 0


def test_local_addresses_in_odd_spellings_still_arrive_locally(smtp_server, alice):
    replies = rcpt_replies(smtp_server.port, "<m@elsewhere.test>", ["ALICE@EXAMPLE.TEST", "Alice@Example.Test"])
    assert replies == ["250 2.1.5 Ok", "250 2.1.5 Ok"]
    assert QueuedRecipient.objects.count() == 0
