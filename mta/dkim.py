"""DKIM (RFC 6376) for mail from our domains: per-domain keys, their rotation, and signing.

Implementation notes:
- Every signed message carries two signatures made together: rsa-sha256 with an RSA 2048
  key (every verifier knows it) and ed25519-sha256 (RFC 8463), RSA on top, since some
  verifiers only look at the first signature. Canonicalisation is relaxed/relaxed (survives
  the refolding and whitespace changes relays make); there is no l= tag (a tail added in
  transit must break the signature, not ride on it) and no x= (expiry is the key's, via
  retirement).
- dkimpy parses the message, canonicalises it and selects and hashes the signed header
  fields: the same code its verifier runs. The signature over that hash is made with a
  `cryptography` key object (OpenSSL), parsed once per process and cached, which is far
  faster than dkimpy's pure-Python RSA and needs no PyNaCl for Ed25519.
- A key row never changes its key material, only its state. The cache is keyed by the row
  and its public key, so it can never hand out a stale key; which keys are active is read
  from the database on every sign() (one indexed query), so activation and retirement take
  effect on the next message in every process.
- Keys change only through the functions below (ensure_keys, rotate, activate, retire,
  remove): each is atomic and refuses with an accounts.errors exception whose message is
  one line, as accounts.actions does. Keys are generated before the transaction opens, so
  no write lock is held while RSA primes are found.
- A private key is never logged, printed or shown; messages name selectors and domains only.
"""
import base64
import hashlib
import itertools
import logging
import threading
import time
from collections import Counter, OrderedDict

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.errors import Conflict, InvalidInput, NotFound
from accounts.models import Domain
from mailsuite.lib.addresses import AddressError, normalize_domain
from mta.models import DKIMKey

log = logging.getLogger(__name__)

RSA = DKIMKey.Algorithm.RSA_SHA256
ED25519 = DKIMKey.Algorithm.ED25519_SHA256
ALGORITHMS = (RSA, ED25519)  # the signing order: RSA on top
RSA_KEY_BITS = 2048

# Selectors: "ms" + the year the pair was made + a sequence (a … z, aa, ab …); the Ed25519
# key of a pair adds ED25519_SUFFIX. See DKIMKey.
SELECTOR_PREFIX = "ms"
ED25519_SUFFIX = "-ed"

# Header fields signed, each instance present (RFC 6376 §5.4.1 lists what to sign).
SIGNED_FIELDS = (
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
    "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", "content-id", "content-description",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
    # RFC 2369 and RFC 8058 (one-click unsubscribe needs List-Unsubscribe-Post signed).
    "list-id", "list-help", "list-unsubscribe", "list-unsubscribe-post", "list-subscribe",
    "list-post", "list-owner", "list-archive",
)
# Signed once more than they occur (absent ones once), so that none can be added in transit
# without breaking the signature (RFC 6376 §8.15): who the message is from and to, what it
# is about, where replies go. Other fields stay addable: relays legitimately add some.
OVERSIGNED_FIELDS = frozenset({"from", "reply-to", "to", "cc", "subject"})

RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
SIGNATURE_FIELD = b"DKIM-Signature"
LINE_WIDTH = 78  # RFC 5322 §2.1.1 SHOULD

# Seams for tests: the clock for t= and the one for key timestamps and selectors' years.
clock = time.time
now = timezone.now

# Private keys parsed by this process: {(key id, public key): key object}, least recently used first.
KEY_CACHE_SIZE = 1024
_key_cache = OrderedDict()
_key_cache_lock = threading.Lock()


# Keys -------------------------------------------------------------------------------


def _domain(domain):
    """The Domain row, from a Domain or a name."""
    if isinstance(domain, Domain):
        return domain
    from accounts.actions import get_domain  # not at the top: accounts.actions imports this module

    return get_domain(domain)


def _generate(algorithm):
    """(private key PEM, public key as the DNS p= value) of a new key."""
    if algorithm == RSA:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        # RFC 6376 §3.6.1: p= is the DER SubjectPublicKeyInfo, as every signer publishes it.
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        # RFC 8463 §4.2: p= is the bare 32-byte public key.
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode("ascii"), base64.b64encode(public).decode("ascii")


def _sequence(n):
    """0 → a, 25 → z, 26 → aa, 27 → ab …"""
    letters = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return letters


