"""Keys through secmail.actions and whole messages through outgoing.protect and the reader:
alice and bob (accounts here) exchange signed and encrypted mail; what openssl and gpg
make reads here; partial signatures and nested ciphertext are reported as such."""
import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from secmail import actions, mimeraw, outgoing, reader, smime, unlock
from secmail.errors import BadPassphrase, InvalidInput, NoKeyFor, PrivateKeysDisabled
from secmail.models import OPENPGP, SMIME, PeerKey
from secmail.results import Decryption, Status
from tests.secmail.conftest import openssl, pem

PASSPHRASE = "key passphrase 1"
MESSAGE = (
    "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: plans\r\n"
    "Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <plans@example.test>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße, Bob: the launch is on Friday.\r\n"
).encode()


def p12(cert, key, password=b"p12 pass"):
    return pkcs12.serialize_key_and_certificates(b"alice", key, cert, None, BestAvailableEncryption(password))


def smime_identity(ca, account):
    cert, key = ca.issue(account.address, cn=account.display_name)
    own = actions.import_pkcs12(account, p12(cert, key), password="p12 pass", passphrase=PASSPHRASE)
    return own, cert, key


def test_it_imports_pkcs12_sealed_and_opens_only_with_the_passphrase(ca, alice):
    own, cert, key = smime_identity(ca, alice)
    assert (own.kind, own.addresses, own.fingerprint) == (SMIME, ["alice@example.test"], smime.fingerprint(cert))
    assert b"PRIVATE" not in bytes(own.sealed_private) and pem(key)[40:80] not in bytes(own.sealed_private)
    with pytest.raises(BadPassphrase):
        actions.unseal_private(own, "not the passphrase")
    assert smime.key_matches(cert, actions.unseal_private(own, PASSPHRASE).smime_key)
    with pytest.raises(BadPassphrase):
        actions.import_pkcs12(alice, p12(cert, key), password="wrong", passphrase=PASSPHRASE)


def test_a_certificate_for_someone_else_is_refused(ca, alice):
    cert, key = ca.issue("mallory@elsewhere.test")
    with pytest.raises(InvalidInput):
        actions.import_pkcs12(alice, p12(cert, key), password="p12 pass", passphrase=PASSPHRASE)


def test_with_server_private_keys_off_only_public_keys_are_kept(ca, alice, settings):
    settings.MAILSUITE_SERVER_PRIVATE_KEYS = False
    cert, key = ca.issue("alice@example.test")
    with pytest.raises(PrivateKeysDisabled):
        actions.import_pkcs12(alice, p12(cert, key), password="p12 pass", passphrase=PASSPHRASE)
    with pytest.raises(PrivateKeysDisabled):
        actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    own = actions.add_own_public_key(alice, smime.certificate_pem(cert))
    assert own.sealed_private is None and not own.has_private


def test_a_generated_request_gets_its_certificate(ca, alice, files):
    from cryptography import x509

    own = actions.request_smime_certificate(alice, passphrase=PASSPHRASE)
    assert own.pending
    openssl("req", "-verify", "-noout", "-in", files("r.csr", own.csr_pem))
    csr = x509.load_pem_x509_csr(own.csr_pem.encode())
    stranger, _ = ca.issue("alice@example.test")
    with pytest.raises(InvalidInput):
        actions.install_certificate(own, smime.certificate_pem(stranger))
    cert, _ = ca.issue("alice@example.test", key=_PublicOnly(csr.public_key()))
    own = actions.install_certificate(own, smime.certificate_pem(cert))
    assert not own.pending and own.addresses == ["alice@example.test"]
    unlocked = actions.unseal_private(own, PASSPHRASE)
    assert smime.key_matches(cert, unlocked.smime_key)


class _PublicOnly:
    """A key stand-in for CA.issue when only the public key is known (a CSR's)."""

    def __init__(self, public):
        self._public = public

    def public_key(self):
        return self._public


