"""DKIM: per-domain keys, their rotation, signing (checked by dkimpy's own verifier), the DNS
records to publish, and the `domain dns` / `domain dkim` commands and admin pages.

Personas: alice sends from example.test (served here, keys made by ensure_keys); mallory
writes from elsewhere.example, which is not ours. DNS is a dict built from records_for():
no network.
"""
import base64
import io
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import dkim as dkimpy
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.urls import reverse
from dkim.util import parse_tag_value

from accounts import actions
from accounts.errors import Conflict, InvalidInput, NotFound
from mta import dkim
from mta.dns_records import Record, records_for, txt_value
from mta.models import DKIMKey
from tests import datadir

pytestmark = pytest.mark.django_db

PROJECT_DIR = Path(__file__).resolve().parents[2]
HOST = "mx.example.test"
NOW = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
T = int(NOW.timestamp())  # the t= of every signature here (dkimpy refuses t= in the future)

MESSAGE = (
    b"Received: from [192.0.2.1] by mx.example.test; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: Mallory <mallory@elsewhere.example>\r\n"
    b"Subject: Lunch\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <lunch-1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"See you at noon.\r\n"
)

# RFC 8463 Appendix A.2's Ed25519 key (RFC 8032 §7.1 test 1): fixed, so outputs are exact.
RFC8463_ED25519_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_ED25519_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
# A 2048-bit RSA public key (its private half was thrown away): long enough to need two strings.
RSA_PUBLIC = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnAoIWWDuAWmo6B28Su+JmK2fjVjKZURc/5IjCnp90jIfBN7NuGpQ6VQqv"
    "VKApyrh0alAIX48idtoGiygPD6SYeX47rckRWYw8FG4MxamNnjAAcg4i080kNbLNJoqGIatcTrST/NtXIfQru37bwmYZFixMjLJ4K"
    "MO1U+T5t1CqX5jVLH7j+Fd0tM2BaCXb49bn82Rqy+wBlmHv6Tv+ppe6XH/ET72aREp8Na4ofiXUqraAcrm0BByAS7gJktfc85T/6"
    "wWBkSZz2YBvfCfXmYL/zcC7rVJXw8dZqc+8wpZVkVGn2ZzZ4V8YX3vfYdoibOMPQKYjWKy80tH6/QbNFd3RwIDAQAB"
)


# dkimpy verifies Ed25519 through PyNaCl, which mailsuite does not need (it signs with
# `cryptography`). Where PyNaCl is missing, the two calls dkimpy makes of it are served by
# `cryptography` below; everything else dkimpy's verifier does (reading the record,
# canonicalising, hashing body and header fields, picking the fields by h=) runs unchanged.


class _BadSignatureError(Exception):
    pass


class _Base64Encoder:
    @staticmethod
    def decode(data):
        return base64.b64decode(data)


class _VerifyKey:
    def __init__(self, key, encoder):
        self._key = ed25519.Ed25519PublicKey.from_public_bytes(encoder.decode(key))

    def verify(self, message, signature):
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise _BadSignatureError from None
        return message


NACL_STAND_IN = SimpleNamespace(
    signing=SimpleNamespace(VerifyKey=_VerifyKey),
    encoding=SimpleNamespace(Base64Encoder=_Base64Encoder),
    exceptions=SimpleNamespace(ValueError=ValueError, BadSignatureError=_BadSignatureError),
)


@pytest.fixture(autouse=True)
def ed25519_verification(monkeypatch):
    try:
        import nacl.signing  # noqa: F401
    except ImportError:
        monkeypatch.setattr(dkimpy, "nacl", NACL_STAND_IN, raising=False)


@pytest.fixture(autouse=True)
def pinned(monkeypatch, settings):
    """A fixed moment (selectors say 2023, t= is T), this server's name, no relay host."""
    monkeypatch.setattr(dkim, "now", lambda: NOW)
    monkeypatch.setattr(dkim, "clock", lambda: T)
    settings.MAILSUITE_HOSTNAME = HOST
    settings.MAILSUITE_RELAYHOST = ""
    dkim.clear_key_cache()


