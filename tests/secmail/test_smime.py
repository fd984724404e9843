"""S/MIME round trips with `openssl cms`/`openssl smime` both ways, and the verification
states (tampered, wrong address, expired, unknown CA) on certificates made here."""
import datetime

import pytest

from secmail import mimeraw, smime
from secmail.results import Status
from tests.secmail.conftest import CA, NOW, openssl, pem

BODY = (
    b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Hello Bob,=0D\r\nthe meeting is at 10.\r\n"
)


def signed_message(cert, key, body=BODY, chain=()):
    outer, entity = mimeraw.split_message(body)
    return mimeraw.join_message(outer, smime.sign_entity(entity, cert, key, chain))


def verify_message(message, from_address="alice@example.test", trusted=(), now=None):
    _, entity = mimeraw.split_message(message)
    head, body = mimeraw.split_header_body(entity)
    ctype, params = mimeraw.content_type(head)
    if ctype == "multipart/signed":
        content, signature = mimeraw.split_multipart(body, params["boundary"])[:2]
        sig_head, sig_body = mimeraw.split_header_body(signature)
        return smime.verify(content, smime.decode_body(sig_head, sig_body), from_address=from_address, trusted_cas=trusted, now=now)
    assert ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"), ctype
    return smime.verify(None, smime.decode_body(head, body), from_address=from_address, trusted_cas=trusted, now=now)


def test_it_signs_what_openssl_verifies(ca, files):
    cert, key = ca.issue("alice@example.test")
    message = signed_message(cert, key)
    done = openssl("cms", "-verify", "-in", files("m.eml", message), "-CAfile", files("ca.pem", ca.pem))
    assert b"Hello Bob,=0D\r\nthe meeting is at 10." in done.stdout
    assert b"Verification successful" in done.stderr


def test_it_verifies_what_openssl_signs_detached_and_opaque(ca, files):
    cert, key = ca.issue("alice@example.test")
    _, entity = mimeraw.split_message(BODY)
    for flags in ([], ["-nodetach"]):
        done = openssl("smime", "-sign", "-md", "sha256", "-signer", files("c.pem", pem(cert)), "-inkey", files("k.pem", pem(key)),
                       *flags, "-in", files("e.txt", entity), "-binary")
        result, content = verify_message(done.stdout, trusted=[ca.cert])
        assert result.status is Status.VALID, result.detail
        assert result.signer_addresses == ["alice@example.test"]
        assert mimeraw.canonical(content) == entity


def test_it_verifies_its_own_signature_and_names_the_signer(ca):
    cert, key = ca.issue("alice@example.test", cn="Alice Example")
    result, content = verify_message(signed_message(cert, key), trusted=[ca.cert])
    assert (result.status, result.signer_name, result.fingerprint) == (Status.VALID, "Alice Example", smime.fingerprint(cert))
    # Signed just now: NOW is the module's import time, which may be long ago in a busy run.
    signed_just_now = datetime.datetime.now(datetime.timezone.utc)
    assert result.signed_at is not None and abs(result.signed_at - signed_just_now) < datetime.timedelta(minutes=5)
    assert content.startswith(b"Content-Type: text/plain")


def test_it_reports_a_tampered_body(ca):
    cert, key = ca.issue("alice@example.test")
    message = signed_message(cert, key).replace(b"at 10.", b"at 11.")
    result, _ = verify_message(message, trusted=[ca.cert])
    assert result.status is Status.TAMPERED


def test_it_reports_a_wrong_signer_address(ca):
    cert, key = ca.issue("mallory@elsewhere.test")
    result, _ = verify_message(signed_message(cert, key), trusted=[ca.cert])
    assert result.status is Status.WRONG_ADDRESS
    assert result.signer_addresses == ["mallory@elsewhere.test"]


def test_it_reports_an_expired_certificate(ca):
    cert, key = ca.issue("alice@example.test", not_before=NOW - datetime.timedelta(days=400), not_after=NOW - datetime.timedelta(days=1))
    result, _ = verify_message(signed_message(cert, key), trusted=[ca.cert])
    assert result.status is Status.EXPIRED


def test_it_reports_an_unknown_ca(ca):
    stranger = CA("Stranger CA")
    cert, key = stranger.issue("alice@example.test")
    result, _ = verify_message(signed_message(cert, key), trusted=[ca.cert])
    assert result.status is Status.UNTRUSTED
    # and the same message verifies for a user who trusts that CA
    assert verify_message(signed_message(cert, key), trusted=[stranger.cert])[0].status is Status.VALID


def test_it_refuses_a_certificate_not_for_mail(ca):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert, key = ca.issue("alice@example.test", eku=ExtendedKeyUsageOID.SERVER_AUTH)
    assert verify_message(signed_message(cert, key), trusted=[ca.cert])[0].status is Status.UNTRUSTED


def test_it_encrypts_what_openssl_decrypts(ca, files):
    cert, key = ca.issue("bob@example.test")
    outer, entity = mimeraw.split_message(BODY)
    message = mimeraw.join_message(outer, smime.encrypt_entity(entity, [cert]))
    assert b"meeting" not in message
    done = openssl("cms", "-decrypt", "-in", files("m.eml", message), "-recip", files("c.pem", pem(cert)), "-inkey", files("k.pem", pem(key)))
    assert done.stdout.replace(b"\r\n", b"\n") == entity.replace(b"\r\n", b"\n")


def test_it_decrypts_what_openssl_encrypts(ca, files):
    cert, key = ca.issue("bob@example.test")
    _, entity = mimeraw.split_message(BODY)
    done = openssl("smime", "-encrypt", "-aes256", "-in", files("e.txt", entity), "-binary", files("c.pem", pem(cert)))
    _, enveloped = mimeraw.split_message(done.stdout)
    head, body = mimeraw.split_header_body(enveloped)
    der = smime.decode_body(head, body)
    assert smime.is_recipient(der, cert)
    assert mimeraw.canonical(smime.decrypt(der, cert, key)) == entity


def test_sign_then_encrypt_round_trips_through_openssl(ca, files):
    alice, alice_key = ca.issue("alice@example.test")
    bob, bob_key = ca.issue("bob@example.test")
    outer, entity = mimeraw.split_message(BODY)
    message = mimeraw.join_message(outer, smime.encrypt_entity(smime.sign_entity(entity, alice, alice_key), [bob, alice]))
    decrypted = openssl("cms", "-decrypt", "-in", files("m.eml", message), "-recip", files("b.pem", pem(bob)), "-inkey", files("bk.pem", pem(bob_key))).stdout
    done = openssl("cms", "-verify", "-in", files("s.eml", decrypted), "-CAfile", files("ca.pem", ca.pem))
    assert b"the meeting is at 10." in done.stdout


def test_the_wrong_key_does_not_decrypt(ca):
    bob, _ = ca.issue("bob@example.test")
    carol, carol_key = ca.issue("carol@example.test")
    _, entity = mimeraw.split_message(BODY)
    enveloped = smime.encrypt_entity(entity, [bob])
    head, body = mimeraw.split_header_body(enveloped)
    der = smime.decode_body(head, body)
    assert not smime.is_recipient(der, carol)
    from secmail.errors import CryptoFailure

    with pytest.raises(CryptoFailure):
        smime.decrypt(der, carol, carol_key)