def test_signed_and_encrypted_smime_between_accounts(ca, alice, bob, files):
    alice_own, alice_cert, _ = smime_identity(ca, alice)
    bob_own, bob_cert, bob_key = smime_identity(ca, bob)
    actions.import_peer_key(alice, smime.certificate_pem(bob_cert))
    actions.trust_ca(bob, ca.pem)
    with pytest.raises(NoKeyFor) as refused:
        outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=True, recipients=["bob@example.test", "carol@example.test"],
                         unlocked=actions.unseal_private(alice_own, PASSPHRASE))
    assert refused.value.addresses == ["carol@example.test"]
    assert outgoing.readiness(alice, ["bob@example.test", "carol@example.test"], SMIME) == {"bob@example.test": True, "carol@example.test": False}

    sent = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=True, recipients=["bob@example.test"],
                            unlocked=actions.unseal_private(alice_own, PASSPHRASE))
    assert b"launch" not in sent and sent.startswith(b"From: Alice")
    # openssl opens it with bob's key and verifies alice's signature inside
    inner = openssl("cms", "-decrypt", "-in", files("m.eml", sent), "-recip", files("b.pem", pem(bob_cert)), "-inkey", files("bk.pem", pem(bob_key))).stdout
    assert b"Verification successful" in openssl("cms", "-verify", "-in", files("i.eml", inner), "-CAfile", files("ca.pem", ca.pem)).stderr

    locked = reader.read(bob, sent)
    assert (locked.encrypted, locked.decryption, locked.badge) == (True, Decryption.LOCKED, "unsigned")
    opened = reader.read(bob, sent, unlocked=[actions.unseal_private(bob_own, PASSPHRASE)])
    assert opened.decryption is Decryption.DECRYPTED
    (signature,) = opened.signatures
    assert (signature.status, signature.part, signature.signer_addresses, opened.badge) == (Status.VALID, "", ["alice@example.test"], "verified")
    assert "Grüße".encode("utf-8") in _decoded_text(opened.content)
    # the Sent copy opens for alice too (she is among the recipients)
    assert reader.read(alice, sent, unlocked=[actions.unseal_private(alice_own, PASSPHRASE)]).decryption is Decryption.DECRYPTED
    # bob keeps alice's certificate from the verified signature
    actions.harvest(bob, opened, "alice@example.test")
    assert outgoing.readiness(bob, ["alice@example.test"], SMIME) == {"alice@example.test": True}


def _decoded_text(message):
    import email
    import email.policy

    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return parsed.get_body(("plain",)).get_content().encode("utf-8")


def test_the_reader_reads_what_openssl_signs_and_encrypts(ca, alice, bob, files):
    bob_own, bob_cert, _ = smime_identity(ca, bob)
    alice_cert, alice_key = ca.issue("alice@example.test")
    actions.trust_ca(bob, ca.pem)
    outer, entity = mimeraw.split_message(MESSAGE.replace(b"8bit", b"7bit").replace("Grüße".encode(), b"Hello"))
    signed = openssl("smime", "-sign", "-md", "sha256", "-signer", files("a.pem", pem(alice_cert)), "-inkey", files("ak.pem", pem(alice_key)),
                     "-in", files("e.txt", entity)).stdout
    enveloped = openssl("smime", "-encrypt", "-aes256", "-in", files("s.txt", signed), files("b.pem", pem(bob_cert))).stdout
    _, enveloped_entity = mimeraw.split_message(enveloped)
    message = mimeraw.join_message(outer, enveloped_entity)
    security = reader.read(bob, message, unlocked=[actions.unseal_private(bob_own, PASSPHRASE)])
    assert (security.decryption, security.badge, security.signatures[0].status) == (Decryption.DECRYPTED, "verified", Status.VALID)


def test_a_signed_part_inside_an_unsigned_message_is_partial(ca, alice, bob):
    alice_own, _, _ = smime_identity(ca, alice)
    actions.trust_ca(bob, ca.pem)
    signed = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=False, recipients=[],
                              unlocked=actions.unseal_private(alice_own, PASSPHRASE))
    _, signed_entity = mimeraw.split_message(signed)
    assert reader.read(bob, signed).badge == "verified"
    wrapper = (b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: plans\r\n"
               b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
               b"Content-Type: text/html\r\n\r\n<p>Wire the money to account 666.</p>\r\n--outer\r\n" + signed_entity + b"\r\n--outer--\r\n")
    security = reader.read(bob, wrapper)
    assert [(s.status, s.part) for s in security.signatures] == [(Status.VALID, "2")]
    assert security.badge == "partial"


