"""Compose in the webmail with sign/encrypt: refused before sending when a recipient has no
key or the key to sign with is locked; otherwise bob's copy and alice's Sent copy are
ciphertext, and bob reads it verified."""
import pytest
from django.urls import reverse

from mailstore.models import Message
from secmail import actions, reader
from secmail.models import OPENPGP
from secmail.results import Decryption
from tests.conftest import PASSWORD, inbox, message_bytes

pytestmark = pytest.mark.django_db(transaction=True)
PASSPHRASE = "key passphrase 1"


def sign_in(client, address):
    client.post(reverse("webmail:login"), {"address": address, "password": PASSWORD})
    return client


def send(client, **fields):
    data = {"from_address": "alice@example.test", "to": "bob@example.test", "cc": "", "bcc": "", "subject": "Plans",
            "body": "The launch is on Friday.", "action": "send", "secmail_kind": OPENPGP}
    data.update(fields)
    return client.post(reverse("webmail:compose"), data)


def encrypted_mail_read_by_bob(client, alice, bob, **fields):
    """Alice and bob publish keys; alice sends bob encrypted mail (with `fields`); bob, now
    signed in with his key unlocked, has it: the message as he received it."""
    alice_key = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    bob_key = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    actions.set_published(alice_key, True)
    actions.set_published(bob_key, True)
    sign_in(client, "alice@example.test")
    client.post(reverse("secmail:keys"), {"form": "unlock", "key": alice_key.pk, "unlock-passphrase": PASSPHRASE})
    assert send(client, secmail_encrypt="1", **fields).status_code == 302
    [received] = inbox(bob)

    client.post(reverse("webmail:logout"))
    sign_in(client, "bob@example.test")
    client.post(reverse("secmail:keys"), {"form": "unlock", "key": bob_key.pk, "unlock-passphrase": PASSPHRASE})
    return received


def test_signed_and_encrypted_mail_from_the_compose_page(client, alice, bob):
    alice_key = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    bob_key = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    sign_in(client, "alice@example.test")

    ready = client.get(reverse("secmail:readiness"), {"kind": OPENPGP, "to": "Bob <bob@example.test>, carol@faraway.test"}).json()
    assert ready == {"kind": OPENPGP, "recipients": {"bob@example.test": False, "carol@faraway.test": False}, "all": False, "can_sign": False,
                     "alternative": ""}
    refused = send(client, secmail_encrypt="1")
    assert refused.status_code == 400 and "no encryption key for bob@example.test" in refused.content.decode()
    actions.set_published(bob_key, True)
    actions.set_published(alice_key, True)
    locked = send(client, secmail_encrypt="1", secmail_sign="1")
    assert locked.status_code == 400 and "unlock your key" in locked.content.decode()
    assert not inbox(bob)

    client.post(reverse("secmail:keys"), {"form": "unlock", "key": alice_key.pk, "unlock-passphrase": PASSPHRASE})
    assert client.get(reverse("secmail:readiness"), {"kind": OPENPGP, "to": "bob@example.test"}).json()["can_sign"]
    assert send(client, secmail_encrypt="1", secmail_sign="1").status_code == 302
    [received] = inbox(bob)
    raw = message_bytes(received)
    assert b"Friday" not in raw and b"multipart/encrypted" in raw and b"Autocrypt: addr=alice@example.test" in raw
    sent = Message.objects.get(folder__account=alice, folder__name="Sent")
    assert b"Friday" not in message_bytes(sent)

    security = reader.read(bob, raw, unlocked=[actions.unseal_private(bob_key, PASSPHRASE)])
    assert (security.decryption, security.badge) == (Decryption.DECRYPTED, "verified")
    assert b"Friday" in security.content


def test_plain_mail_carries_the_autocrypt_header_of_a_published_key(client, alice, bob):
    actions.set_published(actions.generate_openpgp_key(alice, passphrase=PASSPHRASE), True)
    sign_in(client, "alice@example.test")
    assert send(client).status_code == 302
    raw = message_bytes(inbox(bob)[0])
    assert b"Autocrypt: addr=alice@example.test; keydata=" in raw and b"The launch is on Friday." in raw
    assert actions.learn_autocrypt(bob, raw).address == "alice@example.test"


def test_a_reply_to_encrypted_mail_quotes_the_decrypted_text_under_its_real_subject_and_encrypts(client, alice, bob):
    received = encrypted_mail_read_by_bob(client, alice, bob, secmail_sign="1")
    page = client.get(reverse("webmail:compose"), {"reply": f"{received.folder_id}:{received.uid}"}).content.decode()
    assert 'value="Re: Plans"' in page and "&gt; The launch is on Friday." in page
    assert 'name="secmail_encrypt" value="1" checked' in page and '<option value="openpgp" selected>' in page
    # a plain message's reply starts without encryption
    plain = send(client, from_address="bob@example.test", to="alice@example.test", subject="Lunch", body="Noon?")
    assert plain.status_code == 302
    [lunch] = [m for m in inbox(alice) if m.subject == "Lunch"]
    client.post(reverse("webmail:logout"))
    sign_in(client, "alice@example.test")
    page = client.get(reverse("webmail:compose"), {"reply": f"{lunch.folder_id}:{lunch.uid}"}).content.decode()
    assert 'value="Re: Lunch"' in page and 'name="secmail_encrypt" value="1" checked' not in page


def test_forwarding_encrypted_mail_quotes_the_decrypted_text_and_offers_no_ciphertext(client, alice, bob):
    received = encrypted_mail_read_by_bob(client, alice, bob)
    page = client.get(reverse("webmail:compose"), {"forward": f"{received.folder_id}:{received.uid}"}).content.decode()
    assert 'value="Fwd: Plans"' in page and "The launch is on Friday." in page and "Subject: Plans" in page
    assert 'name="secmail_encrypt" value="1" checked' in page
    assert "encrypted.asc" not in page and "-----BEGIN PGP MESSAGE-----" not in page
