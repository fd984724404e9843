"""ARC (RFC 8617): verifying the chain on mail we receive, sealing mail we forward.

Verifying: dkimpy validates the chain (every ARC-Seal, the newest ARC-Message-Signature).
A chain that validates tells who handled the message before us, and what that handler
saw (its ARC-Authentication-Results). When the newest sealer is one of the operator's
trusted forwarders (MAILSUITE_ARC_TRUSTED_SEALERS) and it recorded dmarc=pass, a DMARC
failure here is the forwarder's doing (a mailing list footer, a rewritten subject), and
the DMARC policy is not applied (RFC 7489 §7.2.1 "trusted_forwarder").

Sealing: mail this server forwards (an alias or redirect to another domain, a Sieve
redirect: the queued copies with an SRS sender) is sealed when it leaves, with the active
RSA DKIM key of the local domain that MAILSUITE_SRS_DOMAIN (or MAILSUITE_HOSTNAME) is or
is under. ARC needs rsa-sha256 (RFC 8617 §4.1.3 has no Ed25519). The seal carries our
Authentication-Results (the AAR) and the chain status we found (cv=).
"""
import functools
import logging
from dataclasses import dataclass

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from django.conf import settings

from antispam.dnsquery import DKIMKeyLookup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ARCResult:
    result: str  # pass, fail, none
    sealer: str = ""  # d= of the newest ARC-Seal
    trusted: bool = False  # the newest sealer is a trusted forwarder that saw DMARC pass
    reason: str = ""


def verify(raw, *, trusted_sealers=()):
    """The ARC chain's validation status (RFC 8617 §5.2) and whether its newest sealer is trusted."""
    if b"arc-seal:" not in raw.lower():
        return ARCResult("none")
    try:
        status, sets, reason = dkimpy.ARC(raw, minkey=1024).verify(dnsfunc=DKIMKeyLookup())
    except dkimpy.DKIMException as error:
        return ARCResult("fail", reason=str(error)[:200])
    if status == dkimpy.CV_None:
        return ARCResult("none")
    if status != dkimpy.CV_Pass or not sets:
        return ARCResult("fail", reason=str(reason)[:200])
    newest = max(sets, key=lambda item: item["instance"])
    sealer = newest["as-domain"].decode("ascii", "replace").lower()
    saw_pass = b"dmarc=pass" in newest.get("aar-value", b"").lower()
    trusted = sealer in {s.lower() for s in trusted_sealers} and saw_pass
    return ARCResult("pass", sealer, trusted)


# Sealing -----------------------------------------------------------------------------


def _sealing_domains():
    """The names a seal may be made for, most specific first: the SRS domain and its parents."""
    name = (settings.MAILSUITE_SRS_DOMAIN or settings.MAILSUITE_HOSTNAME).rstrip(".").lower()
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


@functools.lru_cache(maxsize=8)
def _pkcs1(pem):
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _sealing_key():
    from mta.models import DKIMKey

    candidates = _sealing_domains()
    rows = DKIMKey.objects.filter(
        domain__name__in=candidates, state=DKIMKey.State.ACTIVE, algorithm=DKIMKey.Algorithm.RSA_SHA256
    ).values_list("domain__name", "selector", "private_key")
    by_domain = {domain: (selector, pem) for domain, selector, pem in rows}
    for domain in candidates:
        if domain in by_domain:
            selector, pem = by_domain[domain]
            return domain, selector, _pkcs1(pem)
    return None


def seal(raw):
    """`raw` with a new ARC set on top, or unchanged when we cannot seal it (no key, no
    Authentication-Results of ours, an unparsable message). Never raises."""
    try:
        key = _sealing_key()
        if key is None:
            return raw
        domain, selector, private_pem = key
        fields = dkimpy.arc_sign(
            raw, selector.encode("ascii"), domain.encode("ascii"), private_pem,
            settings.MAILSUITE_HOSTNAME.encode("ascii"),
        )
    except Exception as error:  # a seal is a courtesy to the next hop; the mail goes anyway
        log.warning("arc: not sealing: %s", str(error)[:200])
        return raw
    return b"".join(fields) + raw
