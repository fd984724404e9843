"""Content rules: header and body heuristics over the parsed message.

Pure functions: evaluate(raw, context) parses the message once (Facts) and runs every
rule in RULES over it; each rule returns the hits it finds as (name, details), and the
table gives each name its points and the sentence the webmail shows ("the subject is
written in capitals"). Nothing here touches the network or the database: what the
rules need to know about the world (is this domain ours, did SPF/DKIM align) comes in
the Context.

Implementation notes:
- Bounded work: at most TEXT_CHARS characters of text and HTML_CHARS of markup are
  read, at most MAX_LINKS links are checked, whatever the message's size.
- A rule that cannot read something (undecodable header, broken MIME) simply does not
  fire: rules add evidence, they never refuse a message by failing.
- GTUBE (the Generic Test for Unsolicited Bulk Email, the string every filter treats as
  spam so operators can test their set-up) scores far above any threshold.
"""
import email
import email.header
import email.policy
import email.utils
import functools
import html
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from antispam.dmarc import organizational_domain

TEXT_CHARS = 200_000
HTML_CHARS = 400_000
MAX_LINKS = 200

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

# name: (points, explanation; {placeholders} filled from the hit's details)
RULES = {
    "GTUBE": (1000.0, "the message contains the GTUBE test string, which is always treated as spam"),
    "MISSING_DATE": (1.0, "the message has no Date header field, which real mail programs always add"),
    "MISSING_MESSAGE_ID": (1.0, "the message has no Message-ID header field, which real mail programs always add"),
    "FROM_REPLYTO_MISMATCH": (1.0, "replies would go to {reply_to}, not to the sender's domain {from_domain}"),
    "FORGED_LOCAL_DOMAIN": (
        3.5, "the sender claims to be from {domain}, one of our own domains, but was not sent by our server "
        "and no SPF or DKIM check confirms it",
    ),
    "SUBJECT_ALL_CAPS": (1.5, "the subject is written in capital letters"),
    "SUBJECT_SPAMMY": (1.5, "the subject uses a phrase typical of spam: \u201c{phrase}\u201d"),
    "BODY_SPAMMY": (1.0, "the text uses several phrases typical of spam, such as \u201c{phrase}\u201d"),
    "URL_LOOKALIKE_DOMAIN": (3.5, "a link goes to {domain}, a name made to look like {looks_like}"),
    "URL_TEXT_MISMATCH": (3.0, "a link shows {shown} but leads to {target}"),
    "URL_IP_ADDRESS": (1.5, "a link points at a bare IP address ({host}) instead of a domain name"),
    "HTML_ONLY": (0.5, "the message is HTML only, with no plain-text version"),
    "HTML_HIDDEN_TEXT": (2.0, "the HTML hides text from the reader (\u201c{sample}\u201d), a trick to fool filters"),
}


@dataclass(frozen=True)
class Context:
    """What the rules need to know beyond the message itself."""

    is_local_domain: object = staticmethod(lambda domain: False)  # callable: domain → bool
    authenticated: bool = False  # the client logged in or is a trusted network
    aligned: bool = False  # an SPF or DKIM pass aligned (relaxed) with the From domain


@dataclass
class Facts:
    """What the rules look at, read from the message once."""

    subject: str = ""
    from_addresses: list = field(default_factory=list)
    reply_to: list = field(default_factory=list)
    has_date: bool = False
    has_message_id: bool = False
    text: str = ""  # the text/plain parts
    markup: str = ""  # the text/html parts, as markup
    has_plain: bool = False
    has_html: bool = False
    gtube: bool = False

    @functools.cached_property
    def from_domain(self):
        return domain_of(self.from_addresses[0]) if len(self.from_addresses) == 1 else ""

    # Read once, used by the rules and by the Bayes tokens (antispam.bayes).
    @functools.cached_property
    def links(self):
        """(href, shown text, host) of each link (see _links)."""
        return [(href, shown, _host_of(href)) for href, shown in _links(self)]

    @functools.cached_property
    def visible_html(self):
        """The HTML parts' text as the reader sees it (markup removed)."""
        return _visible_text(self.markup) if self.markup else ""


