"""Is an S/MIME certificate revoked? Checked when the information is known.

Implementation notes:
- Sources, in order: CRLs imported by the user or the operator (RevocationList rows), the
  CRL at the certificate's CRL distribution point (RFC 5280 §4.2.1.13), then its OCSP
  responder (RFC 6960, named in authorityInfoAccess, RFC 5280 §4.2.2.1). The first source
  that answers for the certificate decides.
- An answer counts only if its issuer signed it: a CRL signed by the certificate's issuer
  (RFC 5280 §6.3.3), an OCSP response signed by the issuer or by a responder certificate
  the issuer gave id-kp-OCSPSigning (RFC 6960 §4.2.2.2). "Good" also needs a fresh answer
  (nextUpdate not passed); "revoked" from a stale CRL still holds (revocation is final).
- Anything else — no distribution point, a network failure, a timeout, an oversize or
  unsigned answer — is UNKNOWN: never a failure of the verification, never REVOKED.
- Only certificates whose chain already verified are checked (smime.verify), so the URLs
  fetched come from certificates a trusted CA issued; only http and https are fetched.
- Bounded: FETCH_TIMEOUT per request, MAX_CRL_BYTES / MAX_OCSP_BYTES per answer, at most
  MAX_URLS per certificate, and FETCH_BUDGET seconds of network per Checker (one reading).
- Fetched CRLs and OCSP answers are cached (Django's cache) until their nextUpdate, at most
  CACHE_SECONDS; a failed fetch is remembered for FAILURE_SECONDS, so a dead server costs one
  timeout, not one per message read.
"""
import datetime
import enum
import hashlib
import time
import urllib.error
import urllib.request

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from django.core.cache import cache

FETCH_TIMEOUT = 3  # seconds per request
FETCH_BUDGET = 6  # seconds of network per reading (Checker)
MAX_CRL_BYTES = 10 * 1024 * 1024
MAX_OCSP_BYTES = 64 * 1024
MAX_URLS = 2
CACHE_SECONDS = 24 * 3600
FAILURE_SECONDS = 15 * 60
CLOCK_SKEW = datetime.timedelta(minutes=5)


