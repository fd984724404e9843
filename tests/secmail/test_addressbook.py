"""A certificate harvested from signed mail is linked to the address book: the sender
becomes a contact, the contacts page says a key is known, and compose encrypts to it."""
import pytest
from django.urls import reverse

from mailstore import actions as store
from secmail import actions, outgoing, reader
from secmail.models import OPENPGP, SMIME, PeerKey
from secmail.results import Decryption
from tests.conftest import PASSWORD, inbox, message_bytes
from tests.secmail.test_flow import MESSAGE, PASSPHRASE, smime_identity

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_harvested_certificate_shows_in_contacts_and_compose_encrypts_to_it(client, ca, alice, bob):
    from webmail.models import Contact

    alice_own, _cert, _key = smime_identity(ca, alice)
    actions.trust_ca(bob, ca.pem)
    signed = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=False, recipients=[],
                              unlocked=actions.unseal_private(alice_own, PASSPHRASE))
    stored = store.append(bob, "INBOX", signed)
    client.post(reverse("webmail:login"), {"address": "bob@example.test", "password": PASSWORD})

    contacts = client.get(reverse("webmail:contacts")).content.decode()
    assert 'data-key-kind="smime"' not in contacts
    assert client.get(reverse("secmail:readiness"), {"kind": SMIME, "to": "alice@example.test"}).json()["all"] is False

    page = client.get(reverse("webmail:message", args=[stored.folder_id, stored.uid])).content.decode()
    assert 'data-badge="verified"' in page
    harvested = PeerKey.objects.get(account=bob, address="alice@example.test", kind=SMIME)
    assert harvested.source == PeerKey.HARVESTED
    contact = Contact.objects.get(account=bob, key="alice@example.test")
    assert (contact.name, contact.collected) == ("Alice", True)

    contacts = client.get(reverse("webmail:contacts")).content.decode()
    row = contacts[contacts.index("alice@example.test</a>"):][:400]
    assert 'data-key-kind="smime"' in row and "S/MIME key" in row
    assert client.get(reverse("secmail:readiness"), {"kind": SMIME, "to": "Alice <alice@example.test>"}).json()["all"] is True
    # asked for OpenPGP (the page's default), the answer names S/MIME as the kind that reaches her
    answer = client.get(reverse("secmail:readiness"), {"kind": OPENPGP, "to": "alice@example.test"}).json()
    assert (answer["all"], answer["alternative"]) == (False, SMIME)

    sent = client.post(reverse("webmail:compose"), {
        "from_address": "bob@example.test", "to": "alice@example.test", "cc": "", "bcc": "", "subject": "Re: plans",
        "body": "Friday suits me.", "action": "send", "secmail_kind": SMIME, "secmail_encrypt": "1",
    })
    assert sent.status_code == 302
    [received] = inbox(alice)
    raw = message_bytes(received)
    assert b"Friday suits me" not in raw and b"application/pkcs7-mime" in raw
    opened = reader.read(alice, raw, unlocked=[actions.unseal_private(alice_own, PASSPHRASE)])
    assert opened.decryption is Decryption.DECRYPTED and b"Friday suits me" in opened.content


def test_harvesting_a_certificate_adds_the_sender_to_contacts_but_never_renames_one(ca, alice, bob):
    from webmail import actions as webmail_actions
    from webmail.models import Contact

    alice_own, _cert, _key = smime_identity(ca, alice)
    actions.trust_ca(bob, ca.pem)
    signed = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=False, recipients=[],
                              unlocked=actions.unseal_private(alice_own, PASSPHRASE))
    security = reader.read(bob, signed)
    assert not Contact.objects.filter(account=bob).exists()
    assert actions.harvest(bob, security, "alice@example.test")
    contact = Contact.objects.get(account=bob, key="alice@example.test")
    assert (contact.name, contact.collected) == ("Alice", True)

    webmail_actions.save_contact(bob, "alice@example.test", "Alice from work", contact_id=contact.pk)
    actions.harvest(bob, security, "alice@example.test")
    contact.refresh_from_db()
    assert (contact.name, contact.collected) == ("Alice from work", False)
