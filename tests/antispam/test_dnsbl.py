"""DNS block lists over the loopback DNS: a listed client or sender domain is refused at MAIL
FROM with a reply that names the list; lighter listings only add to the score."""
import smtplib

import pytest

from tests.antispam.conftest import STRANGER_IP, message, send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def block_lists(settings, dns_server):
    settings.MAILSUITE_DNSBL_ZONES = (("bl.test", 10.0), ("light.test", 2.0), ("down.test", 10.0))
    settings.MAILSUITE_RHSBL_ZONES = (("rhs.test", 10.0),)
    settings.MAILSUITE_DNSBL_REJECT_WEIGHT = 10
    dns_server.set("3.0.0.127.bl.test", "A", ["127.0.0.2"])
    dns_server.set("3.0.0.127.light.test", "A", ["127.0.0.2"])
    dns_server.set("2.0.0.127.light.test", "A", ["127.0.0.2"])
    dns_server.set("2.0.0.127.bl.test", "A", ["127.255.255.254"])  # "query refused": not a listing
    dns_server.set("spammy.test.rhs.test", "A", ["127.0.1.2"])
    dns_server.set("down.test", "TXT", ["a list that is down"])
    dns_server.fail("down.test")


def mail_from(server, address, source):
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=30, source_address=(source, 0))
    try:
        client.ehlo()
        code, text = client.mail(address)
        return code, text.decode()
    finally:
        client.close()


def test_it_refuses_a_listed_client_naming_the_list(block_lists, smtp_server, alice):
    assert mail_from(smtp_server, "sam@sender.test", STRANGER_IP) == (
        554, "5.7.1 Service unavailable; client [127.0.0.3] blocked using bl.test",
    )


def test_it_refuses_a_listed_sender_domain(block_lists, smtp_server, alice):
    assert mail_from(smtp_server, "x@spammy.test", "127.0.0.4") == (
        554, "5.7.1 Service unavailable; sender domain spammy.test blocked using rhs.test",
    )


def test_a_light_listing_only_scores(block_lists, smtp_server, alice):
    code, _ = send(smtp_server, message())  # from 127.0.0.2: light.test only
    assert code == 250


def test_no_zones_no_lookups(smtp_server, alice, dns_server):
    assert mail_from(smtp_server, "sam@sender.test", STRANGER_IP)[0] == 250
    assert not any(name.endswith("bl.test") for name, _ in dns_server.queries)