class State(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class FetchError(Exception):
    pass


def load_crl(data) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER (ValueError if it is neither)."""
    data = data.encode() if isinstance(data, str) else bytes(data)
    if b"-----BEGIN X509 CRL-----" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def name_key(name: x509.Name) -> str:
    """How CRLs are filed: the SHA-256 of the issuer name's DER."""
    return hashlib.sha256(name.public_bytes()).hexdigest()


def _urls(values):
    return [v for v in values if v.lower().startswith(("http://", "https://"))][:MAX_URLS]


def crl_urls(cert):
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for point in points:
        # RFC 5280 §4.2.1.13: a point limited to some reasons, or whose CRL another
        # authority issues, is not the complete CRL of this issuer.
        if point.reasons is None and point.crl_issuer is None:
            found += [n.value for n in point.full_name or [] if isinstance(n, x509.UniformResourceIdentifier)]
    return _urls(found)


def ocsp_urls(cert):
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return _urls([a.access_location.value for a in access if a.access_method == AuthorityInformationAccessOID.OCSP
                  and isinstance(a.access_location, x509.UniformResourceIdentifier)])


def _reason(entry_or_response):
    try:
        reason = entry_or_response.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except (x509.ExtensionNotFound, AttributeError):
        reason = getattr(entry_or_response, "revocation_reason", None)
    return f" ({reason.name})" if reason is not None and reason is not x509.ReasonFlags.unspecified else ""


def crl_status(crl, cert, issuer, now):
    """(State, detail) of `cert` in `crl`, or None when the CRL does not answer for it."""
    if crl.issuer != cert.issuer or not crl.is_signature_valid(issuer.public_key()):
        return None
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is not None and entry.revocation_date_utc <= now + CLOCK_SKEW:
        return State.REVOKED, f"revoked on {entry.revocation_date_utc:%Y-%m-%d}{_reason(entry)}"
    if crl.next_update_utc is not None and crl.next_update_utc < now - CLOCK_SKEW:
        return None  # stale: says nothing about today
    if crl.last_update_utc > now + CLOCK_SKEW:
        return None
    return State.GOOD, ""


def _check_signature(public_key, signature, data, hash_algorithm, pss=None):
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, pss or padding.PKCS1v15(), hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        public_key.verify(signature, data)
    else:
        raise InvalidSignature("unsupported key type")


def _key_hash(cert):
    """SHA-1 of the subjectPublicKey BIT STRING (RFC 6960 §4.1.1 issuerKeyHash, ResponderID byKey)."""
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _ocsp_responder(response, issuer):
    """The certificate that signed an OCSP response: the issuer, or one the issuer delegated."""
    candidates = [issuer]
    for delegated in response.certificates:
        try:
            delegated.verify_directly_issued_by(issuer)
            usage = delegated.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            candidates.append(delegated)
    for candidate in candidates:
        if response.responder_name is not None and response.responder_name == candidate.subject:
            return candidate
        if response.responder_key_hash is not None and response.responder_key_hash == _key_hash(candidate):
            return candidate
    return None


def ocsp_request(cert, issuer) -> bytes:
    # SHA-1 CertID: what every responder understands (RFC 5019 §2.1.1).
    return ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build().public_bytes(serialization.Encoding.DER)


def ocsp_status(der, cert, issuer, now):
    """(State, detail) from an OCSP response about `cert`, or None when it does not answer for it."""
    try:
        response = ocsp.load_der_ocsp_response(der)
        if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return None
        if response.serial_number != cert.serial_number or response.issuer_key_hash != _key_hash(issuer):
            return None
        responder = _ocsp_responder(response, issuer)
        if responder is None:
            return None
        params = getattr(response, "signature_algorithm_parameters", None)
        _check_signature(responder.public_key(), response.signature, response.tbs_response_bytes,
                         response.signature_hash_algorithm, params if isinstance(params, padding.PSS) else None)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return None
    if response.this_update_utc > now + CLOCK_SKEW:
        return None
    if response.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        return State.REVOKED, f"revoked on {response.revocation_time_utc:%Y-%m-%d}{_reason(response)}"
    if response.certificate_status is ocsp.OCSPCertStatus.GOOD:
        if response.next_update_utc is not None and response.next_update_utc < now - CLOCK_SKEW:
            return None
        return State.GOOD, ""
    return None  # the responder does not know the certificate


def _cache_seconds(next_update, now):
    if next_update is None:
        return CACHE_SECONDS
    return max(60, min(CACHE_SECONDS, int((next_update - now).total_seconds())))


class Checker:
    """Revocation checks for one reading of a message, for one account (None: imported
    CRLs of the operator only). `fetch=False` keeps to imported CRLs and the cache."""

    def __init__(self, account=None, *, fetch=True):
        self.account = account
        self.fetch = fetch
        self._imported = None
        self._spent = 0.0

    def imported(self):
        if self._imported is None:
            from django.db.models import Q

            from secmail.models import RevocationList

            rows = RevocationList.objects.filter(Q(account=self.account) | Q(account__isnull=True)) if self.account else \
                RevocationList.objects.filter(account__isnull=True)
            self._imported = {}
            for row in rows:
                self._imported.setdefault(row.issuer_key, []).append(row)
        return self._imported

    def status(self, cert, issuer, now):
        """(State, detail) of a certificate whose issuer is `issuer`."""
        for row in self.imported().get(name_key(cert.issuer), []):
            try:
                found = crl_status(load_crl(row.der), cert, issuer, now)
            except ValueError:
                found = None
            if found:
                return found
        for url in crl_urls(cert):
            der = self._fetch(url, limit=MAX_CRL_BYTES, seconds=lambda data: self._crl_seconds(data, now))
            if der is None:
                continue
            try:
                found = crl_status(load_crl(der), cert, issuer, now)
            except ValueError:
                found = None
            if found:
                return found
        for url in ocsp_urls(cert):
            request = ocsp_request(cert, issuer)
            der = self._fetch(url, limit=MAX_OCSP_BYTES, body=request, seconds=lambda data: self._ocsp_seconds(data, now))
            if der is not None and (found := ocsp_status(der, cert, issuer, now)):
                return found
        return State.UNKNOWN, "revocation could not be checked"

    def chain_status(self, chain, now):
        """(State, detail) of a verified chain (leaf first, trust anchor last): revoked if any
        certificate below the anchor is, good if all are known good, else unknown."""
        states = [self.status(cert, chain[i + 1], now) for i, cert in enumerate(chain[:-1])]
        for state, detail in states:
            if state is State.REVOKED:
                return state, detail
        if states and all(state is State.GOOD for state, _ in states):
            return State.GOOD, ""
        if not states:
            return State.GOOD, ""  # the signer's certificate is itself a trust anchor
        return State.UNKNOWN, "revocation could not be checked"

    @staticmethod
    def _crl_seconds(data, now):
        try:
            return _cache_seconds(load_crl(data).next_update_utc, now)
        except ValueError:
            return FAILURE_SECONDS

    @staticmethod
    def _ocsp_seconds(data, now):
        try:
            response = ocsp.load_der_ocsp_response(data)
            if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                return FAILURE_SECONDS
            return _cache_seconds(response.next_update_utc, now)
        except ValueError:
            return FAILURE_SECONDS

    def _fetch(self, url, *, limit, seconds, body=None):
        """The bytes at `url` (POSTing `body` if given), from the cache when fresh; None on any failure."""
        key = "secmail:revocation:" + hashlib.sha256(url.encode() + b"\0" + (body or b"")).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            return cached or None  # b"": a remembered failure
        if not self.fetch or self._spent >= FETCH_BUDGET:
            return None
        started = time.monotonic()
        try:
            data = fetch(url, limit=limit, body=body, timeout=min(FETCH_TIMEOUT, FETCH_BUDGET - self._spent))
        except FetchError:
            cache.set(key, b"", FAILURE_SECONDS)
            return None
        finally:
            self._spent += time.monotonic() - started
        cache.set(key, data, seconds(data))
        return data


def fetch(url, *, limit, body=None, timeout=FETCH_TIMEOUT) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError("only http and https are fetched")
    headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status != 200:
                raise FetchError(f"HTTP {response.status}")
            data = response.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(str(exc)) from None
    if not data or len(data) > limit:
        raise FetchError("empty or too large")
    return data
