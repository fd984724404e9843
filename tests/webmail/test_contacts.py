"""The address book: collected from sent and received mail, edited, vCard export/import,
autocomplete."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webmail.contacts import parse_vcards
from webmail.models import Contact
from tests.webmail.conftest import deliver, make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def book(account):
    return [(c.name, c.address) for c in Contact.objects.filter(account=account).order_by("key")]


def test_sending_collects_the_recipients(alice, bob, alice_client):
    response = alice_client.post("/compose/", {
        "from_address": "alice@example.test", "to": "Bob Builder <bob@example.test>", "subject": "Hi", "body": "x", "action": "send",
    })
    assert response.status_code == 302
    assert book(alice) == [("Bob Builder", "bob@example.test")]
    answer = alice_client.get("/contacts/suggest/?q=bo").json()
    assert answer == {"contacts": [{"name": "Bob Builder", "address": "bob@example.test", "text": "Bob Builder <bob@example.test>"}]}
    assert alice_client.get("/contacts/suggest/?q=Bui").json()["contacts"][0]["address"] == "bob@example.test"


def test_senders_of_received_mail_can_be_collected(alice, alice_client):
    deliver(alice, make_mail("One", sender="Mallory <mallory@elsewhere.test>"))
    deliver(alice, make_mail("Two", sender="trent@elsewhere.test"))
    assert alice_client.post("/contacts/", {"form": "collect"}).status_code == 302
    assert [address for _, address in book(alice)] == ["mallory@elsewhere.test", "trent@elsewhere.test"]


def test_contacts_are_added_edited_and_deleted(alice, alice_client):
    alice_client.post("/contacts/", {"form": "add", "name": "Carol", "address": "carol@faraway.test"})
    [carol] = Contact.objects.filter(account=alice)
    alice_client.post("/contacts/", {"form": "add", "name": "Again", "address": "CAROL@faraway.test"})
    assert book(alice) == [("Carol", "carol@faraway.test")]
    alice_client.post("/contacts/", {"form": "edit", "id": carol.pk, "name": "Carol C.", "address": "carol@faraway.test"})
    assert book(alice) == [("Carol C.", "carol@faraway.test")]
    assert "Carol C." in alice_client.get("/contacts/").content.decode()
    alice_client.post("/contacts/", {"form": "delete", "id": carol.pk})
    assert book(alice) == []


def test_vcards_round_trip(alice, bob, alice_client, client_for):
    alice_client.post("/contacts/", {"form": "add", "name": "Doe, Jane; Jr", "address": "jane@faraway.test"})
    alice_client.post("/contacts/", {"form": "add", "name": "", "address": "x@faraway.test"})
    exported = alice_client.get("/contacts/export.vcf")
    assert exported["Content-Type"].startswith("text/vcard")
    text = exported.content.decode()
    assert "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Doe\\, Jane\\; Jr\r\nEMAIL:jane@faraway.test\r\nEND:VCARD\r\n" in text
    bob_client = client_for(bob)
    response = bob_client.post("/contacts/", {"form": "import", "vcards": SimpleUploadedFile("c.vcf", exported.content)})
    assert response.status_code == 302
    assert book(bob) == [("Doe, Jane; Jr", "jane@faraway.test"), ("x@faraway.test", "x@faraway.test")]


def test_vcard_3_with_folding_groups_and_parameters():
    text = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ana\r\n Bel\r\nitem1.EMAIL;TYPE=INTERNET,pref:ana@x.test\r\nEMAIL:mailto:a2@x.test\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:No mail\r\nEND:VCARD\r\n"
    assert parse_vcards(text) == [("AnaBel", ["ana@x.test", "a2@x.test"])]


def test_contacts_are_private_and_need_csrf(alice, bob, alice_client, client_for):
    alice_client.post("/contacts/", {"form": "add", "name": "Carol", "address": "carol@faraway.test"})
    [carol] = Contact.objects.filter(account=alice)
    bob_client = client_for(bob)
    bob_client.post("/contacts/", {"form": "delete", "id": carol.pk})
    assert "carol@faraway.test" not in bob_client.get("/contacts/").content.decode()
    assert bob_client.get("/contacts/suggest/?q=car").json() == {"contacts": []}
    assert book(alice) == [("Carol", "carol@faraway.test")]
    alice_client.handler.enforce_csrf_checks = True
    assert alice_client.post("/contacts/", {"form": "delete", "id": carol.pk}).status_code == 403


# Collected automatically ------------------------------------------------------------------


def senders(account):
    return [address for _, address in book(account)]


def test_senders_of_mail_read_are_collected_when_the_address_book_is_used(alice, alice_client):
    from mailstore import actions as store
    from tests.webmail.conftest import folder

    read = deliver(alice, make_mail("One", sender="Mallory Mayhem <mallory@elsewhere.test>"))
    deliver(alice, make_mail("Unread", sender="trent@elsewhere.test"))
    spam = deliver(alice, make_mail("Spam", sender="spammer@elsewhere.test"), folder="Junk")
    for sender, headers in [
        ("noreply@shop.test", ()), ("list@lists.test", [("List-Id", "<talk.lists.test>")]),
        ("away@elsewhere.test", [("Auto-Submitted", "auto-replied")]), ("alice@example.test", ()),
    ]:
        machine = deliver(alice, make_mail("Automatic", sender=sender, headers=headers))
        store.store_flags(folder(alice, "INBOX"), [machine.uid], mode="add", flags=["\\Seen"])
    store.store_flags(folder(alice, "INBOX"), [read.uid], mode="add", flags=["\\Seen"])
    store.store_flags(folder(alice, "Junk"), [spam.uid], mode="add", flags=["\\Seen"])
    assert alice_client.get("/contacts/suggest/?q=may").json()["contacts"] == [
        {"name": "Mallory Mayhem", "address": "mallory@elsewhere.test", "text": "Mallory Mayhem <mallory@elsewhere.test>"}
    ]
    assert senders(alice) == ["mallory@elsewhere.test"]
    assert Contact.objects.get(account=alice).collected
    # Read later (here as an IMAP client would): collected on the next use, and only then.
    store.store_flags(folder(alice, "INBOX"), [2], mode="add", flags=["\\Seen"])
    assert senders(alice) == ["mallory@elsewhere.test"]
    assert "trent@elsewhere.test" in alice_client.get("/contacts/").content.decode()
    assert senders(alice) == ["mallory@elsewhere.test", "trent@elsewhere.test"]


def test_recipients_of_mail_filed_in_sent_by_any_client_are_collected(alice, alice_client):
    from mailstore import actions as store

    store.append(alice, "Sent", make_mail("Hi", sender="alice@example.test", to="Carol <carol@faraway.test>, dave@faraway.test",
                                          headers=[("Cc", "Erin <erin@faraway.test>")]), flags=["\\Seen"])
    alice_client.get("/contacts/suggest/?q=x")
    assert book(alice) == [("Carol", "carol@faraway.test"), ("", "dave@faraway.test"), ("Erin", "erin@faraway.test")]


def test_what_the_user_typed_is_kept_and_a_harvest_reads_only_what_changed(alice, alice_client, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from mailstore import actions as store
    from tests.webmail.conftest import folder
    from webmail import actions

    alice_client.post("/contacts/", {"form": "add", "name": "My Mallory", "address": "Mallory@elsewhere.test"})
    monkeypatch.setattr(actions, "HARVEST_BATCH", 2)
    for n in range(4):
        deliver(alice, make_mail(f"n{n}", sender=f"Writer {n} <w{n}@elsewhere.test>"))
    deliver(alice, make_mail("again", sender="Mallory M. <mallory@elsewhere.test>"))
    store.store_flags(folder(alice, "INBOX"), [1, 2, 3, 4, 5], mode="add", flags=["\\Seen"])
    actions.harvest_contacts(alice)
    # One STORE gave the five one MODSEQ: the two rows read are the newest UIDs; the
    # entry typed in keeps its name and spelling.
    assert book(alice) == [("My Mallory", "Mallory@elsewhere.test"), ("Writer 3", "w3@elsewhere.test")]
    with CaptureQueriesContext(connection) as queries:
        assert actions.harvest_contacts(alice) == 0
    assert len(queries) == 2  # the folders' MODSEQs and the marks: nothing changed, nothing read