@pytest.fixture
def example():
    """example.test with its first pair of keys, active."""
    domain = actions.create_domain("example.test")
    dkim.ensure_keys(domain)
    return domain


def keyless(name):
    """A domain of ours with no DKIM key at all (whether or not creating a domain makes some)."""
    domain = actions.create_domain(name)
    DKIMKey.objects.filter(domain=domain).delete()
    return domain


def alice_signs(message=MESSAGE, from_domain="example.test"):
    return dkim.sign(message, mail_from="alice@example.test", from_domain=from_domain)


def dns_of(domain):
    """A dkimpy dnsfunc answering from the TXT records we tell the operator to publish."""
    txt = {record.name.encode(): record.text.encode() for record in records_for(domain, hostname=HOST)}

    def dnsfunc(name, timeout=5):
        return txt.get(name)

    return dnsfunc


def verifies(message, domain, idx=0):
    """dkimpy's verdict on the idx-th DKIM-Signature field of `message` (0 = the topmost)."""
    try:
        return dkimpy.DKIM(message).verify(idx=idx, dnsfunc=dns_of(domain))
    except dkimpy.DKIMException:
        return False


def fields_of(signature):
    """The DKIM-Signature fields of sign()'s output, each with its CRLF."""
    return [field for field in re.split(rb"(?=^DKIM-Signature:)", signature, flags=re.M) if field]


def tags(field):
    return parse_tag_value(field.split(b":", 1)[1])


def key_named(selector):
    return DKIMKey.objects.get(selector=selector)


# Keys -------------------------------------------------------------------------------


