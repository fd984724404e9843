"""Protected subjects (the real Subject inside the encryption, "..." outside) both ways,
and a message decrypted once per request."""
import re

import pytest
from django.test import RequestFactory
from django.urls import reverse

from mailstore import actions as store
from secmail import actions, mimeraw, openpgp, outgoing, reader, reading, smime
from secmail.models import OPENPGP, SMIME
from secmail.results import Decryption, Status
from tests.conftest import PASSWORD
from tests.secmail.conftest import openssl, pem
from tests.secmail.test_flow import MESSAGE, PASSPHRASE, smime_identity

pytestmark = pytest.mark.django_db(transaction=True)


def header_block(message):
    return mimeraw.split_header_body(mimeraw.canonical(message))[0].decode()


def armoured(message):
    return re.search(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----\r?\n", message, re.S).group(0)


def sign_in(client, address):
    client.post(reverse("webmail:login"), {"address": address, "password": PASSWORD})
    return client


def unlock(client, own):
    client.post(reverse("secmail:keys"), {"form": "unlock", "key": own.pk, "unlock-passphrase": PASSPHRASE})


# ---- sending --------------------------------------------------------------------------

def test_encrypted_openpgp_mail_carries_its_subject_inside_only(alice, gpg):
    fpr = gpg.new_key("bob@example.test")
    actions.import_peer_key(alice, gpg.public(fpr))
    sent = outgoing.protect(alice, MESSAGE, kind=OPENPGP, sign=False, encrypt=True, recipients=["bob@example.test"])
    outer = header_block(sent)
    assert "Subject: ...\r\n" in outer and "Subject: plans" not in outer
    inner = gpg("--decrypt", input=armoured(sent)).stdout.decode()  # gpg, the independent tool
    inner_head = inner.split("\r\n\r\n", 1)[0]
    assert 'protected-headers="v1"' in inner_head and "Subject: plans" in inner_head
    assert "From: Alice <alice@example.test>" in inner_head and "To: Bob <bob@example.test>" in inner_head


def test_encrypted_smime_mail_carries_its_subject_inside_only(ca, alice, files):
    bob_cert, bob_key = ca.issue("bob@example.test")
    actions.import_peer_key(alice, smime.certificate_pem(bob_cert))
    sent = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=False, encrypt=True, recipients=["bob@example.test"])
    assert "Subject: ...\r\n" in header_block(sent) and b"Subject: plans" not in sent
    inner = openssl("cms", "-decrypt", "-in", files("m.eml", sent), "-recip", files("b.pem", pem(bob_cert)),
                    "-inkey", files("bk.pem", pem(bob_key))).stdout.decode()
    assert 'protected-headers="v1"' in inner and "Subject: plans" in inner


def test_signed_only_mail_keeps_its_subject_outside(ca, alice):
    own, _cert, _key = smime_identity(ca, alice)
    sent = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=False, recipients=[],
                            unlocked=actions.unseal_private(own, PASSPHRASE))
    assert "Subject: plans\r\n" in header_block(sent) and b"protected-headers" not in sent


# ---- reading --------------------------------------------------------------------------

INNER = (
    b'Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n'
    b"Subject: Secret launch\r\nFrom: Carol <carol@faraway.test>\r\nTo: bob@example.test\r\n"
    b"Message-ID: <launch@faraway.test>\r\n\r\nThe launch is on Friday.\r\n"
)


def pgp_mime_from_gpg(gpg, recipient_public, inner=INNER):
    """A PGP/MIME message as another mail program makes it with protected headers: the
    entity encrypted by the gpg command line, the outer Subject "..."."""
    gpg("--import", input=recipient_public.encode())
    ciphertext = gpg("--armor", "--encrypt", "--trust-model", "always", "-r", "bob@example.test", input=inner).stdout
    return (
        b"From: Carol <carol@faraway.test>\r\nTo: bob@example.test\r\nSubject: ...\r\n"
        b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <launch@faraway.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n" + mimeraw.canonical(ciphertext) + b"\r\n--b1--\r\n"
    )


def test_the_inner_subject_is_read_and_shown(client, bob, gpg):
    bob_key = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    raw = pgp_mime_from_gpg(gpg, bob_key.public_data)

    locked = reader.read(bob, raw)
    assert (locked.decryption, locked.subject) == (Decryption.LOCKED, "")
    security = reader.read(bob, raw, unlocked=[actions.unseal_private(bob_key, PASSPHRASE)])
    assert (security.decryption, security.subject) == (Decryption.DECRYPTED, "Secret launch")
    head, body = mimeraw.split_header_body(security.content)
    assert re.findall(rb"(?m)^Subject: .*$", head) == [b"Subject: Secret launch\r"]
    assert head.count(b"From: ") == 1 and b"Friday" in body

    stored = store.append(bob, "INBOX", raw)
    sign_in(client, "bob@example.test")
    unlock(client, bob_key)
    page = client.get(reverse("webmail:message", args=[stored.folder_id, stored.uid])).content.decode()
    assert '<h1 id="subject" dir="auto" data-protected-subject>Secret launch</h1>' in page
    assert "<title>Secret launch" in page