def pair_name(selector):
    """The name of the pair a selector belongs to: its RSA key's selector."""
    return selector.removesuffix(ED25519_SUFFIX)


def selectors_for(base):
    """{algorithm: selector} of the pair whose RSA selector is `base`."""
    return {RSA: base, ED25519: base + ED25519_SUFFIX}


def _next_base(domain):
    taken = set(DKIMKey.objects.filter(domain=domain).values_list("selector", flat=True))
    prefix = f"{SELECTOR_PREFIX}{now().year}"
    for n in itertools.count():
        base = prefix + _sequence(n)
        if not taken & set(selectors_for(base).values()):
            return base


def _create_pair(domain, material, *, state):
    """Save a pair of new keys (material: {algorithm: (pem, public)}) under the next free selectors."""
    base = _next_base(domain)
    activated = now() if state == DKIMKey.State.ACTIVE else None
    keys = []
    for algorithm, selector in selectors_for(base).items():
        pem, public = material[algorithm]
        keys.append(
            DKIMKey(
                domain=domain, selector=selector, algorithm=algorithm, private_key=pem,
                public_key=public, state=state, activated=activated,
            )
        )
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives the refusal
            for key in keys:
                key.save()
    except IntegrityError:
        raise Conflict(f"the DKIM keys of {domain.name} changed meanwhile; try again") from None
    return keys


def _lock(domain):
    """Serialise key changes of one domain (a row lock where the database has them)."""
    return Domain.objects.select_for_update().get(pk=domain.pk)


def keys_of(domain):
    """The domain's keys, newest pair first, RSA before Ed25519 in a pair; private keys not loaded."""
    keys = list(DKIMKey.objects.filter(domain=_domain(domain)).defer("private_key").order_by("-created", "-pk"))
    newest_first = {}
    for key in keys:
        newest_first.setdefault(pair_name(key.selector), len(newest_first))
    order = {algorithm: n for n, algorithm in enumerate(ALGORITHMS)}
    return sorted(keys, key=lambda key: (newest_first[pair_name(key.selector)], order.get(key.algorithm, 0)))


def active_keys(domain):
    return [key for key in keys_of(domain) if key.state == DKIMKey.State.ACTIVE]


def ensure_keys(domain):
    """Give `domain` (a Domain or its name) an active RSA and Ed25519 pair if it has no key at
    all, and return its active keys. A domain that has keys, in any state, is left as it is:
    its operator manages them (rotate, activate, retire).
    """
    domain = _domain(domain)
    if DKIMKey.objects.filter(domain=domain).exists():
        return active_keys(domain)
    material = {algorithm: _generate(algorithm) for algorithm in ALGORITHMS}
    with transaction.atomic():
        _lock(domain)
        if not DKIMKey.objects.filter(domain=domain).exists():
            _create_pair(domain, material, state=DKIMKey.State.ACTIVE)
    return active_keys(domain)


def rotate(domain):
    """Make a new pair for `domain`, published but not signing yet; return [RSA key, Ed25519 key].

    Put its DNS records in place (mta.dns_records), wait for them to be seen, then activate().
    """
    domain = _domain(domain)
    material = {algorithm: _generate(algorithm) for algorithm in ALGORITHMS}
    with transaction.atomic():
        _lock(domain)
        return _create_pair(domain, material, state=DKIMKey.State.PUBLISHED)


def _pair(domain, selector):
    """The keys of the pair `selector` names (its RSA or its Ed25519 selector), or NotFound."""
    selector = selector.strip().lower()
    base = pair_name(selector)
    keys = list(
        DKIMKey.objects.filter(domain=domain, selector__in=selectors_for(base).values()).order_by("selector")
    )
    if not selector or not keys:
        raise NotFound(f"{domain.name} has no DKIM key with selector {selector!r}")
    return keys


def _selectors(keys):
    return ", ".join(key.selector for key in keys)


