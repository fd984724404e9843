"""Each recipient's verdict over real SMTP (antispam.policy, wired by antispam.checks and
mta.inbound): X-Spam-* fields on the stored copy, the rules stored for the webmail,
thresholds per domain and account, allow and block lists, reputation, and refusal at
SMTP time only when every recipient would reject."""
import pytest

from antispam import actions, policy
from antispam.models import Verdict
from tests.antispam.conftest import STRANGER_IP, message, send, sign_rsa
from tests.conftest import message_bytes

pytestmark = pytest.mark.django_db(transaction=True)

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"


def stored(account):
    from mailstore.models import Message

    return [(m.folder.name, m) for m in Message.objects.filter(folder__account=account).select_related("folder").order_by("pk")]


def fields(raw, name):
    from mta.headers import field_values

    return field_values(raw, name)


def test_a_good_message_is_scored_and_explained(smtp_server, alice):
    code, _ = send(smtp_server, sign_rsa(message()))
    assert code == 250
    [(folder, copy)] = stored(alice)
    raw = message_bytes(copy)
    assert folder == "INBOX"
    assert fields(raw, "X-Spam-Score") == ["0.5"]
    assert fields(raw, "X-Spam-Status") == ["No, score=0.5 required=4.0 tests=NEVER_SEEN"]
    verdict = Verdict.objects.get(account=alice, blob=copy.blob)
    assert verdict.action == "none"
    assert verdict.rules == [["NEVER_SEEN", 0.5, "you have never corresponded with this sender"]]
    assert verdict.results["dmarc"] == "pass"


def test_gtube_is_refused_at_smtp_time(smtp_server, alice):
    code, text = send(smtp_server, sign_rsa(message(body=GTUBE)))
    assert (code, text) == (550, "5.7.1 Message refused as spam (score 1000.5); if it is not, reach the recipient another way")
    assert stored(alice) == []


def test_never_reject_files_it_into_junk_instead(smtp_server, alice):
    actions.set_thresholds(account=alice, never_reject=True)
    code, _ = send(smtp_server, sign_rsa(message(body=GTUBE)))
    assert code == 250
    [(folder, copy)] = stored(alice)
    assert folder == "Junk"
    assert fields(message_bytes(copy), "X-Spam-Status")[0].startswith("Yes, score=1000.5 required=4.0 tests=GTUBE,")


def test_one_recipient_rejecting_does_not_refuse_the_others(smtp_server, alice, bob):
    actions.set_thresholds(account=bob, never_reject=True)
    from tests.antispam.conftest import ALLOWED_IP
    import smtplib

    client = smtplib.SMTP("127.0.0.1", smtp_server.port, local_hostname="mail.sender.test", source_address=(ALLOWED_IP, 0))
    client.ehlo()
    client.mail("sam@sender.test")
    client.rcpt("alice@example.test")
    client.rcpt("bob@example.test")
    code, _ = client.data(sign_rsa(message(body=GTUBE)))
    client.quit()
    assert code == 250
    assert [folder for folder, _ in stored(alice)] == ["Junk"]  # never silently dropped
    assert [folder for folder, _ in stored(bob)] == ["Junk"]
    assert Verdict.objects.get(account=alice).action == "reject"


def test_domain_thresholds_and_account_override(smtp_server, alice, bob, domain):
    actions.set_thresholds(domain=domain, tag=0.1, junk=0.4)
    actions.set_thresholds(account=bob, tag=5.0, junk=8.0)
    for rcpt in ("alice@example.test", "bob@example.test"):
        assert send(smtp_server, sign_rsa(message()), rcpt=rcpt)[0] == 250
    assert [folder for folder, _ in stored(alice)] == ["Junk"]
    assert [folder for folder, _ in stored(bob)] == ["INBOX"]