def test_a_round_trip_between_accounts_shows_the_real_subject(client, alice, bob):
    alice_key = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    bob_key = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    actions.set_published(bob_key, True)
    sent = outgoing.protect(alice, MESSAGE, kind=OPENPGP, sign=True, encrypt=True, recipients=["bob@example.test"],
                            unlocked=actions.unseal_private(alice_key, PASSPHRASE))
    actions.set_published(alice_key, True)
    security = reader.read(bob, sent, unlocked=[actions.unseal_private(bob_key, PASSPHRASE)])
    assert (security.subject, security.badge) == ("plans", "verified")


# ---- decrypted once per request -------------------------------------------------------

@pytest.fixture
def counted(monkeypatch):
    calls = {"openpgp": 0, "smime": 0}
    real_pgp, real_smime = openpgp.decrypt, smime.decrypt

    def pgp(*args, **kwargs):
        calls["openpgp"] += 1
        return real_pgp(*args, **kwargs)

    def cms(*args, **kwargs):
        calls["smime"] += 1
        return real_smime(*args, **kwargs)

    monkeypatch.setattr(openpgp, "decrypt", pgp)
    monkeypatch.setattr(smime, "decrypt", cms)
    return calls


def test_an_openpgp_message_is_decrypted_once_per_page_even_to_check_its_signer(client, alice, bob, counted):
    alice_key = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    bob_key = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    actions.set_published(bob_key, True)
    actions.import_peer_key(bob, alice_key.public_data)  # bob knows alice's key for alice@example.test only
    other_sender = MESSAGE.replace(b"From: Alice <alice@example.test>", b"From: Alice <alice.smith@example.test>")
    sent = outgoing.protect(alice, other_sender, kind=OPENPGP, sign=True, encrypt=True, recipients=["bob@example.test"],
                            unlocked=actions.unseal_private(alice_key, PASSPHRASE))
    stored = store.append(bob, "INBOX", sent)
    sign_in(client, "bob@example.test")
    unlock(client, bob_key)

    page = client.get(reverse("webmail:message", args=[stored.folder_id, stored.uid])).content.decode()
    # the signer's key was found by its fingerprint and checked: not "unknown key" but the wrong address
    assert "Signed, but not by the sender&#x27;s address" in page and "Friday" in page
    assert counted["openpgp"] == 1
    client.get(reverse("webmail:conversation", args=[stored.folder_id, stored.uid]))
    assert counted["openpgp"] == 2


def test_an_smime_message_is_decrypted_once_per_page(client, ca, alice, bob, counted):
    bob_own, bob_cert, _ = smime_identity(ca, bob)
    actions.import_peer_key(alice, smime.certificate_pem(bob_cert))
    sent = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=False, encrypt=True, recipients=["bob@example.test"])
    stored = store.append(bob, "INBOX", sent)
    sign_in(client, "bob@example.test")
    unlock(client, bob_own)
    page = client.get(reverse("webmail:message", args=[stored.folder_id, stored.uid])).content.decode()
    assert "Friday" in page and counted["smime"] == 1


def test_open_reading_answers_a_second_call_in_the_same_request_from_the_first(alice, bob, monkeypatch):
    from webmail.message import Reading

    alice_key = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    sent = outgoing.protect(alice, MESSAGE, kind=OPENPGP, sign=True, encrypt=False, recipients=[],
                            unlocked=actions.unseal_private(alice_key, PASSPHRASE))
    stored = store.append(bob, "INBOX", sent)
    reads = []
    real = reader.read
    monkeypatch.setattr(reader, "read", lambda *args, **kwargs: reads.append(1) or real(*args, **kwargs))
    request = RequestFactory().get("/")
    request.account, request.session = bob, {}
    first = reading.open_reading(request, stored, Reading(stored))
    second = reading.open_reading(request, stored, Reading(stored))
    assert first is second and len(reads) == 1
    assert first[0].signatures[0].status in (Status.VALID, Status.UNKNOWN_KEY)
    other_request = RequestFactory().get("/")
    other_request.account, other_request.session = bob, {}
    reading.open_reading(other_request, stored, Reading(stored))
    assert len(reads) == 2  # nothing is kept beyond the request
