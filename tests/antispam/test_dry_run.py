"""The admin's dry run of a folder through the content filter (antispam.dryrun,
/admin/antispam/dry-run/): each message's score, the verdict it would get now, where it
is, and its top reasons; changing nothing; scoped like the rest of delegated admin.

Personas (tests/accounts/tenants.py): root is a superadmin; alice administers
example.test, where bob has a mailbox; mallory administers mallory.example.
"""
import pytest
from django.urls import reverse

from antispam import bayes, dryrun
from antispam.models import BayesCorpus, BayesToken, Learned, SenderMark, Verdict
from mailstore import actions as store
from mailstore.models import Folder, Message, TrainingExample
from tests.accounts.tenants import alice, bob, carol, example, make_user, mallory, mallory_domain, root  # noqa: F401
from tests.antispam.conftest import message

pytestmark = pytest.mark.django_db

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
URL = "/admin/antispam/dry-run/"


@pytest.fixture
def mailbox(bob):
    """bob's INBOX: a plain message, then GTUBE (newest); his Junk: a harmless message."""
    for i in range(12):  # a trained site filter, so that Bayes has a say (and could learn)
        bayes.learn(None, ["lottery", "winner", f"s{i}"], f"spam{i}", spam=True)
        bayes.learn(None, ["quarterly", "numbers", f"h{i}"], f"ham{i}", spam=False)
    plain = store.append(bob, "INBOX", message())
    store.append(bob, "INBOX", message(subject="Test", body=GTUBE))
    store.append(bob, "Junk", message(subject="Lunch?"))
    Verdict.objects.create(account=bob, blob=plain.blob, score=0.5, action="tag", rules=[], results={"dmarc": "pass"})
    return bob


def state():
    """Everything a dry run must leave alone."""
    return (
        list(Message.objects.order_by("pk").values_list("pk", "folder_id", "uid", "modseq", "seen", "flagged", "keywords")),
        list(Folder.objects.order_by("pk").values_list("pk", "highestmodseq", "message_count")),
        list(Verdict.objects.order_by("pk").values_list("pk", "score", "action")),
        list(BayesToken.objects.order_by("pk").values_list("token", "spam", "ham")),
        list(BayesCorpus.objects.order_by("pk").values_list("spam", "ham")),
        Learned.objects.count(), SenderMark.objects.count(), TrainingExample.objects.count(),
    )


def rows(response):
    return {row.uid: row for row, _, _ in response.context["rows"]}


def test_a_superadmin_sees_each_messages_verdict_and_nothing_changes(client, root, mailbox):
    before = state()
    client.force_login(root)
    response = client.get(URL, {"account": "bob@example.test", "folder": "INBOX"})
    assert response.status_code == 200
    found = rows(response)
    assert list(found) == [2, 1]  # newest first
    assert (found[2].action, found[2].score) == ("reject", 1000.5)
    assert found[2].reasons[0] == (1000.0, "the message contains the GTUBE test string, which is always treated as spam")
    assert found[2].placement == "in INBOX; the filter would file it into Junk now"
    assert found[1].action == "none" and found[1].recorded == "tag" and found[1].placement == "in INBOX"
    assert any("Bayes" in reason for _, reason in found[1].reasons)  # "words like “quarterly”, “numbers”"
    page = response.content.decode()
    assert "1 none, 1 reject (dry run: nothing changed)" in page
    assert "the message contains the GTUBE test string" in page
    junk = client.get(URL, {"account": "bob@example.test", "folder": "Junk"})
    assert rows(junk)[1].placement == "in Junk; the filter would not put it there now"
    assert state() == before


def test_a_domain_admin_may_run_it_on_their_domains_folders(client, alice, mailbox):
    before = state()
    client.force_login(alice)
    response = client.get(URL, {"account": "bob@example.test", "folder": "INBOX"})
    assert response.status_code == 200 and len(response.context["rows"]) == 2
    assert 'id="antispam-module"' in client.get(reverse("admin:index")).content.decode()
    assert state() == before


def test_others_are_refused(client, mallory, carol, mailbox):
    client.force_login(mallory)  # administers mallory.example, not example.test
    assert client.get(URL, {"account": "bob@example.test", "folder": "INBOX"}).status_code == 403
    assert client.get(URL, {"account": "nobody@example.test", "folder": "INBOX"}).status_code == 403
    assert client.get(URL, {"account": "carol@mallory.example", "folder": "INBOX"}).status_code == 200
    staff = make_user("staffer")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)  # staff, but administers no domain
    assert client.get(URL).status_code == 403
    client.logout()
    assert client.get(URL, {"account": "bob@example.test", "folder": "INBOX"}).status_code == 302  # to the login


def test_bad_input_gets_a_clear_answer(client, root, mailbox):
    client.force_login(root)
    response = client.get(URL, {"account": "nobody@example.test"})
    assert response.status_code == 404 and "There is no account nobody@example.test." in response.content.decode()
    response = client.get(URL, {"account": "bob@example.test", "folder": "Nope"})
    assert response.status_code == 404 and "bob@example.test has no folder Nope." in response.content.decode()
    response = client.get(URL, {"account": "bob@example.test"})  # a folder to choose
    assert response.status_code == 200 and '<option value="Junk">Junk (1)</option>' in response.content.decode()
    response = client.get(URL, {"account": "bob@example.test", "folder": "INBOX", "page": "x"})
    assert list(rows(response)) == [2, 1]


def test_it_is_paginated(client, root, mailbox, monkeypatch):
    monkeypatch.setattr(dryrun, "PAGE_SIZE", 1)
    client.force_login(root)
    first = client.get(URL, {"account": "bob@example.test", "folder": "INBOX"})
    assert list(rows(first)) == [2] and "page=2" in first.content.decode()
    second = client.get(URL, {"account": "bob@example.test", "folder": "INBOX", "page": "2"})
    assert list(rows(second)) == [1] and "page=1" in second.content.decode() and "page=3" not in second.content.decode()
    assert dryrun.run(Folder.objects.get(account=mailbox, name="INBOX"), limit=10**6).limit == dryrun.MAX_PAGE


def test_the_folder_list_offers_it_as_an_action(client, root, mailbox):
    client.force_login(root)
    inbox = Folder.objects.get(account=mailbox, name="INBOX")
    response = client.post(reverse("admin:mailstore_folder_changelist"), {
        "action": "dry_run_spam_filter", "_selected_action": [inbox.pk],
    })
    assert response.status_code == 302
    assert response["Location"] == f"{URL}?account=bob%40example.test&folder=INBOX"
