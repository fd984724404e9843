"""Fixtures for sender authentication: a loopback DNS with SPF, DKIM, DMARC and ARC records,
test keys, and senders connecting from 127.0.0.2 (allowed by sender.test's SPF) and
127.0.0.3 (allowed by nobody's).

Domains in the zone:
  sender.test      SPF ip4:127.0.0.2 -all; DMARC p=reject; DKIM keys "rsa" (RSA 2048), "ed" (Ed25519)
  mail.sender.test HELO name of 127.0.0.2: SPF "a -all", A 127.0.0.2
  soft.test        SPF ~all, DMARC p=quarantine
  relaxed.test     no SPF; DMARC p=none
  org.test         DMARC p=none sp=reject (news.org.test has no record of its own)
  pct.test         SPF -all; DMARC p=reject pct=0
  fwd.test         a mailing list / forwarder on 127.0.0.3 that ARC-seals ("arc" key)
"""
import base64
import smtplib

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from antispam import dmarc
from tests.dnsserver import DNSServer

ALLOWED_IP = "127.0.0.2"
STRANGER_IP = "127.0.0.3"


def _rsa_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def _ed25519_pair():
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed), base64.b64encode(public).decode()


class Keys:
    """Test keys made once per session (RSA generation is slow)."""

    rsa_private, rsa_public = _rsa_pair()
    ed_private, ed_public = _ed25519_pair()
    arc_private, arc_public = _rsa_pair()


def zone():
    return {
        "sender.test": {"TXT": [f"v=spf1 ip4:{ALLOWED_IP} -all"], "A": [ALLOWED_IP]},
        "mail.sender.test": {"TXT": ["v=spf1 a -all"], "A": [ALLOWED_IP]},
        "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@sender.test"]},
        "rsa._domainkey.sender.test": {"TXT": [f"v=DKIM1; k=rsa; p={Keys.rsa_public}"]},
        "ed._domainkey.sender.test": {"TXT": [f"v=DKIM1; k=ed25519; p={Keys.ed_public}"]},
        "revoked._domainkey.sender.test": {"TXT": ["v=DKIM1; k=rsa; p="]},
        "soft.test": {"TXT": [f"v=spf1 ip4:{ALLOWED_IP} ~all"]},
        "_dmarc.soft.test": {"TXT": ["v=DMARC1; p=quarantine"]},
        "relaxed.test": {"A": [ALLOWED_IP]},
        "_dmarc.relaxed.test": {"TXT": ["v=DMARC1; p=none"]},
        "org.test": {"TXT": ["v=spf1 -all"]},
        "news.org.test": {"TXT": ["v=spf1 -all"]},
        "_dmarc.org.test": {"TXT": ["v=DMARC1; p=none; sp=reject"]},
        "pct.test": {"TXT": ["v=spf1 -all"]},
        "_dmarc.pct.test": {"TXT": ["v=DMARC1; p=reject; pct=0"]},
        "fwd.test": {"TXT": [f"v=spf1 ip4:{STRANGER_IP} -all"], "A": [STRANGER_IP]},
        "arc._domainkey.fwd.test": {"TXT": [f"v=DKIM1; k=rsa; p={Keys.arc_public}"]},
    }


@pytest.fixture(autouse=True)
def dns_server(settings):
    """Every test here resolves through this server and nothing else."""
    with DNSServer(zone()) as server:
        settings.MAILSUITE_DNS_SERVERS = (server.address,)
        settings.MAILSUITE_TRUSTED_NETWORKS = ()
        yield server


@pytest.fixture(autouse=True)
def dmarc_always_samples(monkeypatch):
    """pct= sampling: 0.5 means a message is in a pct=100 or pct=60 sample but not pct=0."""
    monkeypatch.setattr(dmarc, "sampler", lambda: 0.5)


def message(*, author="Sam <sam@sender.test>", subject="Quarterly numbers", body=b"The numbers are in.\r\n", extra=b""):
    return (
        f"From: {author}\r\n".encode()
        + b"To: Alice <alice@example.test>\r\n"
        + f"Subject: {subject}\r\n".encode()
        + b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        + b"Message-ID: <n1@sender.test>\r\n"
        + extra
        + b"\r\n"
        + body
    )


def sign_rsa(raw, *, domain=b"sender.test", selector=b"rsa", **options):
    return dkimpy.sign(raw, selector, domain, Keys.rsa_private, include_headers=[b"from", b"to", b"subject", b"date"], **options) + raw


def sign_ed25519(raw, *, domain=b"sender.test", selector=b"ed"):
    return dkimpy.sign(
        raw, selector, domain, Keys.ed_private, signature_algorithm=b"ed25519-sha256",
        include_headers=[b"from", b"to", b"subject", b"date"],
    ) + raw


def send(server, raw, *, source=ALLOWED_IP, helo="mail.sender.test", mail_from="sam@sender.test",
         rcpt="alice@example.test"):
    """Send one message from `source`; returns (code, reply text) of the DATA reply."""
    client = smtplib.SMTP("127.0.0.1", server.port, local_hostname=helo, timeout=30, source_address=(source, 0))
    try:
        client.ehlo()
        code, _ = client.mail(mail_from)
        assert code == 250
        code, _ = client.rcpt(rcpt)
        assert code == 250
        code, text = client.data(raw)
        return code, text.decode()
    finally:
        client.close()