def test_it_makes_an_active_rsa_and_ed25519_pair_whose_keys_load():
    domain = keyless("example.test")

    keys = dkim.ensure_keys(domain)

    assert [(key.selector, key.algorithm, key.state) for key in keys] == [
        ("ms2023a", "rsa-sha256", "active"),
        ("ms2023a-ed", "ed25519-sha256", "active"),
    ]
    rsa_row, ed_row = DKIMKey.objects.get(selector="ms2023a"), DKIMKey.objects.get(selector="ms2023a-ed")
    rsa_key = serialization.load_pem_private_key(rsa_row.private_key.encode(), password=None)
    ed_key = serialization.load_pem_private_key(ed_row.private_key.encode(), password=None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 2048
    assert isinstance(ed_key, ed25519.Ed25519PrivateKey)
    # The public halves are what DNS gets: SubjectPublicKeyInfo for RSA, the bare key for Ed25519.
    spki = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(rsa_row.public_key) == spki
    assert base64.b64decode(ed_row.public_key) == raw and len(raw) == 32
    assert rsa_row.activated == NOW and rsa_row.retired is None


def test_it_leaves_a_domain_that_has_keys_as_it_is(example):
    dkim.rotate(example)
    before = sorted(DKIMKey.objects.values_list("selector", "state"))

    active = dkim.ensure_keys("Example.TEST")  # a name works too

    assert sorted(DKIMKey.objects.values_list("selector", "state")) == before
    assert [key.selector for key in active] == ["ms2023a", "ms2023a-ed"]


def test_it_refuses_keys_for_a_domain_it_does_not_serve():
    with pytest.raises(NotFound, match="^domain elsewhere.example does not exist$"):
        dkim.ensure_keys("elsewhere.example")


@pytest.mark.parametrize(
    ("n", "letters"), [(0, "a"), (1, "b"), (25, "z"), (26, "aa"), (27, "ab"), (701, "zz"), (702, "aaa")]
)
def test_it_counts_selectors_like_spreadsheet_columns(n, letters):
    assert dkim._sequence(n) == letters


def test_it_names_each_rotation_after_the_year_and_the_next_free_letter(example, monkeypatch):
    assert [key.selector for key in dkim.rotate(example)] == ["ms2023b", "ms2023b-ed"]
    assert [key.selector for key in dkim.rotate(example)] == ["ms2023c", "ms2023c-ed"]

    monkeypatch.setattr(dkim, "now", lambda: datetime(2024, 1, 1, tzinfo=UTC))
    assert [key.selector for key in dkim.rotate(example)] == ["ms2024a", "ms2024a-ed"]


def test_the_database_allows_one_selector_per_domain_and_one_active_key_per_algorithm(example):
    published_rsa = dkim.rotate(example)[0]

    with pytest.raises(IntegrityError), transaction.atomic():
        DKIMKey.objects.create(
            domain=example, selector="ms2023a", algorithm="ed25519-sha256", private_key="-", public_key="-"
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        DKIMKey.objects.filter(pk=published_rsa.pk).update(state="active")
    with pytest.raises(IntegrityError), transaction.atomic():
        DKIMKey.objects.filter(pk=published_rsa.pk).update(state="revoked")

    # Another domain has its own selectors and its own active keys.
    other = actions.create_domain("other.test")
    dkim.ensure_keys(other)
    assert DKIMKey.objects.filter(selector="ms2023a", state="active").count() == 2


def test_it_rotates_activates_retires_and_removes_pairs(example):
    published = dkim.rotate(example)
    assert [(key.selector, key.state) for key in published] == [("ms2023b", "published"), ("ms2023b-ed", "published")]
    # Published keys are in DNS but do not sign yet.
    assert {tags(field)[b"s"] for field in fields_of(alice_signs())} == {b"ms2023a", b"ms2023a-ed"}

    activated, retired = dkim.activate(example, "ms2023b-ed")  # either selector of a pair names it

    assert [key.selector for key in activated] == ["ms2023b", "ms2023b-ed"]
    assert [key.selector for key in retired] == ["ms2023a", "ms2023a-ed"]
    assert dict(DKIMKey.objects.values_list("selector", "state")) == {
        "ms2023a": "retired", "ms2023a-ed": "retired", "ms2023b": "active", "ms2023b-ed": "active",
    }
    assert key_named("ms2023a").retired == NOW and key_named("ms2023b").activated == NOW
    signed = alice_signs() + MESSAGE
    assert {tags(field)[b"s"] for field in fields_of(alice_signs())} == {b"ms2023b", b"ms2023b-ed"}
    assert verifies(signed, example, 0) and verifies(signed, example, 1)

    # Retiring the signing pair leaves the domain's mail unsigned.
    assert [key.state for key in dkim.retire(example, "ms2023b")] == ["retired", "retired"]
    assert alice_signs() == b""

    # A retired pair may sign again (a rollback) while its record is still in DNS.
    activated, retired = dkim.activate(example, "ms2023a")
    assert ([key.state for key in activated], retired) == (["active", "active"], [])
    assert key_named("ms2023a").retired is None

    assert dkim.remove(example, "ms2023b") == ["ms2023b", "ms2023b-ed"]
    assert sorted(DKIMKey.objects.values_list("selector", flat=True)) == ["ms2023a", "ms2023a-ed"]


def test_it_refuses_key_changes_that_make_no_sense(example):
    with pytest.raises(NotFound, match=r"^example.test has no DKIM key with selector 'ms1999a'$"):
        dkim.activate(example, "ms1999a")
    with pytest.raises(NotFound, match=r"^example.test has no DKIM key with selector ''$"):
        dkim.retire(example, " ")
    with pytest.raises(Conflict, match=r"^DKIM keys ms2023a, ms2023a-ed of example.test are already active$"):
        dkim.activate(example, "ms2023a")
    with pytest.raises(InvalidInput, match=r"^DKIM key ms2023a of example.test is active; retire it first$"):
        dkim.remove(example, "ms2023a")
    dkim.retire(example, "ms2023a")
    with pytest.raises(Conflict, match=r"^DKIM keys ms2023a, ms2023a-ed of example.test are already retired$"):
        dkim.retire(example, "ms2023a-ed")
    # A selector of another domain is not this domain's.
    other = actions.create_domain("other.test")
    dkim.ensure_keys(other)
    DKIMKey.objects.filter(domain=other).delete()
    with pytest.raises(NotFound):
        dkim.activate(other, "ms2023a")


# Signing ----------------------------------------------------------------------------


def test_it_signs_with_both_keys_and_dkimpy_verifies_each(example):
    signature = alice_signs()

    rsa_field, ed_field = fields_of(signature)
    assert signature.endswith(b"\r\n") and signature == rsa_field + ed_field
    expected = ((rsa_field, b"rsa-sha256", b"ms2023a"), (ed_field, b"ed25519-sha256", b"ms2023a-ed"))
    for field, algorithm, selector in expected:
        found = tags(field)
        assert (found[b"v"], found[b"a"], found[b"c"], found[b"d"], found[b"s"], found[b"t"]) == (
            b"1", algorithm, b"relaxed/relaxed", b"example.test", selector, str(T).encode()
        )
        assert b"l" not in found and b"x" not in found
        # From, To and Subject once more than present; Reply-To and Cc once though absent.
        assert re.split(rb"\s*:\s*", found[b"h"]) == [
            b"from", b"from", b"reply-to", b"to", b"to", b"cc", b"subject", b"subject",
            b"date", b"message-id", b"mime-version", b"content-type",
        ]
        assert all(len(line) <= 78 for line in field.split(b"\r\n"))
        # dkimpy's verifier, on each signature alone and as the topmost field.
        assert dkimpy.verify(field + MESSAGE, dnsfunc=dns_of(example))
    assert verifies(signature + MESSAGE, example, 0)
    assert verifies(signature + MESSAGE, example, 1)
    assert dkimpy.DKIM(signature + MESSAGE).present()


def test_the_ed25519_signature_is_exact_for_a_fixed_key_and_time():
    domain = keyless("football.example.com")
    seed = base64.b64decode(RFC8463_ED25519_SEED)
    pem = ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    DKIMKey.objects.create(
        domain=domain, selector="brisbane", algorithm="ed25519-sha256", state="active",
        private_key=pem.decode(), public_key=RFC8463_ED25519_PUBLIC,
    )
    message = (
        b"From: Joe SixPack <joe@football.example.com>\r\n"
        b"To: Suzie Q <suzie@shopping.example.net>\r\n"
        b"Subject: Is dinner ready?\r\n"
        b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
        b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
        b"\r\n"
        b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n"
    )

    signature = dkim.sign(message, mail_from="joe@football.example.com", from_domain="football.example.com")

    # Ed25519 signatures are deterministic: for a fixed key, message and t= the field is fixed.
    assert signature == (
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
        b" d=football.example.com; s=brisbane; t=1700000000; h=from:from:reply-to:to:to:\r\n"
        b" cc:subject:subject:date:message-id;\r\n"
        b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=Cvt9E+uyD/gJzoauGOne2i7Qpc\r\n"
        b" lsSaYiW/MU9eP7HpAS01ZyZCInT8n2UtItOzV+Ct6a3TIZpGeZlcTpv/3tBQ==\r\n"
    )
    assert dkimpy.verify(signature + message, dnsfunc=dns_of(domain))
    # The body hash is RFC 8463 A.3's for the same body: the body canonicalisation agrees.
    assert tags(signature)[b"bh"] == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="


def test_it_signs_the_same_bytes_the_same_way(example):
    assert alice_signs() == alice_signs()


def test_a_modified_body_or_signed_header_fails_verification(example):
    signature = alice_signs()
    tampered = {
        "body": MESSAGE.replace(b"noon", b"one"),
        "subject": MESSAGE.replace(b"Subject: Lunch", b"Subject: Dinner"),
        "a second From": b"From: Mallory <mallory@elsewhere.example>\r\n" + MESSAGE,
        "a Reply-To": MESSAGE.replace(b"Subject:", b"Reply-To: mallory@elsewhere.example\r\nSubject:"),
        "a body line at the end": MESSAGE + b"Click here.\r\n",
    }
    for what, message in tampered.items():
        assert not verifies(signature + message, example, 0), what
        assert not verifies(signature + message, example, 1), what

    # What relays do in transit does not break it: trace fields, refolding, whitespace.
    relayed = (
        b"Received: from mx.example.test by mx.elsewhere.example; Tue, 14 Nov 2023 22:13:21 +0000\r\n"
        + MESSAGE.replace(b"Subject: Lunch", b"Subject:\r\n  Lunch").replace(b"at noon.", b"at  noon.  ")
    )
    assert verifies(signature + relayed, example, 0) and verifies(signature + relayed, example, 1)


def test_it_signs_utf8_headers_and_8bit_bodies(example):
    message = (
        "From: Älice Müller <alice@example.test>\r\n"
        "To: bob@bücher.example\r\n"
        "Subject: Grüße 👋\r\n"
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
        "Message-ID: <gruesse@example.test>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Schöne Grüße, bis bald — 日本語\r\n"
    ).encode("utf-8") + b"and one Latin-1 byte: \xe9\r\n"

    signature = alice_signs(message)

    assert len(fields_of(signature)) == 2 and signature.isascii()
    assert verifies(signature + message, example, 0) and verifies(signature + message, example, 1)


def test_it_signs_messages_with_bare_line_feeds(example):
    message = MESSAGE.replace(b"\r\n", b"\n")

    signature = alice_signs(message)

    assert verifies(signature + message, example, 0) and verifies(signature + message, example, 1)


def test_it_signs_nothing_without_an_active_key_of_ours(example):
    assert dkim.sign(MESSAGE, mail_from="mallory@elsewhere.example", from_domain="elsewhere.example") == b""
    assert alice_signs(from_domain="") == b""
    assert alice_signs(from_domain="not a domain") == b""
    keyless("keyless.test")
    assert alice_signs(from_domain="keyless.test") == b""
    dkim.rotate(example)  # published only
    dkim.retire(example, "ms2023a")
    assert alice_signs() == b""


def test_it_takes_the_from_domain_in_any_form(example):
    assert len(fields_of(alice_signs(from_domain="EXAMPLE.test."))) == 2


def test_it_leaves_an_unparsable_message_unsigned_and_says_why(example, caplog):
    broken = b"From: alice@example.test\r\nthis line is no header field\r\n\r\nbody\r\n"

    with caplog.at_level(logging.WARNING, logger="mta.dkim"):
        assert alice_signs(broken) == b""

    assert "dkim not signing: unparsable message domain=example.test mail_from=<alice@example.test>" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


def test_it_parses_each_key_once_per_process(example, monkeypatch, django_assert_num_queries):
    parsed = []
    load = dkim._load_private_key
    monkeypatch.setattr(dkim, "_load_private_key", lambda pem: parsed.append(pem) or load(pem))

    alice_signs()
    alice_signs()
    assert len(parsed) == 2
    with django_assert_num_queries(1):  # which keys are active: no private key read
        alice_signs()

    # A new pair is read once when it starts signing.
    dkim.rotate(example)
    dkim.activate(example, "ms2023b")
    assert {tags(field)[b"s"] for field in fields_of(alice_signs())} == {b"ms2023b", b"ms2023b-ed"}
    alice_signs()
    assert len(parsed) == 4


# DNS records ------------------------------------------------------------------------


def fixed_keys(domain):
    """An active pair with known public keys, a published Ed25519 key and a retired RSA key."""
    for selector, algorithm, public, state, retired in (
        ("ms2023a", "rsa-sha256", RSA_PUBLIC, "active", None),
        ("ms2023a-ed", "ed25519-sha256", RFC8463_ED25519_PUBLIC, "active", None),
        ("ms2023b-ed", "ed25519-sha256", RFC8463_ED25519_PUBLIC, "published", None),
        ("ms2022a", "rsa-sha256", RSA_PUBLIC, "retired", datetime(2023, 10, 1, tzinfo=UTC)),
    ):
        DKIMKey.objects.create(
            domain=domain, selector=selector, algorithm=algorithm, public_key=public, private_key="-",
            state=state, retired=retired,
        )


RSA_TXT = '"v=DKIM1; k=rsa; p=' + RSA_PUBLIC[:237] + '" "' + RSA_PUBLIC[237:] + '"'
ED_TXT = '"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="'
EXPECTED_ZONE = [
    "example.test. 3600 IN MX 10 mx.example.test. ; mail for the domain comes to this server",
    'example.test. 3600 IN TXT "v=spf1 mx a:mx.example.test -all" ; who may send mail from the domain',
    f"ms2023a._domainkey.example.test. 3600 IN TXT {RSA_TXT} ; DKIM rsa-sha256 key ms2023a, signs now",
    f'ms2023a-ed._domainkey.example.test. 3600 IN TXT {ED_TXT} ; DKIM ed25519-sha256 key ms2023a-ed, signs now',
    f"ms2023b-ed._domainkey.example.test. 3600 IN TXT {ED_TXT}"
    " ; DKIM ed25519-sha256 key ms2023b-ed, not signing yet: publish it, then activate it",
    f"ms2022a._domainkey.example.test. 3600 IN TXT {RSA_TXT}"
    " ; DKIM rsa-sha256 key ms2022a, retired on 2023-10-01: take it out of DNS a few days after that",
    '_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"'
    " ; DMARC: what receivers do with mail failing DKIM and SPF; reports go to postmaster",
]


def test_it_lists_the_records_to_publish_exactly():
    domain = keyless("example.test")
    fixed_keys(domain)

    records = records_for(domain, hostname="MX.Example.Test.")

    assert [record.zone_line() for record in records] == EXPECTED_ZONE
    mx = Record("example.test.", "MX", "10 mx.example.test.", "mail for the domain comes to this server")
    assert records[0] == mx
    rsa_record = records[2]
    assert rsa_record.value.count('"') == 4 and len(RSA_PUBLIC) + len("v=DKIM1; k=rsa; p=") == 410
    assert rsa_record.text == "v=DKIM1; k=rsa; p=" + RSA_PUBLIC
    assert records[-1].zone_line(ttl=300, comment=False) == (
        '_dmarc.example.test. 300 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"'
    )


def test_it_names_the_relay_host_beside_the_spf_record():
    domain = keyless("example.test")

    spf = records_for(domain, hostname=HOST, relayhost="smtp.provider.example:587")[1]

    assert spf.comment == (
        "who may send mail from the domain; mail leaves through smtp.provider.example:587: "
        "add what its provider says (e.g. include:…) before -all"
    )


def test_it_lists_an_idn_domain_in_its_ascii_form():
    domain = keyless("bücher.example")

    names = [record.name for record in records_for(domain, hostname=HOST)]

    assert names == ["xn--bcher-kva.example.", "xn--bcher-kva.example.", "_dmarc.xn--bcher-kva.example."]


def test_it_refuses_a_server_name_that_cannot_go_in_dns():
    domain = keyless("example.test")

    with pytest.raises(InvalidInput, match=r"^the server name 'localhost' cannot go in DNS .*MAILSUITE_HOSTNAME"):
        records_for(domain, hostname="localhost")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", '""'),
        ("a" * 255, '"' + "a" * 255 + '"'),
        ("a" * 256, '"' + "a" * 255 + '" "a"'),
        ("b" * 600, '"' + "b" * 255 + '" "' + "b" * 255 + '" "' + "b" * 90 + '"'),
        ('say "hi" \\ bye', '"say \\"hi\\" \\\\ bye"'),
    ],
)
def test_it_cuts_txt_text_into_quoted_strings_of_at_most_255_bytes(text, value):
    assert txt_value(text) == value
    assert Record("x.", "TXT", value, "").text == text


