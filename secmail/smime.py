"""S/MIME version 4 (RFC 8551) on raw MIME entities: sign, encrypt, verify, decrypt.

Implementation notes:
- cryptography builds the CMS structures (PKCS7SignatureBuilder, PKCS7EnvelopeBuilder) and
  decrypts them; it does not verify CMS signatures, so verify() reads SignedData with
  asn1crypto and checks the signature with cryptography's primitives (RFC 5652 §5.4: with
  signed attributes the signature is over their DER SET OF, and the messageDigest attribute
  must equal the content's digest), then the chain with cryptography's X.509 path builder.
- Signing: multipart/signed with a detached signature (RFC 8551 §3.5.3), SHA-256
  (micalg=sha-256, RFC 8551 §3.5.3.2), the signer's chain included.
- Encryption: enveloped-data (RFC 8551 §3.3) with AES-256-CBC, the strongest content
  cipher cryptography's builder offers; recipients need RSA certificates (its limit). CBC is
  malleable: the reader never decrypts a part nested in an unencrypted message and never
  loads remote content from decrypted HTML (secmail.reader), the EFAIL defences.
- Certificates are checked at the time of verification, not at the claimed signing time:
  a signing time is the signer's own word.
- SHA-1 and MD5 signatures are refused (RFC 8551 §2.1: SHA-1 only for legacy reading; we
  choose not to vouch for it).
"""
import base64
import datetime
import functools
import hashlib

from asn1crypto import cms as acms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.utils.translation import gettext

from secmail import mimeraw
from secmail.errors import BadPassphrase, CryptoFailure, InvalidInput
from secmail.results import SignatureResult, Status

# The system trust store (Debian's ca-certificates); a seam for tests.
SYSTEM_TRUST_FILE = "/etc/ssl/certs/ca-certificates.crt"
MAX_CHAIN_DEPTH = 8

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512, "sha224": hashes.SHA224}


# ---- certificates and keys -------------------------------------------------------------

def load_certificate(data) -> x509.Certificate:
    data = data.encode() if isinstance(data, str) else bytes(data)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise InvalidInput("not an X.509 certificate") from None


def certificate_pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(cert) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def certificate_addresses(cert):
    """Lower-case mail addresses the certificate is for: subjectAltName rfc822Name (RFC 8550
    §3), else the legacy emailAddress attribute of the subject."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = [a.lower() for a in san.get_values_for_type(x509.RFC822Name)]
    except x509.ExtensionNotFound:
        found = []
    if not found:
        found = [a.value.lower() for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    return sorted(set(found))


def certificate_label(cert) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else cert.subject.rfc4514_string()


def utc_not_after(cert):
    return cert.not_valid_after_utc


def private_key_pem(key) -> bytes:
    """Unencrypted PKCS#8: only ever held in memory before sealing (secmail.sealing)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_private_key(pem: bytes):
    return serialization.load_pem_private_key(pem, password=None)


def key_matches(cert, key) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def load_pkcs12(data: bytes, password: str):
    """(private key, certificate, [chain]) from a PKCS#12 file (RFC 7292)."""
    try:
        loaded = pkcs12.load_pkcs12(bytes(data), password.encode("utf-8") if password else None)
    except ValueError as exc:
        if "password" in str(exc).lower() or "mac" in str(exc).lower():
            raise BadPassphrase(gettext("wrong password for the PKCS#12 file")) from None
        raise InvalidInput("not a PKCS#12 file") from None
    if loaded.key is None or loaded.cert is None:
        raise InvalidInput("the PKCS#12 file holds no certificate with its private key")
    key, cert = loaded.key, loaded.cert.certificate
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InvalidInput("only RSA and EC keys are supported for S/MIME")
    return key, cert, [c.certificate for c in loaded.additional_certs]


