"""Sender authentication of a message arriving on the MX port: the one entry point.

check_message() runs after DATA (synchronous: it does DNS and no database writes; the SMTP
server runs it through off_loop(), on its event loop when every answer it needs is cached,
else in the checks' threads) and returns what mta.smtpd and mta.inbound need:
- the content to store: incoming Authentication-Results claiming our authserv-id
  (MAILSUITE_HOSTNAME) removed, ours added on top;
- a refusal (DMARC p=reject → "550 5.7.1 …") or None;
- junk: DMARC p=quarantine, so local copies are filed into Junk;
- the rules that fired with their points, and spam_percent (0-100) for Sieve's spamtest.

Order: SPF (HELO, MAIL FROM), DKIM (every signature), ARC (the chain), DMARC (from those).
Clients that authenticated or are in MAILSUITE_TRUSTED_NETWORKS are not checked (their
mail is ours to send); forged Authentication-Results are removed from theirs too. Loopback
is a client like any other unless the operator lists it as trusted.
"""
import asyncio
import email.policy
import email.utils
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings

from antispam import arc, attachments, authresults, bayes, dkim_check, dmarc, lookups, policy, rules, spf_check
from mailsuite.lib import inline
from mailsuite.lib.aio import run_sync
from mta.headers import field_values
from ops import metrics

log = logging.getLogger(__name__)

# The checks wait on DNS, not the database: they get threads of their own, so a slow
# resolver never holds up the database pool.
_executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sender-checks")
# Messages up to this size are checked on the event loop when the DNS answers they need are
# cached (off_loop()): their checks take about a millisecond; a larger one would hold up
# every other session of the process while its text is scanned.
INLINE_LIMIT = 64 * 1024

# Points per rule; SPAM_POINTS points make 100 % for Sieve's spamtest (RFC 5235).
SPAM_POINTS = policy.SPAM_POINTS
POINTS = {
    "SPF_FAIL": 3.0,
    "SPF_SOFTFAIL": 1.0,
    "DKIM_INVALID": 1.0,  # a signature that does not verify, and none that does
    "DMARC_FAIL": 3.0,  # policy none: only the score says so
    "DMARC_QUARANTINE": 6.0,
    "DMARC_REJECT": 10.0,
    "FROM_MALFORMED": 2.0,
    # DNSBL_LISTED: each listing scores its zone's weight (antispam.dnsbl)
}
EXPLANATIONS = {
    "SPF_FAIL": "the sending host is not allowed to send for the envelope sender's domain (SPF fail)",
    "SPF_SOFTFAIL": "the sender's domain says this host is probably not allowed to send for it (SPF softfail)",
    "DKIM_INVALID": "the message carries a DKIM signature that does not verify",
    "DMARC_FAIL": "the From domain failed DMARC (no aligned SPF or DKIM pass)",
    "DMARC_QUARANTINE": "the From domain failed DMARC and asks for such mail to be quarantined",
    "DMARC_REJECT": "the From domain failed DMARC and asks for such mail to be rejected",
    "FROM_MALFORMED": "the From header field does not name exactly one sender",
}


@dataclass
class Rule:
    name: str
    points: float
    explanation: str


@dataclass
class Outcome:
    content: bytes
    refusal: str | None = None
    junk: bool = False
    rules: list = field(default_factory=list)
    results: dict = field(default_factory=dict)  # method → result, for logs and later display
    assessment: object = None  # policy.Assessment: each recipient's verdict starts from it

    @property
    def score(self):
        return round(sum(rule.points for rule in self.rules), 2)

    @property
    def spam_percent(self):
        return max(0, min(100, round(self.score * 100 / SPAM_POINTS)))

    def add(self, name):
        self.rules.append(Rule(name, POINTS[name], EXPLANATIONS[name]))

    def add_hits(self, hits):
        self.rules.extend(Rule(hit.name, hit.points, hit.explanation) for hit in hits)

    def for_delivery(self):
        """mta.inbound.prepare()'s keyword arguments carrying this verdict."""
        return {"junk": self.junk, "spam_percent": self.spam_percent, "spam": self.assessment}

    def add_listings(self, listings):
        for listing in listings:
            self.rules.append(Rule(
                "DNSBL_LISTED", listing.weight, f"{listing.listed} is listed on the block list {listing.zone}",
            ))