def test_block_list_of_the_domain_and_allow_list_of_the_account(smtp_server, alice, bob, domain):
    actions.add_list_entry("block", "sender.test", domain=domain)
    actions.add_list_entry("allow", "Sam@Sender.test", account=alice)
    assert send(smtp_server, sign_rsa(message()), rcpt="bob@example.test")[0] == 550
    assert send(smtp_server, sign_rsa(message()), rcpt="alice@example.test")[0] == 250
    [(folder, copy)] = stored(alice)
    assert folder == "INBOX"
    assert Verdict.objects.get(account=alice).rules == [["ALLOWLISTED", -20.0, "sam@sender.test is on your allow list"]]


def test_an_allow_entry_is_not_trusted_for_a_forged_sender(smtp_server, alice):
    actions.add_list_entry("allow", "relaxed.test", account=alice)
    # relaxed.test publishes no SPF: from a stranger's address nothing proves the From.
    send(smtp_server, message(author="R <r@relaxed.test>"), source=STRANGER_IP, helo="client.test", mail_from="r@relaxed.test")
    names = [rule[0] for rule in Verdict.objects.get(account=alice).rules]
    assert "ALLOWLISTED_UNVERIFIED" in names and "ALLOWLISTED" not in names


def test_people_you_wrote_to_are_known(smtp_server, alice):
    from webmail.models import Contact

    Contact.objects.create(account=alice, address="sam@sender.test", key="sam@sender.test")
    send(smtp_server, sign_rsa(message()))
    assert Verdict.objects.get(account=alice).rules == [
        ["KNOWN_CORRESPONDENT", -2.5, "you have corresponded with sam@sender.test before"],
    ]
    assert fields(message_bytes(stored(alice)[0][1]), "X-Spam-Score") == ["-2.5"]


def test_our_own_domain_forged_from_outside(smtp_server, alice, dns_server):
    dns_server.set("example.test", "TXT", ["v=spf1 -all"])
    raw = message(author="Boss <boss@example.test>")
    code, _ = send(smtp_server, raw, source=STRANGER_IP, helo="client.test", mail_from="boss@example.test")
    assert code == 250
    rules = {rule[0]: rule for rule in Verdict.objects.get(account=alice).rules}
    assert rules["FORGED_LOCAL_DOMAIN"][2].startswith("the sender claims to be from example.test, one of our own domains")
    assert [folder for folder, _ in stored(alice)] == ["Junk"]


def test_sieve_spamtest_sees_the_recipients_score(smtp_server, alice, bob):
    from mailstore.actions import create_folder
    from sieve.actions import put_script

    create_folder(alice, "Spammy")
    put_script(alice, "s", 'require ["spamtestplus", "relational", "comparator-i;ascii-numeric", "fileinto"];\r\n'
               'if spamtest :percent :value "ge" :comparator "i;ascii-numeric" "20" { fileinto "Spammy"; }\r\n', activate=True)
    assert send(smtp_server, sign_rsa(message()))[0] == 250  # 0.5 points: 5 %
    actions.add_list_entry("block", "sam@sender.test", account=bob)  # bob's list, not alice's
    code, _ = send(smtp_server, message(author="Boss <boss@example.test>"), source=STRANGER_IP, helo="client.test",
                   mail_from="boss@example.test")  # forged: 35 %
    assert code == 250
    assert [folder for folder, _ in stored(alice)] == ["INBOX", "Spammy"]


def test_raw_utf8_words_reach_the_filter_over_smtp(smtp_server, alice):
    """An SMTPUTF8-style message with a raw UTF-8 Subject: its words are the Bayes clues."""
    from antispam import bayes

    for i in range(12):
        bayes.learn(None, ["s:überweisung", "s:bestätigen", f"s{i}"], f"spam{i}", spam=True)
        bayes.learn(None, ["s:mittagessen", f"h{i}"], f"ham{i}", spam=False)
    code, _ = send(smtp_server, sign_rsa(message(subject="Überweisung bestätigen", body="Bitte heute.\r\n".encode())))
    assert code == 250
    rules = {rule[0]: rule for rule in Verdict.objects.get(account=alice).rules}
    explanation = rules["BAYES_SPAM"][2]
    assert "\u201cüberweisung\u201d" in explanation and "\u201cbestätigen\u201d" in explanation
