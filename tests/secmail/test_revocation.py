"""S/MIME revocation, when known: a CRL at the certificate's distribution point (served on
loopback), its OCSP responder, CRLs imported by the user or the operator; an unreachable
or lying server leaves the signature valid with "revocation unknown", never "revoked"."""
import datetime
import io
import socket
import time
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from django.core.management import call_command
from django.urls import reverse

from mailstore import actions as store
from secmail import actions, mimeraw, revocation, smime
from secmail.errors import Conflict, InvalidInput
from secmail.results import Status
from tests.conftest import PASSWORD
from tests.secmail.conftest import CA, NOW
from tests.secmail.test_smime import signed_message


def crl_of(ca, revoked=(), *, last_update=None, next_update=None, signer=None):
    """A CRL of `ca` listing the serials in `revoked` (key compromise), signed by `signer` (default: the CA)."""
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
        .last_update(last_update or NOW - datetime.timedelta(hours=1))
        .next_update(next_update or NOW + datetime.timedelta(days=7))
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - datetime.timedelta(minutes=30))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build()
        )
    return builder.sign((signer or ca).key, hashes.SHA256())


def der(crl):
    return crl.public_bytes(serialization.Encoding.DER)


def distribution_point(url):
    return x509.CRLDistributionPoints([x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)])


def ocsp_access(url):
    return x509.AuthorityInformationAccess([x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                                                   x509.UniformResourceIdentifier(url))])


def check(message, ca, account=None):
    """The SignatureResult of a multipart/signed message from alice, with revocation checked."""
    _, entity = mimeraw.split_message(message)
    head, body = mimeraw.split_header_body(entity)
    content, signature = mimeraw.split_multipart(body, mimeraw.content_type(head)[1]["boundary"])
    sig_head, sig_body = mimeraw.split_header_body(signature)
    return smime.verify(content, smime.decode_body(sig_head, sig_body), from_address="alice@example.test",
                        trusted_cas=[ca.cert], revocation=revocation.Checker(account))[0]


def test_a_certificate_on_its_distribution_points_crl_is_revoked(ca, web, db):
    revoked, revoked_key = ca.issue("alice@example.test", extensions=[distribution_point(web.url + "/root.crl")])
    good, good_key = ca.issue("alice@example.test", extensions=[distribution_point(web.url + "/root.crl")])
    web.routes["/root.crl"] = der(crl_of(ca, [revoked.serial_number]))

    result = check(signed_message(revoked, revoked_key), ca)
    assert (result.status, result.revocation) == (Status.REVOKED, "revoked")
    assert result.detail == f"revoked on {(NOW - datetime.timedelta(minutes=30)):%Y-%m-%d} (key_compromise)"
    assert result.description == "Signed with a revoked certificate or key"

    result = check(signed_message(good, good_key), ca)
    assert (result.status, result.revocation) == (Status.VALID, "good")
    assert web.requests == [("GET", "/root.crl")]  # fetched once, then from the cache


def test_an_unreachable_or_silent_server_leaves_revocation_unknown(ca, web, db, monkeypatch):
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.3", 0))
        dead_url = f"http://127.0.0.3:{closed.getsockname()[1]}/root.crl"
    cert, key = ca.issue("alice@example.test", extensions=[distribution_point(dead_url)])
    result = check(signed_message(cert, key), ca)
    assert (result.status, result.revocation, result.valid) == (Status.VALID, "unknown", True)

    monkeypatch.setattr(revocation, "FETCH_TIMEOUT", 0.5)
    web.stall = 3
    web.routes["/root.crl"] = der(crl_of(ca, []))
    silent, silent_key = ca.issue("alice@example.test", extensions=[distribution_point(web.url + "/root.crl")])
    started = time.monotonic()
    result = check(signed_message(silent, silent_key), ca)
    assert (result.status, result.revocation) == (Status.VALID, "unknown")
    assert time.monotonic() - started < 2.5
    # the failure is remembered: the next reading does not wait again
    started = time.monotonic()
    assert check(signed_message(silent, silent_key), ca).revocation == "unknown"
    assert time.monotonic() - started < 0.4 and len(web.requests) == 1


