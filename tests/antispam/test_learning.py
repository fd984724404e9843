"""The filter learns from what users do: an IMAP MOVE into Junk (imaplib over a real
socket) makes the next similar message score higher; `manage.py spam train` learns an
mbox; `spam check` dry-runs a folder."""
import imaplib
import io
from pathlib import Path

import pytest
from django.core.management import call_command

from antispam import bayes
from antispam.models import BayesCorpus, SenderMark, Verdict
from tests.antispam.conftest import message, send, sign_rsa
from tests.conftest import PASSWORD
from tests.imap.conftest import imap_servers

pytestmark = pytest.mark.django_db(transaction=True)
CORPUS = Path(__file__).resolve().parent.parent / "data" / "spam-corpus"


@pytest.fixture
def imap_server(settings):
    settings.MAILSUITE_ALLOW_PLAINTEXT_LOOPBACK = True
    with imap_servers() as server:
        yield server


def trained_site_filter(n=12):
    for i in range(n):
        bayes.learn(None, ["agenda", "minutes", "lunch", f"h{i}"], f"ham{i}", spam=False)
        bayes.learn(None, ["lottery", "winner", "prize", f"s{i}"], f"spam{i}", spam=True)


def offer(n):
    body = b"Garden gnome clearance: ceramic gnomes, resin gnomes, solar gnomes, gnome bundles.\r\n"
    return sign_rsa(message(subject=f"Gnome clearance {n}", body=body).replace(b"<n1@", f"<g{n}@".encode()))


def score(account, n):
    return Verdict.objects.filter(account=account).order_by("pk")[n].score


def test_an_imap_move_into_junk_teaches_the_filter(smtp_server, imap_server, alice):
    trained_site_filter()
    assert send(smtp_server, offer(1))[0] == 250
    first = score(alice, 0)
    client = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    client.login("alice@example.test", PASSWORD)
    client.select("INBOX")
    assert client.uid("MOVE", "1", "Junk")[0] == "OK"
    client.logout()
    from antispam import tasks

    tasks.learn()  # what beat runs every minute
    assert BayesCorpus.objects.get(account=alice).spam == 1
    assert SenderMark.objects.get(account=alice, address="sam@sender.test").spam == 1
    assert send(smtp_server, offer(2))[0] == 250
    second = Verdict.objects.filter(account=alice).order_by("pk").last()
    assert second.score > first
    names = [rule[0] for rule in second.rules]
    assert "BAYES_SPAM" in names and "MARKED_JUNK" in names
    bayes_rule = next(rule for rule in second.rules if rule[0] == "BAYES_SPAM")
    assert bayes_rule[2].startswith("Bayes: 1.00 \u2014 words like \u201cbundles\u201d, \u201cceramic\u201d")


def test_a_move_is_learned_as_soon_as_it_commits_a_big_one_partly(smtp_server, imap_server, alice, monkeypatch):
    from antispam import actions, tasks
    from mailstore.models import TrainingExample

    monkeypatch.setattr(actions, "MOVED_AT_ONCE", 2)
    for n in range(3):
        assert send(smtp_server, offer(n))[0] == 250
    client = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    client.login("alice@example.test", PASSWORD)
    client.select("INBOX")
    assert client.uid("MOVE", "1", "Junk")[0] == "OK"
    assert BayesCorpus.objects.get(account=alice).spam == 1  # no task ran
    assert SenderMark.objects.get(account=alice, address="sam@sender.test").spam == 1
    assert client.uid("MOVE", "2:3", "Junk")[0] == "OK"
    client.logout()
    assert BayesCorpus.objects.get(account=alice).spam == 3
    client = imaplib.IMAP4("127.0.0.1", imap_server.ports["imap"])
    client.login("alice@example.test", PASSWORD)
    client.select("Junk")
    assert client.uid("MOVE", "1:3", "INBOX")[0] == "OK"  # three judgements, two learned at once
    client.logout()
    assert BayesCorpus.objects.filter(account=alice).values_list("spam", "ham").get() == (1, 2)
    assert TrainingExample.objects.filter(learned=False).count() == 1
    tasks.learn()  # the safety net
    assert BayesCorpus.objects.filter(account=alice).values_list("spam", "ham").get() == (0, 3)
    assert BayesCorpus.objects.filter(account=None).values_list("spam", "ham").get() == (0, 3)


def test_spam_train_and_check(alice):
    out = io.StringIO()
    call_command("spam", "train", "--spam", str(CORPUS / "spam.mbox"), "--account", "alice@example.test", stdout=out)
    call_command("spam", "train", "--ham", str(CORPUS / "ham.mbox"), stdout=out)
    call_command("spam", "train", "--ham", str(CORPUS / "ham.mbox"), stdout=out)
    assert out.getvalue().splitlines() == [
        "learned 200 of 200 messages as spam for alice@example.test and the site",
        "learned 200 of 200 messages as ham for the site",
        "learned 0 of 200 messages as ham for the site",
    ]
    assert BayesCorpus.objects.filter(account=None).values_list("spam", "ham").get() == (200, 200)

    from mailstore.actions import deliver, Recipient

    spam_raw = (CORPUS / "spam.mbox").read_bytes().split(b"\n\n\nFrom ")[3].split(b"\n", 1)[1].replace(b"\n", b"\r\n")
    deliver(spam_raw, [Recipient(alice, alice.address)], return_path="x@mega-deals.example")
    deliver(message(), [Recipient(alice, alice.address)], return_path="sam@sender.test")
    out = io.StringIO()
    call_command("spam", "check", "alice@example.test", "INBOX", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["UID", "SCORE", "ACTION", "SUBJECT", "RULES"]
    assert lines[1].split()[2] == "junk" and "BAYES_SPAM=4.5" in lines[1]
    assert lines[2].split()[2] == "none"
    assert lines[-1] == "2 messages in INBOX: 1 junk, 1 none (dry run: nothing changed)"


def test_spam_check_refuses_unknown_folders(alice):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="alice@example.test has no folder Nope"):
        call_command("spam", "check", "alice@example.test", "Nope")