def activate(domain, selector):
    """Sign `domain`'s mail with the pair `selector` names from now on.

    The keys that signed until now (of the same algorithms) are retired: their DNS records
    must stay while mail they signed may still be in flight. A retired pair may be activated
    again (a rollback), as long as its records are still in DNS. Returns (activated, retired).
    """
    domain = _domain(domain)
    with transaction.atomic():
        _lock(domain)
        keys = _pair(domain, selector)
        if all(key.state == DKIMKey.State.ACTIVE for key in keys):
            raise Conflict(f"DKIM keys {_selectors(keys)} of {domain.name} are already active")
        moment = now()
        replaced = list(
            DKIMKey.objects.filter(
                domain=domain, state=DKIMKey.State.ACTIVE, algorithm__in=[key.algorithm for key in keys]
            )
            .exclude(pk__in=[key.pk for key in keys])
            .order_by("selector")
        )
        # Retire first: the database allows one active key per domain and algorithm.
        DKIMKey.objects.filter(pk__in=[key.pk for key in replaced]).update(state=DKIMKey.State.RETIRED, retired=moment)
        for key in replaced:
            key.state, key.retired = DKIMKey.State.RETIRED, moment
        for key in keys:
            if key.state != DKIMKey.State.ACTIVE:
                key.state, key.activated, key.retired = DKIMKey.State.ACTIVE, moment, None
                key.save(update_fields=["state", "activated", "retired"])
    log.info(
        "dkim keys activated domain=%s selectors=%s retired=%s", domain.name, _selectors(keys), _selectors(replaced)
    )
    return keys, replaced


def retire(domain, selector):
    """Stop signing with (or never start with) the pair `selector` names; returns its keys.

    Its DNS records stay published (mta.dns_records lists retired keys) until remove().
    Retiring the active pair leaves the domain's mail unsigned until another is activated.
    """
    domain = _domain(domain)
    with transaction.atomic():
        _lock(domain)
        keys = _pair(domain, selector)
        if all(key.state == DKIMKey.State.RETIRED for key in keys):
            raise Conflict(f"DKIM keys {_selectors(keys)} of {domain.name} are already retired")
        moment = now()
        for key in keys:
            if key.state != DKIMKey.State.RETIRED:
                key.state, key.retired = DKIMKey.State.RETIRED, moment
                key.save(update_fields=["state", "retired"])
    log.info("dkim keys retired domain=%s selectors=%s", domain.name, _selectors(keys))
    return keys


def remove(domain, selector):
    """Forget the retired pair `selector` names (private keys included); returns its selectors.

    Only retired keys may go: take their records out of DNS first, some days after retiring.
    """
    domain = _domain(domain)
    with transaction.atomic():
        _lock(domain)
        keys = _pair(domain, selector)
        for key in keys:
            if key.state != DKIMKey.State.RETIRED:
                raise InvalidInput(f"DKIM key {key.selector} of {domain.name} is {key.state}; retire it first")
        DKIMKey.objects.filter(pk__in=[key.pk for key in keys]).delete()
    log.info("dkim keys removed domain=%s selectors=%s", domain.name, _selectors(keys))
    return [key.selector for key in keys]


# Signing ----------------------------------------------------------------------------


def _load_private_key(pem):
    return serialization.load_pem_private_key(pem.encode("ascii"), password=None)


def _signing_keys(domain_name):
    """[(selector, algorithm, key object)] of the domain's active keys, in signing order."""
    rows = list(
        DKIMKey.objects.filter(domain__name=domain_name, state=DKIMKey.State.ACTIVE).values_list(
            "pk", "public_key", "selector", "algorithm"
        )
    )
    found, missing = {}, []
    with _key_cache_lock:
        for pk, public, _, _ in rows:
            key = _key_cache.get((pk, public))
            if key is None:
                missing.append(pk)
            else:
                _key_cache.move_to_end((pk, public))
                found[pk] = key
    if missing:
        pems = DKIMKey.objects.filter(pk__in=missing).values_list("pk", "public_key", "private_key")
        loaded = {(pk, public): _load_private_key(pem) for pk, public, pem in pems}
        with _key_cache_lock:
            for cache_key, key in loaded.items():
                _key_cache[cache_key] = key
                found[cache_key[0]] = key
            while len(_key_cache) > KEY_CACHE_SIZE:
                _key_cache.popitem(last=False)
    order = {algorithm: n for n, algorithm in enumerate(ALGORITHMS)}
    keys = [(selector, algorithm, found[pk]) for pk, _, selector, algorithm in rows if pk in found]
    return sorted(keys, key=lambda item: order[item[1]])


