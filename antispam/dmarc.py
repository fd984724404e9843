"""DMARC (RFC 7489): the From domain's policy, identifier alignment, and what to do.

- The policy record is looked up at _dmarc.FROM-DOMAIN, then at _dmarc.ORG-DOMAIN
  (§6.6.3); the organisational domain comes from the Public Suffix List as the
  publicsuffixlist package ships it (no download at run time).
- Alignment (§3.1): relaxed means the same organisational domain, strict the same name.
  DMARC passes when an SPF pass (MAIL FROM identity) or a DKIM pass is aligned with the
  From domain.
- Policy: sp= applies when the record was found at the organisational domain for a
  subdomain's mail (§6.3); pct= samples the messages the policy applies to, the others
  getting the next milder policy (reject → quarantine → none, §6.6.4). The sampler is a
  module attribute so tests can fix it.
- A DNS failure while looking for the record is temperror: no policy is applied.
"""
import functools
import random
import re
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from antispam import dnsquery

POLICIES = ("none", "quarantine", "reject")
MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}

sampler = random.random  # test seam: [0, 1)


@functools.lru_cache(maxsize=1)
def _suffixes():
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain):
    domain = domain.rstrip(".").lower()
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain, from_domain, mode):
    domain, from_domain = domain.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if not domain or not from_domain:
        return False
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


@dataclass(frozen=True)
class Record:
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


class InvalidRecord(ValueError):
    pass


_TAG = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


def parse_record(text):
    """A Record from a DMARC TXT record; InvalidRecord when it is not one (§6.3)."""
    tags = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _TAG.match(part)
        if not match:
            raise InvalidRecord(f"malformed tag {part.strip()!r}")
        tags.setdefault(match.group(1).lower(), match.group(2))
    if list(tags)[:1] != ["v"] or tags["v"] != "DMARC1":
        raise InvalidRecord("not v=DMARC1")
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # §6.6.3: a record with a valid rua= and a bad or missing p= counts as p=none.
        if "rua" in tags:
            p = "none"
        else:
            raise InvalidRecord("no valid p= policy")
    sp = tags.get("sp", "").lower()
    sp = sp if sp in POLICIES else p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return Record(
        p=p, sp=sp, adkim=adkim if adkim in ("r", "s") else "r", aspf=aspf if aspf in ("r", "s") else "r",
        pct=min(max(pct, 0), 100),
    )


def _record_at(domain):
    """The Record at _dmarc.DOMAIN, None when there is none (or more than one, §6.6.3)."""
    candidates = [t for t in dnsquery.txt(f"_dmarc.{domain}") if t.strip().startswith("v=DMARC1")]
    if len(candidates) != 1:
        return None
    try:
        return parse_record(candidates[0])
    except InvalidRecord:
        return None


@dataclass(frozen=True)
class DMARCResult:
    result: str  # pass, fail, none, temperror, permerror
    from_domain: str
    policy: str = "none"  # the published policy that applies to this domain (p= or sp=)
    disposition: str = "none"  # what to do after pct: none, quarantine, reject
    reason: str = ""

    def header_comment(self):
        return f"p={self.policy.upper()} dis={self.disposition.upper()}" if self.result in ("pass", "fail") else ""


def evaluate(from_domain, *, spf, dkim_results):
    """The DMARC result for a message whose From domain is `from_domain`.

    `spf` is the antispam.spf_check.SPFResult of the MAIL FROM identity (or the HELO one
    for the null sender); `dkim_results` the DKIMResults of its signatures.
    """
    from_domain = from_domain.rstrip(".").lower()
    organisational = organizational_domain(from_domain)
    try:
        record = _record_at(from_domain)
        at_org = False
        if record is None and organisational != from_domain:
            record = _record_at(organisational)
            at_org = True
    except dnsquery.TempError:
        return DMARCResult("temperror", from_domain, reason="policy lookup failed")
    if record is None:
        return DMARCResult("none", from_domain, reason="no DMARC record")
    policy = record.sp if at_org else record.p
    dkim_aligned = any(d.result == "pass" and aligned(d.domain, from_domain, record.adkim) for d in dkim_results)
    spf_aligned = spf.result == "pass" and aligned(spf.domain, from_domain, record.aspf)
    if dkim_aligned or spf_aligned:
        return DMARCResult("pass", from_domain, policy, "none")
    disposition = policy
    if policy != "none" and record.pct < 100 and sampler() * 100 >= record.pct:
        disposition = MILDER[policy]
    return DMARCResult("fail", from_domain, policy, disposition, reason="no aligned SPF or DKIM pass")
