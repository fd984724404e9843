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