def from_domain(raw):
    """The domain of the single author address (RFC 7489 §6.6.1), or None."""
    values = field_values(raw, "From")
    if len(values) != 1:
        return None
    addresses = [a for _, a in email.utils.getaddresses(values) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    return domain or None


def check_message(
    content, *, client_ip, helo, mail_from, skip=False, listings=(), connection_rules=(), iprev=None,
    is_local_domain=None, message=None,
):
    """See the module docstring. `mail_from` is "" for the null sender; `skip` for
    authenticated or trusted clients; `listings` the block list entries found at MAIL FROM;
    `connection_rules` and `iprev` what antispam.connection.assess() found about the client;
    `is_local_domain` answers whether a domain is ours (default: asked in this thread);
    `message` is `content` already parsed (email.policy.compat32), if the caller has it."""
    our_id = settings.MAILSUITE_HOSTNAME
    content, forged = authresults.remove_ours(content, our_id)
    outcome = Outcome(content)
    if skip:
        _log_forged(forged, client_ip)
        return outcome
    receiver = settings.MAILSUITE_HOSTNAME
    helo_spf = spf_check.check_helo(client_ip, helo, receiver=receiver)
    spf = spf_check.check_mail_from(client_ip, mail_from, helo, receiver=receiver, helo_result=helo_spf)
    dkim_results = dkim_check.verify_all(content)
    arc_result = arc.verify(content, trusted_sealers=settings.MAILSUITE_ARC_TRUSTED_SEALERS)
    author_domain = from_domain(content)
    dmarc_result = (
        dmarc.evaluate(author_domain, spf=spf, dkim_results=dkim_results)
        if author_domain else dmarc.DMARCResult("permerror", "", reason="no single From address")
    )
    _score(outcome, spf, dkim_results, dmarc_result)
    outcome.add_listings(listings)
    outcome.rules.extend(connection_rules)  # rDNS/HELO findings (antispam.connection)
    _act(outcome, dmarc_result, arc_result)
    if arc_result.trusted:
        # A trusted forwarder vouches for what it forwarded: SPF and DKIM failures are
        # what forwarding does to a message, not evidence against it (RFC 8617 §7.2).
        outcome.rules = [r for r in outcome.rules if r.name not in ("SPF_FAIL", "SPF_SOFTFAIL", "DKIM_INVALID")]
    aligned = _aligned(author_domain, spf, dkim_results)
    facts = rules.facts(content, message)
    outcome.add_hits(rules.evaluate_facts(
        facts, rules.Context(is_local_domain=is_local_domain or _is_local_domain, aligned=aligned),
    ))
    methods = _methods(spf, helo_spf, dkim_results, dmarc_result, arc_result, client_ip, overridden=_overridden(dmarc_result, arc_result))
    if iprev is not None:
        methods.insert(0, iprev.method())  # RFC 8601 §2.7.3: the client's reverse DNS
    outcome.content = authresults.field(our_id, methods) + content
    outcome.results = {
        "spf": spf.result, "helo": helo_spf.result, "dkim": [d.result for d in dkim_results],
        "dmarc": dmarc_result.result, "arc": arc_result.result,
    }
    if iprev is not None:
        outcome.results["iprev"] = iprev.result
    outcome.assessment = policy.Assessment(
        rules=[(r.name, r.points, r.explanation) for r in outcome.rules],
        results=outcome.results,
        tokens=bayes.tokens_of_facts(facts),
        from_address=facts.from_addresses[0] if len(facts.from_addresses) == 1 else "",
        mail_from=mail_from.lower(),
        # The From address is proven by an aligned pass (DMARC's test); the envelope sender by SPF.
        from_verified=dmarc_result.result == "pass" or aligned,
        mail_from_verified=spf.result == "pass" and spf.identity == "mailfrom",
    )
    # Logged only now, after the last lookup: off_loop() may have started this run over.
    _log_forged(forged, client_ip)
    log.info(
        "sender checks ip=%s mail_from=<%s> from_domain=%s spf=%s dkim=%s dmarc=%s/%s arc=%s%s",
        client_ip, mail_from, author_domain or "-", spf.result, ",".join(d.result for d in dkim_results) or "none",
        dmarc_result.result, dmarc_result.disposition, arc_result.result,
        f" trusted_sealer={arc_result.sealer}" if arc_result.trusted else "",
    )
    metrics.spam_verdict(outcome)
    return outcome


def _log_forged(count, client_ip):
    if count:
        log.info(
            "removed %d Authentication-Results field(s) claiming %s from %s", count, settings.MAILSUITE_HOSTNAME, client_ip,
        )


def _score(outcome, spf, dkim_results, dmarc_result):
    if spf.result == "fail":
        outcome.add("SPF_FAIL")
    elif spf.result == "softfail":
        outcome.add("SPF_SOFTFAIL")
    if dkim_results and not any(d.result == "pass" for d in dkim_results) and any(d.result == "fail" for d in dkim_results):
        outcome.add("DKIM_INVALID")
    if dmarc_result.result == "permerror" and not dmarc_result.from_domain:
        outcome.add("FROM_MALFORMED")


def assess_content(content, *, results=None):
    """The Assessment of a message without the network: content rules and Bayes tokens,
    with authentication `results` as recorded at delivery (a Verdict's) if known. For
    the dry run (`manage.py spam check`) and the benchmark."""
    results = results or {}
    facts = rules.facts(content)
    aligned = results.get("dmarc") == "pass"
    hits = rules.evaluate_facts(facts, rules.Context(is_local_domain=_is_local_domain, aligned=aligned))
    return policy.Assessment(
        rules=[(h.name, h.points, h.explanation) for h in hits],
        results=results,
        tokens=bayes.tokens_of_facts(facts),
        from_address=facts.from_addresses[0] if len(facts.from_addresses) == 1 else "",
        from_verified=aligned,
        mail_from_verified=results.get("spf") == "pass",
    )


def _aligned(author_domain, spf, dkim_results):
    """An SPF or DKIM pass in the From domain's organisation (RFC 7489 §3.1 relaxed),
    whether or not the domain publishes DMARC."""
    if not author_domain:
        return False
    if spf.result == "pass" and spf.identity == "mailfrom" and dmarc.aligned(spf.domain, author_domain, "r"):
        return True
    return any(d.result == "pass" and dmarc.aligned(d.domain, author_domain, "r") for d in dkim_results)


def _is_local_domain(domain):
    return lookups.is_local_domain(domain)


def _overridden(dmarc_result, arc_result):
    return dmarc_result.result == "fail" and dmarc_result.disposition != "none" and arc_result.trusted


def _act(outcome, dmarc_result, arc_result):
    if dmarc_result.result != "fail":
        return
    if _overridden(dmarc_result, arc_result):
        outcome.add("DMARC_FAIL")  # a trusted forwarder vouches for it: scored, not punished
        return
    if dmarc_result.disposition == "reject":
        outcome.add("DMARC_REJECT")
        outcome.refusal = (
            f"550 5.7.1 Rejected by the DMARC policy of {dmarc_result.from_domain}: "
            "the message has no aligned SPF or DKIM pass"
        )
    elif dmarc_result.disposition == "quarantine":
        outcome.add("DMARC_QUARANTINE")
        outcome.junk = True
    else:
        outcome.add("DMARC_FAIL")


def _methods(spf, helo_spf, dkim_results, dmarc_result, arc_result, client_ip, *, overridden):
    methods = []
    if spf.identity == "mailfrom":
        methods.append(authresults.method("spf", spf.result, [("smtp.mailfrom", spf.domain)]))
    if helo_spf.domain:
        methods.append(authresults.method("spf", helo_spf.result, [("smtp.helo", helo_spf.domain)]))
    elif spf.identity == "helo":
        methods.append(authresults.method("spf", "none", comment="no usable HELO name for the null sender"))
    if dkim_results:
        for d in dkim_results:
            methods.append(authresults.method(
                "dkim", d.result,
                [("header.d", d.domain), ("header.s", d.selector), ("header.a", d.algorithm), ("header.b", d.b_prefix)],
                comment=d.reason,
            ))
    else:
        methods.append(authresults.method("dkim", "none"))
    comment = dmarc_result.header_comment()
    if overridden:
        comment += f"; policy overridden: trusted ARC sealer {arc_result.sealer}"
    methods.append(authresults.method(
        "dmarc", dmarc_result.result, [("header.from", dmarc_result.from_domain)], comment=comment,
    ))
    arc_comment = f"sealed by {arc_result.sealer}" if arc_result.sealer else ""
    methods.append(authresults.method("arc", arc_result.result, [("smtp.remote-ip", client_ip)], comment=arc_comment))
    return methods


async def off_loop(function, *args, inline_first=True, **kwargs):
    """A check's result, for the SMTP server's event loop: computed on the loop itself when
    all it needs is in memory (mailsuite.lib.inline), else in the checks' own thread pool.
    `inline_first=False` goes to the threads at once (work too long to hold up the loop)."""
    if inline_first:
        try:
            with inline.in_memory():
                return function(*args, **kwargs)
        except inline.WouldBlock:
            pass  # it needs the network or the database: start again in a thread
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(function, *args, **kwargs))


