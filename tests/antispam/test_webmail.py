"""The webmail shows a message's verdict in plain words, Spam/Not spam train the user's
filter at once, and the spam settings page changes thresholds and lists."""
import pytest

from antispam import actions, policy
from antispam.models import BayesCorpus, ListEntry, SpamSettings, Verdict
from tests.webmail.conftest import alice_client, client_for, deliver, folder, make_mail  # noqa: F401

pytestmark = pytest.mark.django_db


def test_the_message_page_explains_the_verdict(alice, alice_client):
    message = deliver(alice, make_mail("Deal"))
    Verdict.objects.create(
        account=alice, blob=message.blob, score=4.5, action="tag",
        rules=[["NEVER_SEEN", 0.5, "you have never corresponded with this sender"],
               ["BAYES_SPAM", 4.0, "Bayes: 0.97 \u2014 words like \u201cdeal\u201d look like spam to your filter"]],
        results={"spf": "pass", "dkim": ["fail"], "dmarc": "fail", "arc": "none"},
    )
    page = alice_client.get(f"/f/{message.folder_id}/m/{message.uid}/").content.decode()
    assert "Spam check: marked as possible spam (score 4.5)" in page
    assert "<strong>DMARC fail</strong>: the sender&#x27;s domain failed DMARC" in page
    assert page.index("Bayes: 0.97") < page.index("you have never corresponded with this sender")
    assert 'formaction="/f/%d/m/%d/spam/"' % (message.folder_id, message.uid) in page


def test_spam_button_trains_at_once(alice, alice_client):
    message = deliver(alice, make_mail("Cheap pills"))
    response = alice_client.post(f"/f/{message.folder_id}/m/{message.uid}/spam/", {"action": "junk"})
    assert response.status_code == 302
    assert BayesCorpus.objects.get(account=alice).spam == 1
    junk = folder(alice, "Junk")
    moved = junk.messages.get()
    alice_client.post(f"/f/{junk.pk}/m/{moved.uid}/spam/", {"action": "notjunk"})
    assert BayesCorpus.objects.filter(account=alice).values_list("spam", "ham").get() == (0, 1)


def test_settings_page(alice, alice_client):
    page = alice_client.get("/settings/spam/").content.decode()
    assert "Now: marked as spam from 4.0, filed into Junk from 6.0," in page
    assert "href=\"/settings/spam/\"" in alice_client.get("/settings/").content.decode()
    alice_client.post("/settings/spam/", {"form": "thresholds", "tag": "3", "junk": "5", "reject": ""})
    assert policy.thresholds(alice) == policy.Thresholds(3.0, 5.0, 15.0)
    response = alice_client.post("/settings/spam/", {"form": "thresholds", "tag": "5", "junk": "3"})
    assert response.status_code == 400 and "the Junk threshold cannot be below the tag threshold" in response.content.decode()
    alice_client.post("/settings/spam/", {"form": "entry", "kind": "block", "pattern": "Spam.Example"})
    entry = ListEntry.objects.get(account=alice)
    assert (entry.kind, entry.pattern) == ("block", "spam.example")
    alice_client.post("/settings/spam/", {"form": "remove", "entry": entry.pk})
    assert not ListEntry.objects.exists()


def test_another_users_entries_cannot_be_removed(alice, bob, alice_client):
    entry = actions.add_list_entry("allow", "friend.example", account=bob)
    alice_client.post("/settings/spam/", {"form": "remove", "entry": entry.pk})
    assert ListEntry.objects.filter(pk=entry.pk).exists()
    assert not SpamSettings.objects.exists()