def test_a_crl_not_signed_by_the_issuer_or_not_a_crl_says_nothing(ca, web, db):
    # a key of its own (CA keys come from a small reused pool): the CA's name, not its key
    impostor = SimpleNamespace(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    cert, key = ca.issue("alice@example.test", extensions=[distribution_point(web.url + "/root.crl")])
    forged = crl_of(ca, [cert.serial_number], signer=impostor)
    web.routes["/root.crl"] = der(forged)
    result = check(signed_message(cert, key), ca)
    assert (result.status, result.revocation) == (Status.VALID, "unknown")

    other, other_key = ca.issue("alice@example.test", extensions=[distribution_point(web.url + "/garbage.crl")])
    web.routes["/garbage.crl"] = b"<html>not found</html>"
    assert check(signed_message(other, other_key), ca).revocation == "unknown"


def test_an_ocsp_responder_answers_when_there_is_no_crl(ca, web, db):
    revoked, revoked_key = ca.issue("alice@example.test", extensions=[ocsp_access(web.url + "/ocsp")])
    good, good_key = ca.issue("alice@example.test", extensions=[ocsp_access(web.url + "/ocsp")])

    def responder(body):
        request = ocsp.load_der_ocsp_request(body)
        cert = revoked if request.serial_number == revoked.serial_number else good
        is_revoked = cert is revoked
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=ca.cert, algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.REVOKED if is_revoked else ocsp.OCSPCertStatus.GOOD,
            this_update=NOW - datetime.timedelta(minutes=5), next_update=NOW + datetime.timedelta(hours=1),
            revocation_time=NOW - datetime.timedelta(days=1) if is_revoked else None,
            revocation_reason=x509.ReasonFlags.superseded if is_revoked else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert)
        return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    web.routes["/ocsp"] = responder
    result = check(signed_message(revoked, revoked_key), ca)
    assert (result.status, result.revocation) == (Status.REVOKED, "revoked")
    assert result.detail.endswith("(superseded)")
    assert check(signed_message(good, good_key), ca).revocation == "good"
    assert [method for method, _ in web.requests] == ["POST", "POST"]

    # an answer signed by someone else is no answer
    impostor = CA("Impostor CA")
    forged, forged_key = ca.issue("alice@example.test", extensions=[ocsp_access(web.url + "/forged")])
    web.routes["/forged"] = lambda body: ocsp.OCSPResponseBuilder().add_response(
        cert=forged, issuer=ca.cert, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.REVOKED,
        this_update=NOW, next_update=None, revocation_time=NOW, revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.NAME, impostor.cert).sign(impostor.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    assert check(signed_message(forged, forged_key), ca).revocation == "unknown"


def test_imported_crls_of_the_user_and_of_the_operator(ca, alice, bob, tmp_path):
    cert, key = ca.issue("alice@example.test")  # no distribution point: only an imported CRL can tell
    message = signed_message(cert, key)
    assert check(message, ca, bob).revocation == "unknown"

    crl = crl_of(ca, [cert.serial_number])
    imported = actions.import_crl(bob, crl.public_bytes(serialization.Encoding.PEM))
    assert (imported.entries, imported.issuer) == (1, "CN=Test Root CA")
    assert check(message, ca, bob).status is Status.REVOKED
    assert check(message, ca, alice).revocation == "unknown"  # bob's CRL is his own

    with pytest.raises(Conflict):
        actions.import_crl(bob, der(crl_of(ca, [], last_update=NOW - datetime.timedelta(days=2))))
    with pytest.raises(InvalidInput):
        actions.import_crl(bob, b"-----BEGIN X509 CRL-----\nnonsense\n-----END X509 CRL-----\n")

    path = tmp_path / "root.crl"
    path.write_bytes(der(crl))
    out = io.StringIO()
    call_command("crl", "import", str(path), stdout=out)
    assert "CN=Test Root CA, 1 revoked" in out.getvalue()
    assert check(message, ca, alice).status is Status.REVOKED
    listed = io.StringIO()
    call_command("crl", "list", stdout=listed)
    crl_id = listed.getvalue().split("\t")[0]
    call_command("crl", "remove", crl_id)
    assert check(message, ca, alice).revocation == "unknown"
    from django.core.management.base import CommandError

    (tmp_path / "bad.crl").write_bytes(b"not a crl")
    with pytest.raises(CommandError, match="not a certificate revocation list"):
        call_command("crl", "import", str(tmp_path / "bad.crl"))


@pytest.mark.django_db(transaction=True)
def test_the_reading_page_shows_a_revoked_certificate_distinctly(client, ca, alice, bob, web):
    actions.trust_ca(bob, ca.pem)
    revoked, revoked_key = ca.issue("alice@example.test", extensions=[distribution_point(web.url + "/root.crl")])
    web.routes["/root.crl"] = der(crl_of(ca, [revoked.serial_number]))
    with socket.socket() as closed:
        closed.bind(("127.0.0.3", 0))
        dead_url = f"http://127.0.0.3:{closed.getsockname()[1]}/root.crl"
    unknown, unknown_key = ca.issue("alice@example.test", extensions=[distribution_point(dead_url)])
    first = store.append(bob, "INBOX", signed_message(revoked, revoked_key))
    second = store.append(bob, "INBOX", signed_message(unknown, unknown_key))
    client.post(reverse("webmail:login"), {"address": "bob@example.test", "password": PASSWORD})

    page = client.get(reverse("webmail:message", args=[first.folder_id, first.uid])).content.decode()
    assert 'data-badge="revoked"' in page and "Signed with a revoked certificate or key" in page
    assert 'data-badge="verified"' not in page
    page = client.get(reverse("webmail:message", args=[second.folder_id, second.uid])).content.decode()
    assert 'data-badge="verified"' in page and 'data-revocation="unknown"' in page

    # the user adds a CRL on the keys page
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("root.crl", der(crl_of(ca, [unknown.serial_number])))
    assert client.post(reverse("secmail:keys"), {"form": "crl", "crl-file": upload}).status_code == 302
    keys_page = client.get(reverse("secmail:keys")).content.decode()
    assert "CN=Test Root CA · 1 revoked certificate" in keys_page
    page = client.get(reverse("webmail:message", args=[second.folder_id, second.uid])).content.decode()
    assert 'data-badge="revoked"' in page
