"""Reading secured mail in the webmail: the badge, the decrypted body through the usual
sanitiser, no remote content for encrypted mail, and a locked key asked for."""
import pytest
from django.urls import reverse

from mailstore import actions as store
from secmail import actions, outgoing
from secmail.models import OPENPGP, PeerKey
from tests.conftest import PASSWORD

PASSPHRASE = "key passphrase 1"
HTML = (
    b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: secret plans\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <p@example.test>\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p>The launch is on <b>Friday</b>.<img src="https://tracker.test/pixel.png"><script>alert(1)</script></p>\r\n'
)


@pytest.fixture
def keys(alice, bob):
    alice_key = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    bob_key = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    actions.set_published(alice_key, True)
    actions.set_published(bob_key, True)
    return alice_key, bob_key


def deliver_to_bob(alice, alice_key, raw, **options):
    sent = outgoing.protect(alice, raw, kind=OPENPGP, recipients=["bob@example.test"],
                            unlocked=actions.unseal_private(alice_key, PASSPHRASE), **options)
    from accounts.models import Account

    bob = Account.objects.get(localpart="bob")
    message = store.append(bob, "INBOX", sent)
    return message


def signed_in_as_bob(client):
    client.post(reverse("webmail:login"), {"address": "bob@example.test", "password": PASSWORD})
    return client


def test_an_encrypted_message_asks_for_the_key_then_shows_verified_and_sanitised(client, alice, bob, keys):
    alice_key, bob_key = keys
    stored = deliver_to_bob(alice, alice_key, HTML, sign=True, encrypt=True)
    signed_in_as_bob(client)
    page_url = reverse("webmail:message", args=[stored.folder_id, stored.uid])
    locked = client.get(page_url).content.decode()
    assert 'data-badge="locked"' in locked and "Friday" not in locked

    client.post(reverse("secmail:keys"), {"form": "unlock", "key": bob_key.pk, "unlock-passphrase": PASSPHRASE})
    page = client.get(page_url).content.decode()
    assert 'data-badge="encrypted"' in page and 'data-badge="verified"' in page
    assert 'data-security="verified"' in page
    assert "remote-banner" not in page  # no offer to load remote images of decrypted mail

    body = client.get(reverse("webmail:body", args=[stored.folder_id, stored.uid]) + "?images=1")
    text = body.content.decode()
    assert "Friday" in text and "<script" not in text
    assert "img-src" in body["Content-Security-Policy"] and "https:" not in body["Content-Security-Policy"].split("img-src")[1].split(";")[0]
    # the stored copy is ciphertext
    from tests.conftest import message_bytes

    assert b"Friday" not in message_bytes(stored)


def test_a_signed_message_from_an_unknown_key_is_not_green_until_autocrypt_teaches_it(client, alice, bob, keys):
    from accounts.models import Account

    alice_key, _ = keys
    sent = outgoing.protect(alice, HTML.replace(b"text/html", b"text/plain"), kind=OPENPGP, recipients=[], sign=True,
                            encrypt=False, unlocked=actions.unseal_private(alice_key, PASSPHRASE))
    assert sent.startswith(b"Autocrypt: ")
    actions.set_published(alice_key, False)  # bob can no longer find alice's key in the directory
    without_header = sent.split(b"\r\n", 1)[1].lstrip()
    while without_header[:1] == b" ":  # the folded keydata lines
        without_header = without_header.split(b"\r\n", 1)[1]
    bob = Account.objects.get(localpart="bob")
    stranger = store.append(bob, "INBOX", without_header)
    signed_in_as_bob(client)
    page = client.get(reverse("webmail:message", args=[stranger.folder_id, stranger.uid])).content.decode()
    assert 'data-security="invalid"' in page and 'data-badge="verified"' not in page
    assert "Signed with a key that is not known here" in page

    with_header = store.append(bob, "INBOX", sent)
    page = client.get(reverse("webmail:message", args=[with_header.folder_id, with_header.uid])).content.decode()
    assert PeerKey.objects.filter(account=bob, address="alice@example.test", source=PeerKey.AUTOCRYPT).exists()
    assert 'data-badge="verified"' in page and "not checked in person" in page


def test_an_attached_public_key_is_offered_and_imported(client, alice, bob, gpg):
    from email.message import EmailMessage

    fpr = gpg.new_key("carol@faraway.test", name="Carol")
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "carol@faraway.test", "bob@example.test", "my key"
    mail.set_content("Here is my key.")
    mail.add_attachment(gpg.public(fpr).encode(), maintype="application", subtype="pgp-keys", filename="carol.asc")
    stored = store.append(bob, "INBOX", mail.as_bytes())
    signed_in_as_bob(client)
    page = client.get(reverse("webmail:message", args=[stored.folder_id, stored.uid])).content.decode()
    assert "data-import-key" in page and "carol.asc" in page
    response = client.post(reverse("secmail:import_part", args=[stored.folder_id, stored.uid, "2"]))
    assert response.status_code == 302
    assert PeerKey.objects.get(account=bob, address="carol@faraway.test").fingerprint == fpr
    assert client.post(reverse("secmail:import_part", args=[stored.folder_id, stored.uid, "1"])).status_code == 404


def test_the_conversation_view_shows_encrypted_mail_decrypted_with_its_badge(client, alice, bob, keys):
    alice_key, bob_key = keys
    stored = deliver_to_bob(alice, alice_key, HTML.replace(b"text/html", b"text/plain"), sign=True, encrypt=True)
    signed_in_as_bob(client)
    client.post(reverse("secmail:keys"), {"form": "unlock", "key": bob_key.pk, "unlock-passphrase": PASSPHRASE})
    page = client.get(reverse("webmail:conversation", args=[stored.folder_id, stored.uid])).content.decode()
    assert 'data-badge="verified"' in page and "Friday" in page