def generate_key_and_csr(address: str, name: str = ""):
    """A new RSA-3072 key and a PKCS#10 request for the address (RFC 8550 §4.4: the address
    goes into subjectAltName). RSA because encryption to it must work with every client."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, name or address), x509.NameAttribute(NameOID.EMAIL_ADDRESS, address)]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


# ---- producing -------------------------------------------------------------------------

def sign_entity(entity: bytes, cert, key, chain=()) -> bytes:
    """multipart/signed over the canonical entity (RFC 8551 §3.5.3)."""
    entity = mimeraw.canonical(entity)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(entity).add_signer(cert, key, hashes.SHA256())
    for extra in chain:
        builder = builder.add_certificate(extra)
    signature = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    boundary = mimeraw.new_boundary().encode()
    return b"".join([
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;\r\n',
        b' boundary="' + boundary + b'"\r\n\r\n',
        b"This is a signed message in MIME format (S/MIME).\r\n",
        b"--" + boundary + b"\r\n", entity, b"\r\n--" + boundary + b"\r\n",
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n",
        mimeraw.base64_lines(signature),
        b"--" + boundary + b"--\r\n",
    ])


def encrypt_entity(entity: bytes, recipients) -> bytes:
    """application/pkcs7-mime enveloped-data for every certificate in `recipients` (RFC 8551 §3.3)."""
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(mimeraw.canonical(entity))
    builder = builder.set_content_encryption_algorithm(pkcs7.algorithms.AES256)
    for cert in recipients:
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise InvalidInput(f"cannot encrypt to {certificate_label(cert)}: only RSA certificates are supported")
        builder = builder.add_recipient(cert)
    der = builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    return b"".join([
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Disposition: attachment; filename=smime.p7m\r\n\r\n",
        mimeraw.base64_lines(der),
    ])


# ---- consuming -------------------------------------------------------------------------

def decode_body(head: bytes, body: bytes) -> bytes:
    """A leaf body decoded from its Content-Transfer-Encoding (base64 or identity)."""
    cte = str(mimeraw.parse_headers(head).get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except ValueError:
            raise CryptoFailure("damaged base64") from None
    return body


def enveloped_recipients(der: bytes):
    """(issuer DER, serial) of each key-transport recipient of an EnvelopedData."""
    try:
        info = acms.ContentInfo.load(der)
        if info["content_type"].native != "enveloped_data":
            raise CryptoFailure("not enveloped data")
        found = []
        for recipient in info["content"]["recipient_infos"]:
            if recipient.name != "ktri":
                continue
            rid = recipient.chosen["rid"]
            if rid.name == "issuer_and_serial_number":
                found.append((rid.chosen["issuer"].dump(), rid.chosen["serial_number"].native))
        return found
    except (ValueError, TypeError, KeyError):
        raise CryptoFailure("damaged encrypted data") from None


def is_recipient(der: bytes, cert) -> bool:
    issuer = cert.issuer.public_bytes()
    return any(i == issuer and s == cert.serial_number for i, s in enveloped_recipients(der))


def decrypt(der: bytes, cert, key) -> bytes:
    """The entity inside an EnvelopedData addressed to `cert`."""
    try:
        return pkcs7.pkcs7_decrypt_der(der, cert, key, [])  # no options: the bytes as they are
    except (ValueError, TypeError):
        raise CryptoFailure("the encrypted data does not open with this key") from None


def signed_data_type(der: bytes) -> str:
    try:
        return acms.ContentInfo.load(der)["content_type"].native
    except (ValueError, TypeError):
        return ""


@functools.lru_cache(maxsize=4)
def _system_roots(path):
    try:
        with open(path, "rb") as f:
            return tuple(x509.load_pem_x509_certificates(f.read()))
    except (OSError, ValueError):
        return ()


def system_roots():
    return _system_roots(SYSTEM_TRUST_FILE)


def _eku_allows_mail(policy, cert, extension):
    """RFC 8550 §4.4.4: if extendedKeyUsage is present it must allow emailProtection."""
    if extension is None:
        return
    usages = set(extension)
    if ExtendedKeyUsageOID.EMAIL_PROTECTION not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        raise ValueError("the certificate is not for e-mail protection")


def _verifier(trusted, now):
    ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _eku_allows_mail
    )
    # A CA may restrict itself to e-mail (emailProtection only): not a web-server rule to enforce.
    ca = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None
    )
    return (
        verification.PolicyBuilder()
        .store(verification.Store(list(trusted)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca, ee_policy=ee)
        .build_client_verifier()
    )


def _find_signer(signer_info, certs):
    sid = signer_info["sid"]
    if sid.name == "issuer_and_serial_number":
        issuer, serial = sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native
        for cert in certs:
            if cert.issuer.public_bytes() == issuer and cert.serial_number == serial:
                return cert
    else:
        ski = sid.chosen.native
        for cert in certs:
            try:
                if cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == ski:
                    return cert
            except x509.ExtensionNotFound:
                continue
    return None


class UnsupportedAlgorithm(Exception):
    """A signature made with an algorithm or key type we do not check (reported, not an error)."""


def _check_signature(public_key, signature, data, signature_algorithm, hash_cls):
    name = signature_algorithm["algorithm"].native
    if isinstance(public_key, rsa.RSAPublicKey):
        if name == "rsassa_pss":
            params = signature_algorithm["parameters"]
            pss_hash = _HASHES.get(params["hash_algorithm"]["algorithm"].native)
            if pss_hash is None:
                raise UnsupportedAlgorithm(name)
            public_key.verify(signature, data, padding.PSS(padding.MGF1(pss_hash()), params["salt_length"].native), pss_hash())
        else:
            public_key.verify(signature, data, padding.PKCS1v15(), hash_cls())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_cls()))
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, data)
    else:
        raise UnsupportedAlgorithm(type(public_key).__name__)


def verify(content: bytes | None, signature_der: bytes, *, from_address: str, trusted_cas=(), now=None, part="",
           revocation=None):
    """Check a CMS SignedData over `content` (detached) or over its own eContent (content=None).

    Returns (SignatureResult, the signed content). The status order is fixed: a tampered
    signature says nothing about who signed; then validity in time, chain, revocation (when
    `revocation`, a secmail.revocation.Checker, is given) and address.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    result = SignatureResult(scheme="smime", status=Status.MALFORMED, part=part)
    try:
        info = acms.ContentInfo.load(bytes(signature_der))
        if info["content_type"].native != "signed_data":
            return result, content
        signed = info["content"]
        certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"] or [] if c.name == "certificate"]
        if content is None:
            content = signed["encap_content_info"]["content"].native or b""
        signer_infos = list(signed["signer_infos"])
    except (ValueError, TypeError, KeyError) as exc:
        result.detail = f"unreadable SignedData ({type(exc).__name__})"
        return result, content
    if len(signer_infos) != 1:
        result.detail = f"{len(signer_infos)} signers (exactly one is supported)"
        result.status = Status.UNSUPPORTED
        return result, content
    signer_info = signer_infos[0]
    cert = _find_signer(signer_info, certs)
    if cert is None:
        result.detail = "the signer's certificate is not in the message"
        return result, content
    result.signer_addresses = certificate_addresses(cert)
    result.signer_name = certificate_label(cert)
    result.fingerprint = fingerprint(cert)
    result.certificate_pem = certificate_pem(cert)
    result.chain_pem = [certificate_pem(c) for c in certs if c != cert]

    digest_name = signer_info["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        result.status, result.detail = Status.UNSUPPORTED, f"digest {digest_name} is not accepted"
        return result, content
    digest = hashlib.new(hash_cls.name, content).digest()
    signed_attrs = signer_info["signed_attrs"]
    try:
        if signed_attrs:
            attrs = {a["type"].native: a["values"] for a in signed_attrs}
            if "message_digest" not in attrs or "content_type" not in attrs:
                result.detail = "signed attributes without messageDigest/contentType"
                return result, content
            if attrs["message_digest"][0].native != digest:
                result.status, result.detail = Status.TAMPERED, "the content's digest differs from the signed one"
                return result, content
            if "signing_time" in attrs:
                result.signed_at = attrs["signing_time"][0].native
            data = b"\x31" + signed_attrs.dump()[1:]  # RFC 5652 §5.4: as an explicit SET OF
        else:
            data = content
        _check_signature(cert.public_key(), signer_info["signature"].native, data, signer_info["signature_algorithm"], hash_cls)
    except InvalidSignature:
        result.status, result.detail = Status.TAMPERED, "the signature does not match"
        return result, content
    except UnsupportedAlgorithm as exc:
        result.status, result.detail = Status.UNSUPPORTED, f"signature algorithm {exc}"
        return result, content
    except (ValueError, TypeError, KeyError) as exc:
        result.detail = f"unreadable signature ({type(exc).__name__})"
        return result, content

    if now < cert.not_valid_before_utc:
        result.status = Status.NOT_YET_VALID
        result.detail = f"valid from {cert.not_valid_before_utc:%Y-%m-%d}"
        return result, content
    if now > cert.not_valid_after_utc:
        result.status = Status.EXPIRED
        result.detail = f"expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        return result, content
    trusted = list(system_roots()) + list(trusted_cas)
    try:
        if not trusted:
            raise verification.VerificationError("no trusted CA is configured")
        verified = _verifier(trusted, now).verify(cert, [c for c in certs if c != cert])
    except verification.VerificationError as exc:
        result.status, result.detail = Status.UNTRUSTED, str(exc).splitlines()[0][:200]
        return result, content
    if revocation is not None:
        state, detail = revocation.chain_status(list(verified.chain), now)
        result.revocation = state.value
        if state.value == "revoked":
            result.status, result.detail = Status.REVOKED, detail
            return result, content
    if from_address.lower() not in result.signer_addresses:
        result.status = Status.WRONG_ADDRESS
        result.detail = f"the certificate is for {', '.join(result.signer_addresses) or 'no address'}, the sender is {from_address}"
        return result, content
    result.status = Status.VALID
    return result, content