def domain_of(address):
    return address.rpartition("@")[2].strip().rstrip(".").lower() if "@" in address else ""


def _raw_text(value):
    """A header value as parsed with compat32 (non-ASCII bytes kept as surrogates), as
    text: raw UTF-8 (RFC 6532, what SMTPUTF8 clients send) decoded, else Latin-1 (old
    8-bit mailers), folding removed."""
    if not value.isascii():
        data = value.encode("ascii", "surrogateescape")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            value = data.decode("latin-1")
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


def _header_fields(message, names):
    """{lower-case name: [text values]} of the fields `names`, read once from the header.
    raw_items(): compat32's get() would turn raw UTF-8 into replacement characters."""
    found = {name: [] for name in names}
    for name, value in message.raw_items():
        values = found.get(name.lower())
        if values is not None and isinstance(value, str):
            values.append(_raw_text(value))
    return found


def _addresses(values):
    try:
        return [address.lower() for _, address in email.utils.getaddresses(values) if address]
    except Exception:
        return []


def _part_text(part):
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def facts(raw, message=None):
    """Facts from message bytes; `message` is `raw` already parsed with email.policy.compat32,
    if the caller has it."""
    if message is None:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    fields = _header_fields(message, ("subject", "from", "reply-to", "date", "message-id"))
    subjects = fields["subject"]
    found = Facts(
        subject=_decoded(subjects[0]) if subjects else "",
        from_addresses=_addresses(fields["from"]),
        reply_to=_addresses(fields["reply-to"]),
        has_date=bool(fields["date"]),
        has_message_id=bool(fields["message-id"]),
        gtube=GTUBE in raw,
    )
    texts, markups = [], []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if (part.get("Content-Disposition") or "").lower().startswith("attachment"):
            continue
        subtype = part.get_content_subtype()
        if subtype == "plain":
            found.has_plain = True
            texts.append(_part_text(part))
        elif subtype == "html":
            found.has_html = True
            markups.append(_part_text(part))
    found.text = "\n".join(texts)[:TEXT_CHARS]
    found.markup = "\n".join(markups)[:HTML_CHARS]
    return found


def _decoded(value):
    if "=?" not in value:  # no encoded words (RFC 2047): nothing to decode
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


# Rules --------------------------------------------------------------------------------


def gtube(found, context):
    return [("GTUBE", {})] if found.gtube else []


def missing_fields(found, context):
    hits = []
    if not found.has_date:
        hits.append(("MISSING_DATE", {}))
    if not found.has_message_id:
        hits.append(("MISSING_MESSAGE_ID", {}))
    return hits


def reply_to_mismatch(found, context):
    """Replies diverted to another organisation (RFC 5322 §3.6.2 Reply-To)."""
    from_domain = found.from_domain
    if not from_domain or not found.reply_to:
        return []
    ours = organizational_domain(from_domain)
    for address in found.reply_to:
        domain = domain_of(address)
        if domain and organizational_domain(domain) != ours:
            return [("FROM_REPLYTO_MISMATCH", {"reply_to": address, "from_domain": from_domain})]
    return []


def forged_local_domain(found, context):
    domain = found.from_domain
    if not domain or context.authenticated or context.aligned or not context.is_local_domain(domain):
        return []
    return [("FORGED_LOCAL_DOMAIN", {"domain": domain})]


SPAMMY_PHRASES = (
    "act now", "limited time", "100% free", "free money", "you have won", "you won", "winner", "lottery",
    "claim your", "risk free", "risk-free", "cash bonus", "no prescription", "viagra", "cialis",
    "lose weight", "miracle", "guaranteed income", "work from home", "earn extra cash", "double your",
    "million dollars", "urgent response", "wire transfer", "inheritance", "unclaimed", "congratulations",
    "click here", "best price", "cheap meds", "crypto profit", "bitcoin profit", "hot singles",
    "verify your account", "account suspended", "your account will be closed", "final notice",
)
_SPAMMY = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in SPAMMY_PHRASES) + r")(?!\w)", re.IGNORECASE)
# The same over lower-cased text: a case-insensitive search of a long text costs three times more.
_SPAMMY_LOWER = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in SPAMMY_PHRASES) + r")(?!\w)")
_SHOUTY = re.compile(r"[!$]{3,}")


