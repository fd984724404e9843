"""OpenPGP and PGP/MIME (RFC 3156) round trips with the gpg command line, both ways, and the
verification states (tampered, unknown key, expired key)."""
import pytest

from secmail import mimeraw, openpgp, pgpmime
from secmail.errors import BadPassphrase
from secmail.results import Status

ENTITY = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello Bob,=0D\r\nsee you at 10.\r\n"


def parts(entity):
    head, body = mimeraw.split_header_body(entity)
    ctype, params = mimeraw.content_type(head)
    return ctype, params, mimeraw.split_multipart(body, params["boundary"])


def body_of(part):
    return mimeraw.split_header_body(part)[1]


@pytest.fixture(scope="module")
def alice_key():
    return openpgp.generate("Alice", "alice@example.test")


def test_a_generated_key_signs_and_encrypts(alice_key):
    info, public, secret = alice_key
    assert (info.addresses, info.can_sign, info.can_encrypt, info.revoked) == (["alice@example.test"], True, True, False)
    assert public.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE KEY" in secret.armored and secret.passphrase == ""


def test_it_signs_what_gpg_verifies(alice_key, gpg, files):
    info, public, secret = alice_key
    ctype, params, (content, signature) = parts(pgpmime.sign_entity(ENTITY, secret))
    assert (ctype, params["protocol"], params["micalg"]) == ("multipart/signed", "application/pgp-signature", "pgp-sha256")
    assert content == ENTITY
    gpg("--import", input=public.encode())
    done = gpg("--status-fd", "1", "--verify", files("s.asc", body_of(signature)), files("c.txt", content))
    assert f"VALIDSIG {info.fingerprint}".encode() in done.stdout


def test_it_verifies_what_gpg_signs(gpg, files):
    fpr = gpg.new_key("carol@example.test", name="Carol")
    signature = gpg("--armor", "--detach-sign", "--digest-algo", "SHA256", input=ENTITY).stdout
    outcome = openpgp.verify_detached(ENTITY, signature, [gpg.public(fpr)])
    assert (outcome.status, outcome.fingerprint) == (Status.VALID, fpr)
    assert openpgp.verify_detached(ENTITY.replace(b"10", b"11"), signature, [gpg.public(fpr)]).status is Status.TAMPERED
    assert openpgp.verify_detached(ENTITY, signature, []).status is Status.UNKNOWN_KEY


def test_an_expired_key_is_reported(gpg):
    fpr = gpg.new_key("old@example.test", when="20200101T000000", expire="1d")
    signature = gpg("--faked-system-time", "20200101T010000", "--armor", "--detach-sign", input=ENTITY).stdout
    assert openpgp.verify_detached(ENTITY, signature, [gpg.public(fpr)]).status is Status.EXPIRED


def test_it_encrypts_and_signs_what_gpg_decrypts(alice_key, gpg, files):
    info, public, secret = alice_key
    bob = gpg.new_key("bob@example.test")
    gpg("--import", input=public.encode())
    ctype, params, (control, payload) = parts(pgpmime.encrypt_entity(ENTITY, [gpg.public(bob)], sign_with=secret))
    assert (ctype, params["protocol"], body_of(control)) == ("multipart/encrypted", "application/pgp-encrypted", b"Version: 1\r\n")
    assert b"see you" not in payload
    done = gpg("--status-fd", "2", "--decrypt", files("m.asc", body_of(payload)))
    assert done.stdout == ENTITY
    assert f"VALIDSIG {info.fingerprint}".encode() in done.stderr


def test_it_decrypts_what_gpg_encrypts_and_checks_the_signature_inside(alice_key, gpg):
    info, public, secret = alice_key
    carol = gpg.new_key("carol@example.test")
    gpg("--import", input=public.encode())
    message = gpg("--armor", "--trust-model", "always", "--sign", "--encrypt", "-r", info.fingerprint, input=ENTITY).stdout
    assert info.fingerprint[-16:] in openpgp.encrypted_to(message) or openpgp.encrypted_to(message)
    decrypted = openpgp.decrypt(message, secret, [gpg.public(carol)])
    assert decrypted.data == ENTITY
    assert (decrypted.signature.status, decrypted.signature.fingerprint) == (Status.VALID, carol)
    # without the signer's key the content still opens, the signature is unknown
    assert openpgp.decrypt(message, secret).signature.status is Status.UNKNOWN_KEY


def test_an_unsigned_encrypted_message_has_no_signature(alice_key, gpg):
    info, public, secret = alice_key
    gpg("--import", input=public.encode())
    message = gpg("--armor", "--trust-model", "always", "--encrypt", "-r", info.fingerprint, input=b"plain").stdout
    decrypted = openpgp.decrypt(message, secret)
    assert (decrypted.data, decrypted.signature) == (b"plain", None)


def test_inline_clearsigned_text_verifies_and_names_the_signed_text(gpg):
    fpr = gpg.new_key("carol@example.test")
    text = gpg("--clearsign", input=b"Pay 10 EUR to Carol.\n").stdout
    outcome, signed = openpgp.verify_inline(text, [gpg.public(fpr)])
    assert (outcome.status, signed) == (Status.VALID, b"Pay 10 EUR to Carol.\n")
    outcome, _ = openpgp.verify_inline(text.replace(b"10 EUR", b"99 EUR"), [gpg.public(fpr)])
    assert outcome.status is Status.TAMPERED


def test_a_protected_secret_key_imports_only_with_its_passphrase(gpg):
    import subprocess

    subprocess.run(["gpg", "--homedir", gpg.home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "s3cret pass",
                    "--quick-gen-key", "<dave@example.test>", "ed25519", "sign,encr" if False else "sign", "1y"], check=True, capture_output=True)
    fpr = gpg.fingerprint("dave@example.test")
    armored = subprocess.run(["gpg", "--homedir", gpg.home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "s3cret pass",
                              "--armor", "--export-secret-keys", fpr], check=True, capture_output=True).stdout.decode()
    with pytest.raises(BadPassphrase):
        openpgp.import_secret(armored, "wrong")
    info, public, secret = openpgp.import_secret(armored, "s3cret pass")
    assert (info.fingerprint, secret.passphrase) == (fpr, "s3cret pass")
    signature, _ = openpgp.sign_detached(b"x", secret)
    assert openpgp.verify_detached(b"x", signature.encode(), [public]).status is Status.VALID


def test_the_minimal_key_keeps_only_the_asked_address(gpg):
    fpr = gpg.new_key("erin@example.test")
    gpg("--quick-add-uid", fpr, "Erin <erin@other.test>")
    minimal = openpgp.minimal_key(gpg.public(fpr), "erin@example.test")
    (info,) = openpgp.inspect(minimal)
    assert (info.fingerprint, info.addresses) == (fpr, ["erin@example.test"])
