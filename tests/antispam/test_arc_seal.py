"""ARC sealing of mail we forward: the seal verifies, carries our results, and continues a chain."""
import dkim as dkimpy
import pytest

from antispam import arc
from mta import forwarding
from mta.headers import field_values
from tests.antispam.conftest import message, send, sign_rsa

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def our_keys(dns_server, domain, settings):
    """example.test has DKIM keys, published; we are mx.example.test."""
    from mta import dkim, dns_records

    settings.MAILSUITE_HOSTNAME = "mx.example.test"
    dkim.ensure_keys(domain)
    for record in dns_records.records_for(domain, hostname="mx.example.test"):
        if "_domainkey" in record.name:
            dns_server.set(record.name, "TXT", [record.text])


def chain(raw):
    status, sets, reason = dkimpy.ARC(raw).verify(dnsfunc=arc.DKIMKeyLookup())
    return status, sorted((s["instance"], s["as-domain"]) for s in sets), reason


def test_it_seals_forwarded_mail_with_our_results(our_keys):
    received = b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=sender.test;\r\n\tarc=none\r\n" + message()
    sealed = forwarding.outgoing_bytes(received, srs_sender="SRS0=abcd=XY=sender.test=sam@mx.example.test")
    assert sealed.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.test;")
    assert b"ARC-Authentication-Results: i=1; mx.example.test;" in sealed
    assert chain(sealed)[:2] == (dkimpy.CV_Pass, [(1, b"example.test")])


def test_it_leaves_mail_that_is_not_forwarded_alone(our_keys):
    raw = b"Authentication-Results: mx.example.test; arc=none\r\n" + message()
    assert forwarding.outgoing_bytes(raw, srs_sender="") == raw


def test_it_does_not_seal_without_a_key_or_our_results(dns_server, db, settings):
    settings.MAILSUITE_HOSTNAME = "mx.example.test"
    raw = b"Authentication-Results: mx.example.test; arc=none\r\n" + message()
    assert arc.seal(raw) == raw  # no key for example.test


def test_received_mail_forwarded_by_a_redirect_leaves_sealed(our_keys, smtp_server):
    """End to end: SMTP in from sender.test, carol's mail is redirected elsewhere, the queued copy is sealed."""
    from accounts import actions
    from mailstore.actions import read_blob
    from mta.models import QueuedMessage

    actions.create_redirect("carol@example.test", "carol@elsewhere.test")
    code, _ = send(smtp_server, sign_rsa(message()), rcpt="carol@example.test")
    assert code == 250
    queued = QueuedMessage.objects.get()
    assert queued.srs_sender.startswith("SRS0=")
    sealed = forwarding.outgoing_bytes(read_blob(queued.blob), srs_sender=queued.srs_sender)
    status, sets, _ = chain(sealed)
    assert (status, sets) == (dkimpy.CV_Pass, [(1, b"example.test")])
    (results,) = field_values(sealed, "ARC-Authentication-Results")
    assert results.startswith("i=1; mx.example.test;") and "dmarc=pass" in results