def clear_key_cache():
    """Forget every parsed key (tests; keys are found again on the next sign())."""
    with _key_cache_lock:
        _key_cache.clear()


def signed_field_names(headers):
    """The h= list for a message whose header fields are `headers` [(name, value)], as bytes."""
    present = Counter(name.decode("ascii", "replace").strip().lower() for name, _ in headers)
    names = []
    for name in SIGNED_FIELDS:
        names += [name.encode("ascii")] * (present[name] + (name in OVERSIGNED_FIELDS))
    return names


def _fold(tags):
    """`DKIM-Signature: ` and the tags, folded at LINE_WIDTH; each tag is a list of atoms that
    may be split onto separate lines (FWS is allowed between them) but are otherwise joined
    without a space. Returns (text, column the last line ends at).
    """
    text = SIGNATURE_FIELD + b":"
    column = len(text)
    for atoms in tags:
        separator = b" "
        for atom in atoms:
            if column + len(separator) + len(atom) > LINE_WIDTH:
                text += b"\r\n "
                column, separator = 1, b""
            text += separator + atom
            column += len(separator) + len(atom)
            separator = b""
    return text, column


def _fold_base64(value, column):
    """The b= value folded after a line ending at `column` (RFC 6376 §3.5 allows FWS in it)."""
    room = max(LINE_WIDTH - column, 0)
    parts = [value[:room]]
    value = value[room:]
    while value:
        parts.append(b"\r\n " + value[: LINE_WIDTH - 1])
        value = value[LINE_WIDTH - 1 :]
    return b"".join(parts)


def _signature(key, digest):
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalised header fields.
    return key.sign(digest)


def _signature_field(*, selector, algorithm, key, domain, names, headers, body_hash, timestamp):
    header_list = [name + b":" for name in names[:-1]] + [names[-1] + b";"]
    header_list[0] = b"h=" + header_list[0]
    tags = [
        [b"v=1;"],
        [b"a=" + algorithm.encode("ascii") + b";"],
        [b"c=relaxed/relaxed;"],
        [b"d=" + domain.encode("ascii") + b";"],
        [b"s=" + selector.encode("ascii") + b";"],
        [b"t=%d;" % timestamp],
        header_list,
        [b"bh=" + body_hash + b";"],
        [b"b="],
    ]
    unsigned, column = _fold(tags)
    hasher = hashlib.sha256()
    value = unsigned[len(SIGNATURE_FIELD) + 1 :]
    # dkimpy's own header selection and hashing: the field itself goes last with b= empty.
    dkimpy.hash_headers(hasher, RELAXED, headers, list(names), (SIGNATURE_FIELD, value), {})
    signature = base64.b64encode(_signature(key, hasher.digest()))
    return unsigned + _fold_base64(signature, column) + b"\r\n"


def sign(raw: bytes, *, mail_from: str, from_domain: str) -> bytes:
    """The DKIM-Signature header fields to put in front of `raw`, CRLF-terminated, or b"".

    `from_domain` is the domain of the message's From: address; it is signed for when it is
    one of our domains with active keys (an RSA and an Ed25519 signature), otherwise nothing
    is. `mail_from` (the envelope sender) only goes into the log. Never raises for a message
    it cannot parse: that is logged and the message goes unsigned.
    """
    try:
        domain_name = normalize_domain(from_domain or "")
    except AddressError:
        return b""
    keys = _signing_keys(domain_name)
    if not keys:
        return b""
    try:
        headers, body = dkimpy.rfc822_parse(raw)
        canonical_headers = RELAXED.canonicalize_headers(headers)
        body_hash = base64.b64encode(hashlib.sha256(RELAXED.canonicalize_body(body)).digest())
    except dkimpy.DKIMException as error:
        log.warning(
            "dkim not signing: unparsable message domain=%s mail_from=<%s> error=%s",
            domain_name, mail_from, str(error)[:200],
        )
        return b""
    names = signed_field_names(headers)
    timestamp = int(clock())
    return b"".join(
        _signature_field(
            selector=selector, algorithm=algorithm, key=key, domain=domain_name, names=names,
            headers=canonical_headers, body_hash=body_hash, timestamp=timestamp,
        )
        for selector, algorithm, key in keys
    )