# Command line -----------------------------------------------------------------------


def run(*args, verbosity=1):
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr, verbosity=verbosity)
    return stdout.getvalue(), stderr.getvalue()


def refused(*args):
    with pytest.raises(CommandError) as info:
        run(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_it_prints_the_dns_records_in_zone_file_form():
    fixed_keys(keyless("example.test"))

    out, err = run("domain", "dns", "Example.Test")

    assert out.splitlines() == EXPECTED_ZONE and err == ""
    bare, _ = run("domain", "dns", "example.test", verbosity=0)
    assert bare.splitlines() == [line.split(" ; ")[0] for line in EXPECTED_ZONE]
    other, _ = run("domain", "dns", "example.test", "--hostname", "mail.example.net")
    assert other.splitlines()[0].startswith("example.test. 3600 IN MX 10 mail.example.net. ; ")


def test_it_warns_when_the_dns_records_have_no_dkim_key():
    keyless("example.test")

    out, err = run("domain", "dns", "example.test")

    assert len(out.splitlines()) == 3
    assert err == "warning: example.test has no DKIM keys: make them with manage.py domain dkim example.test --rotate\n"


def test_it_refuses_dns_records_for_an_unknown_domain_or_a_local_server_name(settings):
    assert refused("domain", "dns", "nowhere.example") == "domain nowhere.example does not exist"
    keyless("example.test")
    settings.MAILSUITE_HOSTNAME = "localhost"
    assert refused("domain", "dns", "example.test") == (
        "the server name 'localhost' cannot go in DNS ('localhost' is not a fully qualified domain name); "
        "set MAILSUITE_HOSTNAME to its public name"
    )


def test_it_lists_and_changes_dkim_keys_from_the_command_line(example):
    out, err = run("domain", "dkim", "example.test")
    assert out.splitlines() == [
        "ms2023a     rsa-sha256      active  created " + f"{key_named('ms2023a').created:%Y-%m-%d}",
        "ms2023a-ed  ed25519-sha256  active  created " + f"{key_named('ms2023a-ed').created:%Y-%m-%d}",
    ]
    assert err == ""

    out, _ = run("domain", "dkim", "example.test", "--rotate")
    assert out == (
        "made DKIM keys ms2023b, ms2023b-ed for example.test, not signing yet: publish their records "
        "(manage.py domain dns example.test), then activate them with --activate ms2023b\n"
    )
    listed, _ = run("domain", "dkim", "example.test")
    assert [line.split()[:3] for line in listed.splitlines()] == [
        ["ms2023b", "rsa-sha256", "published"],
        ["ms2023b-ed", "ed25519-sha256", "published"],
        ["ms2023a", "rsa-sha256", "active"],
        ["ms2023a-ed", "ed25519-sha256", "active"],
    ]

    out, _ = run("domain", "dkim", "example.test", "--activate", "ms2023b")
    assert out == (
        "example.test signs with DKIM keys ms2023b, ms2023b-ed now; "
        "retired ms2023a, ms2023a-ed (keep their DNS records a few days longer)\n"
    )

    out, err = run("domain", "dkim", "example.test", "--retire", "ms2023b")
    assert out == "retired DKIM keys ms2023b, ms2023b-ed of example.test; remove them with --remove once out of DNS\n"
    assert err == "warning: example.test has no active DKIM key: its mail goes out unsigned\n"

    out, _ = run("domain", "dkim", "example.test", "--remove", "ms2023a-ed")
    assert out == "removed DKIM keys ms2023a, ms2023a-ed of example.test\n"
    assert sorted(DKIMKey.objects.values_list("selector", flat=True)) == ["ms2023b", "ms2023b-ed"]


def test_it_refuses_bad_dkim_requests_with_one_line(example):
    assert refused("domain", "dkim", "nowhere.example") == "domain nowhere.example does not exist"
    assert refused("domain", "dkim", "example.test", "--activate", "ms1999a") == (
        "example.test has no DKIM key with selector 'ms1999a'"
    )
    assert refused("domain", "dkim", "example.test", "--activate", "ms2023a") == (
        "DKIM keys ms2023a, ms2023a-ed of example.test are already active"
    )
    assert refused("domain", "dkim", "example.test", "--remove", "ms2023a") == (
        "DKIM key ms2023a of example.test is active; retire it first"
    )
    assert "not allowed with argument" in refused("domain", "dkim", "example.test", "--rotate", "--retire", "ms2023a")
    assert DKIMKey.objects.count() == 2


def test_it_warns_when_a_domain_has_no_dkim_keys():
    keyless("example.test")

    out, err = run("domain", "dkim", "example.test")

    assert (out, err) == ("", "warning: example.test has no DKIM keys: make them with --rotate\n")


@pytest.mark.sqlite_only  # manage.py runs on a data dir and SQLite file of its own in either pass
def test_the_commands_exit_non_zero_with_one_line_on_failure(tmp_path):
    env = datadir.child_env(datadir.prepared_data_dir(tmp_path, *datadir.ALICE_AT_EXAMPLE), MAILSUITE_HOSTNAME="localhost")

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120
        )


    unknown = manage("domain", "dkim", "example.test", "--activate", "nope")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "CommandError: example.test has no DKIM key with selector 'nope'\n"

    local = manage("domain", "dns", "example.test")
    assert (local.returncode, local.stdout) == (1, "")
    assert local.stderr.startswith("CommandError: the server name 'localhost' cannot go in DNS")
    assert local.stderr.count("\n") == 1

    named = manage("domain", "-v", "0", "dns", "example.test", "--hostname", "mx.example.test")
    assert named.returncode == 0
    assert named.stdout.splitlines()[0] == "example.test. 3600 IN MX 10 mx.example.test."

    both = manage("domain", "dkim", "example.test", "--rotate", "--retire", "x")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


