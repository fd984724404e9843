"""DKIM verification (RFC 6376, RFC 8463 Ed25519) of every signature of a message, with dkimpy.

Each DKIM-Signature field gets its own result (RFC 8601 §2.7.1):
pass; fail (the signature or body hash does not verify, or the key is revoked or unusable);
temperror (the key's DNS lookup failed: the same message may verify later);
permerror (no key record at all, or a signature field dkimpy cannot parse).
Signatures are verified top first, at most MAX_SIGNATURES of them (a message with a hundred
signatures must not cost a hundred lookups).
"""
import logging
from dataclasses import dataclass

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value

from antispam.dnsquery import DKIMKeyLookup

log = logging.getLogger(__name__)
MAX_SIGNATURES = 8


@dataclass(frozen=True)
class DKIMResult:
    result: str  # pass, fail, temperror, permerror
    domain: str  # d=, lower case
    selector: str  # s=
    algorithm: str  # a=
    b_prefix: str  # the first characters of b=, naming the signature in Authentication-Results
    reason: str = ""


def _tag(fields, name):
    return fields.get(name, b"").decode("ascii", "replace").strip()


def verify_all(raw):
    """[DKIMResult] for each DKIM-Signature of `raw`, top first; [] when it has none."""
    try:
        verifier = dkimpy.DKIM(raw, minkey=1024)
    except dkimpy.DKIMException as error:
        log.info("dkim: unparsable message: %s", str(error)[:200])
        return []
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, value in enumerate(signatures[:MAX_SIGNATURES]):
        try:
            fields = parse_tag_value(value)
        except InvalidTagValueList:
            results.append(DKIMResult("permerror", "", "", "", "", "unparsable signature"))
            continue
        domain, selector = _tag(fields, b"d").lower(), _tag(fields, b"s")
        algorithm = _tag(fields, b"a").lower()
        b_prefix = "".join(_tag(fields, b"b").split())[:8]
        lookup = DKIMKeyLookup()
        try:
            verified = dkimpy.DKIM(raw, minkey=1024).verify(idx=index, dnsfunc=lookup)
        except dkimpy.DKIMException as error:
            # A body that no longer matches bh= is a failed signature (RFC 6376 §6.1.3),
            # not a malformed one.
            failed = str(error).startswith("body hash mismatch")
            results.append(DKIMResult(
                "fail" if failed else "permerror", domain, selector, algorithm, b_prefix,
                "body hash did not verify" if failed else str(error)[:200],
            ))
            continue
        if verified:
            results.append(DKIMResult("pass", domain, selector, algorithm, b_prefix))
            continue
        failure = lookup.failures.get(f"{selector}._domainkey.{domain}".lower())
        if failure == "temperror":
            results.append(DKIMResult("temperror", domain, selector, algorithm, b_prefix, "key lookup failed"))
        elif failure == "nokey":
            results.append(DKIMResult("permerror", domain, selector, algorithm, b_prefix, "no key"))
        else:
            results.append(DKIMResult("fail", domain, selector, algorithm, b_prefix, "signature did not verify"))
    return results