def check_incoming(content, *, attachment_actions, outgoing, **kwargs):
    """(antispam.attachments' Decision, check_message()'s Outcome or None when the
    attachments refuse the message): both from one parse of `content`. `attachment_actions`
    and `outgoing` are attachments.check()'s `actions` and `outgoing`; the rest is
    check_message()'s. (Our own Authentication-Results, which check_message() removes,
    change nothing either check reads.)"""
    message = None if kwargs.get("skip") else email.message_from_bytes(content, policy=email.policy.compat32)
    decision = attachments.check(content, actions=attachment_actions, outgoing=outgoing, message=message)
    if decision.refusal:
        return decision, None
    return decision, check_message(content, message=message, **kwargs)


async def check_incoming_off_loop(content, **kwargs):
    """check_incoming() in the checks' threads; whether the From domain is ours is read
    in the database pool (the checks' threads never open a database connection, which
    nothing would close)."""
    loop = asyncio.get_running_loop()

    def is_local_domain(domain):
        known = lookups.known_local_domain(domain)
        if known is None:
            inline.must_wait("the database")
            known = asyncio.run_coroutine_threadsafe(run_sync(lookups.is_local_domain, domain), loop).result()
        return known

    return await off_loop(
        check_incoming, content, inline_first=len(content) <= INLINE_LIMIT, is_local_domain=is_local_domain, **kwargs,
    )