# Admin ------------------------------------------------------------------------------


def test_the_admin_lists_keys_without_their_private_halves(admin_client, example):
    dkim.rotate(example)
    pem_body = key_named("ms2023a").private_key.splitlines()[1]

    listing = admin_client.get(reverse("admin:mta_dkimkey_changelist"), {"domain__id__exact": example.pk})
    page = admin_client.get(reverse("admin:mta_dkimkey_change", args=[key_named("ms2023a").pk]))

    for response in (listing, page):
        assert response.status_code == 200
        text = response.content.decode()
        assert "PRIVATE KEY" not in text and pem_body not in text
    listed = listing.content.decode()
    assert all(selector in listed for selector in ("ms2023a", "ms2023a-ed", "ms2023b", "ms2023b-ed"))
    assert "v=DKIM1; k=rsa; p=" + key_named("ms2023a").public_key[:100] in page.content.decode()
    # Looking only: nothing to add or change here.
    assert admin_client.get(reverse("admin:mta_dkimkey_add")).status_code == 403


def test_the_admin_shows_a_domains_dns_records_as_text(admin_client):
    domain = keyless("example.test")
    fixed_keys(domain)

    response = admin_client.get(reverse("admin:mta_dkimkey_dns", args=[domain.pk]))

    assert response.status_code == 200 and response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode().splitlines() == EXPECTED_ZONE
    assert admin_client.get(reverse("admin:mta_dkimkey_dns", args=[domain.pk + 1000])).status_code == 404


def test_the_dns_page_needs_an_admin_login(client):
    domain = keyless("example.test")

    response = client.get(reverse("admin:mta_dkimkey_dns", args=[domain.pk]))

    assert response.status_code == 302 and "/login/" in response["Location"]