def subject_rules(found, context):
    hits = []
    letters = [c for c in found.subject if c.isalpha()]
    if len(letters) >= 10 and sum(1 for c in letters if c.isupper()) >= 0.9 * len(letters):
        hits.append(("SUBJECT_ALL_CAPS", {}))
    match = _SPAMMY.search(found.subject) or _SHOUTY.search(found.subject)
    if match:
        hits.append(("SUBJECT_SPAMMY", {"phrase": match.group()}))
    return hits


def body_phrases(found, context):
    text = found.text or found.visible_html
    matches = set(_SPAMMY_LOWER.findall(text.lower()))
    if len(matches) >= 3:
        return [("BODY_SPAMMY", {"phrase": sorted(matches)[0]})]
    return []


# Links ------------------------------------------------------------------------------------

_URL = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.IGNORECASE)
_ANCHOR = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
# Something shown as a link's text that names a host: a URL, or a bare domain name.
_SHOWN_HOST = re.compile(r"^\s*(?:https?://)?((?:[\w-]+\.)+[a-z\w-]{2,})(?:[/:?#]\S*)?\s*$", re.IGNORECASE)

# Letters from other scripts drawn like Latin ones (Unicode's confusables, the common
# cases phishers use), and the digit-for-letter swaps of plain ASCII look-alikes.
CONFUSABLE = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ο": "o", "ν": "v",
    "ρ": "p", "κ": "k", "ι": "i", "τ": "t", "α": "a", "ε": "e", "ѵ": "v", "ո": "n", "ս": "u",
    "ı": "i", "ɩ": "i",
}
_DIGIT_SWAPS = {"0": "o", "1": "l", "3": "e", "5": "s", "rn": "m", "vv": "w"}


def _host_of(url):
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def _unicode_host(host):
    """The host as people read it: punycode labels (RFC 5891 A-labels) decoded."""
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                label = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)


@functools.lru_cache(maxsize=4096)  # the same few hosts come back in message after message
def skeleton(host):
    """The host with look-alike letters replaced by the Latin ones they imitate."""
    host = "".join(CONFUSABLE.get(c, c) for c in _unicode_host(host).lower())
    for fake, real in _DIGIT_SWAPS.items():
        host = host.replace(fake, real)
    return host


def _scripts(label):
    scripts = set()
    for c in label:
        if c.isascii() or "\u00c0" <= c <= "\u024f" or "\u1e00" <= c <= "\u1eff":  # Latin, accented too
            if c.isalpha():
                scripts.add("latin")
        elif "\u0400" <= c <= "\u052f":
            scripts.add("cyrillic")
        elif "\u0370" <= c <= "\u03ff":
            scripts.add("greek")
        elif c.isalpha():
            scripts.add("other")
    return scripts


def _lookalike(host, known):
    """What `host` imitates, or None: a label mixing Latin with another script, a label
    made only of letters drawn like Latin ones (RFC 5890 §4.4 warns of both), or a name
    whose skeleton is that of a different domain in `known` (paypa1.example)."""
    shown = _unicode_host(host)
    for label in shown.split("."):
        if label.isascii():
            continue
        scripts = _scripts(label)
        whole_confusable = all(c.isascii() or c in CONFUSABLE for c in label)
        if ("latin" in scripts and len(scripts) > 1) or whole_confusable:
            return skeleton(host)
    fake = skeleton(host)
    for other in known:
        if other and other != host and organizational_domain(other) != organizational_domain(host) and skeleton(other) == fake:
            return other
    return None


def _links(found):
    """(href, shown text) for HTML anchors, (url, "") for URLs written in the text."""
    links = []
    for match in _ANCHOR.finditer(found.markup):
        href = _HREF.search(match.group(1))
        if href:
            target = html.unescape(next(g for g in href.groups() if g is not None))
            links.append((target, html.unescape(_TAG.sub("", match.group(2))).strip()))
        if len(links) >= MAX_LINKS:
            return links
    for match in _URL.finditer(found.text):
        links.append((match.group(), ""))
        if len(links) >= MAX_LINKS:
            break
    return links