def test_ciphertext_nested_in_an_unencrypted_message_is_not_decrypted(ca, alice, bob):
    bob_own, bob_cert, _ = smime_identity(ca, bob)
    _, entity = mimeraw.split_message(MESSAGE)
    enveloped = smime.encrypt_entity(entity, [bob_cert])
    efail = (b"From: mallory@elsewhere.test\r\nTo: bob@example.test\r\n"
             b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<img src="http://evil.test/?\r\n'
             b"--x\r\n" + enveloped + b"\r\n--x\r\nContent-Type: text/html\r\n\r\n\">\r\n--x--\r\n")
    security = reader.read(bob, efail, unlocked=[actions.unseal_private(bob_own, PASSPHRASE)])
    assert security.decryption is Decryption.NESTED_REFUSED
    assert b"launch" not in security.content


def test_openpgp_between_accounts_with_published_keys_and_autocrypt(alice, bob, gpg, files):
    alice_own = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    bob_own = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    assert outgoing.readiness(alice, ["bob@example.test"], OPENPGP) == {"bob@example.test": False}
    actions.set_published(bob_own, True)
    actions.set_published(alice_own, True)
    assert outgoing.readiness(alice, ["bob@example.test"], OPENPGP) == {"bob@example.test": True}

    sent = outgoing.protect(alice, MESSAGE, kind=OPENPGP, sign=True, encrypt=True, recipients=["bob@example.test"],
                            unlocked=actions.unseal_private(alice_own, PASSPHRASE))
    assert b"launch" not in sent and sent.startswith(b"Autocrypt: addr=alice@example.test; keydata=")
    security = reader.read(bob, sent, unlocked=[unlock_for(bob_own)])
    assert (security.decryption, security.badge) == (Decryption.DECRYPTED, "verified")
    assert (security.signatures[0].fingerprint, security.signatures[0].key_source) == (alice_own.fingerprint, "directory")

    # gpg opens it with bob's secret key, and sees alice's signature
    secret = actions.unseal_private(bob_own, PASSPHRASE).openpgp_secret.armored
    gpg("--import", input=secret.encode())
    gpg("--import", input=alice_own.public_data.encode())
    payload = mimeraw.split_multipart(mimeraw.split_header_body(mimeraw.split_message(sent)[1])[1],
                                      mimeraw.content_type(mimeraw.split_header_body(mimeraw.split_message(sent)[1])[0])[1]["boundary"])[1]
    done = gpg("--status-fd", "2", "--decrypt", files("m.asc", mimeraw.split_header_body(payload)[1]))
    assert b"VALIDSIG " + alice_own.fingerprint.encode() in done.stderr, done.stderr.decode()
    assert b"Content-Transfer-Encoding" in done.stdout

    # bob's address book learns alice's key from the Autocrypt header
    learned = actions.learn_autocrypt(bob, sent)
    assert (learned.address, learned.fingerprint, learned.source) == ("alice@example.test", alice_own.fingerprint, PeerKey.AUTOCRYPT)
    older = sent.replace(b"Date: Mon, 02 Nov 2026", b"Date: Sun, 01 Nov 2026")
    assert actions.learn_autocrypt(bob, older) is None


def unlock_for(own):
    """Unlock through the session machinery, as the webmail does."""
    from django.contrib.sessions.backends.db import SessionStore

    session, token = SessionStore(), unlock.new_token()
    unlock.unlock(session, token, own, PASSPHRASE)
    assert unlock.unlocked(session, unlock.new_token(), own) is None  # another browser's token opens nothing
    return unlock.unlocked(session, token, own)


