"""Known correspondents (antispam.correspondents): exact addresses from the Sent folder's
To/Cc/Bcc and the address book, a per-process snapshot that follows the Sent folder's
HIGHESTMODSEQ; mail filed in Sent over IMAP APPEND counts like the webmail's."""
import imaplib

import pytest

from antispam import correspondents
from mailstore import actions as store
from tests.conftest import PASSWORD
from tests.imap.conftest import imap_servers


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(correspondents, "clock", clock)
    correspondents.forget()
    yield clock
    correspondents.forget()


def sent(to, *, cc="", bcc="", n=1):
    fields = f"From: Alice <alice@example.test>\r\nTo: {to}\r\n"
    if cc:
        fields += f"Cc: {cc}\r\n"
    if bcc:
        fields += f"Bcc: {bcc}\r\n"
    return (fields + f"Subject: note {n}\r\nMessage-ID: <s{n}@example.test>\r\n\r\nHello.\r\n").encode()


def known(account, address):
    return correspondents.known(account.pk, address)


def test_it_matches_whole_addresses_not_substrings(db, alice):
    store.append(alice, "Sent", sent("Jim Bob <JimBob@X.test>"))
    assert known(alice, "jimbob@x.test") == (True, True)
    assert known(alice, "bob@x.test") == (False, True)  # the domain, not the person
    assert known(alice, "bob@y.x.test") == (False, False)
    assert known(alice, "jimbob@x.test.evil.example") == (False, False)


def test_to_cc_and_bcc_count_groups_and_local_parts_alone_do_not(db, alice):
    raw = sent('"Smith, Ann" <ann@a.test>, Team: tom@b.test, "q@c.test" <quoted@c2.test>;',
               cc="carl@cc.test", bcc="Hidden <hide@bcc.test>, bob")
    store.append(alice, "Sent", raw)
    for address in ("ann@a.test", "tom@b.test", "quoted@c2.test", "carl@cc.test", "hide@bcc.test"):
        assert known(alice, address) == (True, True), address
    assert known(alice, "q@c.test") == (False, False)  # a display name, not an address
    assert known(alice, "bob") == (False, False)


def test_only_the_sent_folder_counts(db, alice):
    store.append(alice, "INBOX", sent("ann@a.test"))
    store.append(alice, "Drafts", sent("dora@d.test"))
    assert known(alice, "ann@a.test") == (False, False)
    assert known(alice, "dora@d.test") == (False, False)


def test_new_sent_mail_and_contacts_count_within_the_check_interval(db, alice, clock):
    from webmail.models import Contact

    assert known(alice, "ann@a.test") == (False, False)
    store.append(alice, "Sent", sent("ann@a.test"))
    Contact.objects.create(account=alice, address="Carl@Cc.test", key="carl@cc.test")
    # Another process's change: this one sees it once its snapshot is checked again.
    assert known(alice, "ann@a.test") == (False, False)
    clock.now += correspondents.CHECK_SECONDS
    assert known(alice, "ann@a.test") == (True, True)
    assert known(alice, "carl@cc.test") == (True, True)
    assert known(alice, "other@cc.test") == (False, True)
    Contact.objects.filter(key="carl@cc.test").delete()
    clock.now += correspondents.CHECK_SECONDS
    assert known(alice, "carl@cc.test") == (False, False)


def test_an_unchanged_folder_is_not_read_again_and_a_changed_one_only_from_its_modseq(
    db, alice, clock, django_assert_max_num_queries
):
    for n in range(3):
        store.append(alice, "Sent", sent(f"p{n}@a.test", n=n))
    assert known(alice, "p0@a.test") == (True, True)
    clock.now += correspondents.CHECK_SECONDS
    with django_assert_max_num_queries(2):  # the Sent folders' modseqs, the contacts' count
        assert known(alice, "p1@a.test") == (True, True)
    with django_assert_max_num_queries(0):  # checked a moment ago
        assert known(alice, "p2@a.test") == (True, True)
    store.append(alice, "Sent", sent("p3@a.test", n=3))
    clock.now += correspondents.CHECK_SECONDS
    with django_assert_max_num_queries(3):  # and the messages changed since
        assert known(alice, "p3@a.test") == (True, True)
    assert known(alice, "p0@a.test") == (True, True)


def test_a_full_read_takes_the_newest_messages_only(db, alice, monkeypatch):
    monkeypatch.setattr(correspondents, "SENT_MESSAGES", 2)
    for n in range(3):
        store.append(alice, "Sent", sent(f"p{n}@a{n}.test", n=n))
    assert known(alice, "p0@a0.test") == (False, False)
    assert known(alice, "p2@a2.test") == (True, True)


def test_accounts_are_kept_apart(db, alice, bob):
    store.append(alice, "Sent", sent("ann@a.test"))
    assert known(alice, "ann@a.test") == (True, True)
    assert known(bob, "ann@a.test") == (False, False)


def test_mail_filed_in_sent_over_imap_append_counts(transactional_db, alice, settings, clock):
    """What a mail client does after sending over SMTP submission: APPEND to Sent."""
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    assert known(alice, "zoe@z.test") == (False, False)
    with imap_servers() as server:
        client = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
        client.login("alice@example.test", PASSWORD)
        assert client.append("Sent", "(\\Seen)", None, sent("Zoe <zoe@z.test>", bcc="yan@y.test"))[0] == "OK"
        client.logout()
    clock.now += correspondents.CHECK_SECONDS
    assert known(alice, "zoe@z.test") == (True, True)
    assert known(alice, "yan@y.test") == (True, True)


def test_the_reputation_rule_uses_it(db, alice):
    from antispam import policy

    store.append(alice, "Sent", sent("sam@sender.test"))
    decision = policy.decide(policy.Assessment(from_address="Sam@Sender.test"), [alice])[alice.pk]
    assert [name for name, _, _ in decision.rules] == ["KNOWN_CORRESPONDENT"]
    decision = policy.decide(policy.Assessment(from_address="ann@sender.test"), [alice])[alice.pk]
    assert [name for name, _, _ in decision.rules] == ["KNOWN_DOMAIN"]


def test_a_freemail_domain_earns_its_other_users_no_credit(db, alice, settings):
    from antispam import policy

    store.append(alice, "Sent", sent("friend@gmail.com, pal@mail.yahoo.com, colleague@partner.test"))

    def rules(address):
        decision = policy.decide(policy.Assessment(from_address=address), [alice])[alice.pk]
        return [name for name, _, _ in decision.rules]

    assert rules("friend@gmail.com") == ["KNOWN_CORRESPONDENT"]  # the address itself still counts
    assert rules("stranger@gmail.com") == ["NEVER_SEEN"]
    assert rules("other@mail.yahoo.com") == ["NEVER_SEEN"]  # a subdomain of a listed one
    assert rules("boss@partner.test") == ["KNOWN_DOMAIN"]
    settings.MAILSUITE_SPAM_SHARED_DOMAINS = ("partner.test",)
    assert rules("boss@partner.test") == ["NEVER_SEEN"]
    assert policy.is_shared_domain("GMAIL.com.") and not policy.is_shared_domain("notgmail.com")