def url_rules(found, context):
    hits, seen = [], set()
    links = found.links
    shown_hosts = set()
    for _, shown, _ in links:
        match = _SHOWN_HOST.match(shown)
        if match:
            shown_hosts.add(match.group(1).rstrip(".").lower())
    known = shown_hosts | {found.from_domain}
    for href, shown, host in links:
        if not host:
            continue
        if _is_ip(host) and "URL_IP_ADDRESS" not in seen:
            seen.add("URL_IP_ADDRESS")
            hits.append(("URL_IP_ADDRESS", {"host": host}))
            continue
        imitated = _lookalike(host, known)
        if imitated and "URL_LOOKALIKE_DOMAIN" not in seen:
            seen.add("URL_LOOKALIKE_DOMAIN")
            hits.append(("URL_LOOKALIKE_DOMAIN", {"domain": _unicode_host(host), "looks_like": imitated}))
        match = _SHOWN_HOST.match(shown)
        if match and "URL_TEXT_MISMATCH" not in seen:
            shown_host = match.group(1).rstrip(".").lower()
            if "." in shown_host and organizational_domain(shown_host) != organizational_domain(host):
                seen.add("URL_TEXT_MISMATCH")
                hits.append(("URL_TEXT_MISMATCH", {"shown": shown_host, "target": host}))
    return hits


def _is_ip(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# HTML ---------------------------------------------------------------------------------------

_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.0*)?(?:px|pt|em)?\s*(?:;|$)|opacity\s*:\s*0(?:\.0*)?\s*(?:;|$)"
    r"|color\s*:\s*#?(?:fff(?:fff)?|white)\b[^\"']*background(?:-color)?\s*:\s*#?(?:fff(?:fff)?|white)\b",
    re.IGNORECASE,
)
# An element whose style hides it, and the text up to its closing tag (same element name).
_HIDDEN_ELEMENT = re.compile(
    r"<(\w+)\b[^>]*\bstyle\s*=\s*(\"[^\"]*\"|'[^']*')[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL,
)
_HIDDEN_FONT = re.compile(r"<font\b[^>]*\bcolor\s*=\s*[\"']?#?(?:fff(?:fff)?|white)\b[^>]*>(.*?)</font\s*>", re.IGNORECASE | re.DOTALL)
_HIDDEN_ATTRIBUTE = re.compile(r"<(\w+)\b[^>]*\shidden(?:\s|>|=)[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_HIDDEN_TEXT_MIN = 20  # a preheader's few invisible characters are not hiding anything


def _visible_text(markup):
    return html.unescape(_TAG.sub(" ", markup))


def html_rules(found, context):
    hits = []
    if found.has_html and not found.has_plain:
        hits.append(("HTML_ONLY", {}))
    if not found.has_html:
        return hits
    hidden = []
    for match in _HIDDEN_ELEMENT.finditer(found.markup):
        if _HIDING_STYLE.search(match.group(2)[1:-1]):
            hidden.append(match.group(3))
    hidden += [m.group(1) for m in _HIDDEN_FONT.finditer(found.markup)]
    hidden += [m.group(2) for m in _HIDDEN_ATTRIBUTE.finditer(found.markup)]
    for chunk in hidden:
        text = " ".join(_visible_text(chunk).split())
        if len(text) >= _HIDDEN_TEXT_MIN:
            hits.append(("HTML_HIDDEN_TEXT", {"sample": text[:40] + ("…" if len(text) > 40 else "")}))
            break
    return hits


CHECKS = (gtube, missing_fields, reply_to_mismatch, forged_local_domain, subject_rules, body_phrases, url_rules, html_rules)


@dataclass(frozen=True)
class Hit:
    name: str
    points: float
    explanation: str


def explain(name, details):
    points, template = RULES[name]
    return Hit(name, points, template.format(**details))


def evaluate_facts(found, context=Context()):
    return [explain(name, details) for check in CHECKS for name, details in check(found, context)]


def evaluate(raw, context=Context()):
    """The content rules that fire on message bytes `raw`, as Hits."""
    return evaluate_facts(facts(raw), context)