def test_the_reader_reads_pgp_mime_made_by_gpg_and_names_an_unknown_signer(alice, bob, gpg, files):
    bob_own = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    carol = gpg.new_key("alice@example.test", name="Not Alice")  # claims alice's address; bob has no key for it
    gpg("--import", input=bob_own.public_data.encode())
    _, entity = mimeraw.split_message(MESSAGE)
    entity = outgoing.seven_bit(entity)
    armored = gpg("--armor", "--trust-model", "always", "--sign", "--encrypt", "-r", bob_own.fingerprint, input=entity).stdout
    message = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n'
               b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
               b"--b\r\nContent-Type: application/octet-stream\r\n\r\n" + armored + b"\r\n--b--\r\n")
    unlocked = [actions.unseal_private(bob_own, PASSPHRASE)]
    security = reader.read(bob, message, unlocked=unlocked)
    assert (security.decryption, security.signatures[0].status, security.badge) == (Decryption.DECRYPTED, Status.UNKNOWN_KEY, "invalid")
    actions.import_peer_key(bob, gpg.public(carol))
    security = reader.read(bob, message, unlocked=unlocked)
    assert (security.signatures[0].status, security.badge) == (Status.VALID, "verified")
    assert b"launch" in _decoded_text(security.content)


def test_autocrypt_headers_with_a_foreign_addr_or_unknown_attribute_are_ignored(alice, bob, gpg):
    import base64

    fpr = gpg.new_key("mallory@elsewhere.test")
    keydata = base64.b64encode(gpg("--export", fpr).stdout).decode()
    for header in (f"addr=mallory@elsewhere.test; keydata={keydata}", f"addr=alice@example.test; critical=1; keydata={keydata}"):
        message = f"Autocrypt: {header}\r\nFrom: alice@example.test\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n".encode()
        assert actions.learn_autocrypt(bob, message) is None
    assert not PeerKey.objects.filter(account=bob).exists()


def test_a_request_signed_by_an_intermediate_ca_signs_with_its_chain(ca, alice, bob, files):
    """The chain installed with the certificate goes into signatures, so a reader who trusts
    only the root verifies."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from tests.secmail.conftest import NOW, CA

    intermediate = CA("Intermediate CA")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA")])
    intermediate.cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject).public_key(intermediate.key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=900))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(intermediate.key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    own = actions.request_smime_certificate(alice, passphrase=PASSPHRASE)
    csr = x509.load_pem_x509_csr(own.csr_pem.encode())
    cert, _ = intermediate.issue("alice@example.test", key=_PublicOnly(csr.public_key()))
    own = actions.install_certificate(own, smime.certificate_pem(cert), chain=[smime.certificate_pem(intermediate.cert)])
    actions.trust_ca(bob, ca.pem)
    signed = outgoing.protect(alice, MESSAGE, kind=SMIME, sign=True, encrypt=False, recipients=[],
                              unlocked=actions.unseal_private(own, PASSPHRASE))
    assert reader.read(bob, signed).badge == "verified"
    assert b"Verification successful" in openssl("cms", "-verify", "-in", files("s.eml", signed), "-CAfile", files("ca.pem", ca.pem)).stderr


def test_inline_pgp_is_read_only_decrypted_and_its_signature_covers_only_the_armour(alice, bob, gpg):
    bob_own = actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)
    carol = gpg.new_key("carol@faraway.test")
    actions.import_peer_key(bob, gpg.public(carol))
    gpg("--import", input=bob_own.public_data.encode())
    armored = gpg("--armor", "--trust-model", "always", "--encrypt", "-r", bob_own.fingerprint, input=b"Inline secret.\n").stdout
    message = b"From: carol@faraway.test\r\nTo: bob@example.test\r\nSubject: old style\r\n\r\n" + armored
    security = reader.read(bob, message, unlocked=[actions.unseal_private(bob_own, PASSPHRASE)])
    assert (security.encrypted, security.decryption) == (True, Decryption.DECRYPTED)
    assert b"Inline secret." in security.content

    clearsigned = gpg("--clearsign", input=b"I owe Bob 10 EUR.\n").stdout
    message = b"From: carol@faraway.test\r\nTo: bob@example.test\r\nSubject: IOU\r\n\r\nUnsigned preface.\r\n" + clearsigned
    security = reader.read(bob, message)
    [signature] = security.signatures
    assert (signature.status, signature.inline, security.badge) == (Status.VALID, True, "partial")
