"""Sender authentication over real loopback SMTP: SPF, DKIM, DMARC, ARC and the
Authentication-Results field, from senders at 127.0.0.2 and 127.0.0.3."""
import ipaddress

import dkim as dkimpy
import pytest

from mailstore.models import Message
from mta.headers import field_values
from tests.antispam.conftest import ALLOWED_IP, STRANGER_IP, Keys, message, send, sign_ed25519, sign_rsa
from tests.conftest import inbox, message_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def stored(account, folder="INBOX"):
    rows = list(Message.objects.filter(folder__account=account, folder__name=folder).order_by("uid"))
    return [message_bytes(row) for row in rows]


def results(raw):
    """Our one Authentication-Results field (others' may follow it)."""
    values = field_values(raw, "Authentication-Results")
    ours = [value for value in values if value.lower().startswith("mx.example.test;")]
    assert len(ours) == 1 and values[0] == ours[0], values
    return ours[0]


def test_it_records_spf_dkim_and_dmarc_passes(smtp_server, alice):
    code, _ = send(smtp_server, sign_rsa(message()))
    assert code == 250
    (raw,) = stored(alice)
    header = results(raw)
    assert header.startswith("mx.example.test;")
    assert "spf=pass smtp.mailfrom=sender.test;" in header
    assert "spf=pass smtp.helo=mail.sender.test;" in header
    assert "dkim=pass header.d=sender.test header.s=rsa header.a=rsa-sha256 header.b=" in header
    assert "dmarc=pass (p=REJECT dis=NONE) header.from=sender.test;" in header
    assert header.endswith(f"arc=none smtp.remote-ip={ALLOWED_IP}")


def test_it_passes_dmarc_on_an_aligned_ed25519_signature_when_spf_fails(smtp_server, alice):
    code, _ = send(smtp_server, sign_ed25519(message()), source=STRANGER_IP, helo="stranger.example")
    assert code == 250
    header = results(stored(alice)[0])
    assert "spf=fail smtp.mailfrom=sender.test;" in header
    assert "dkim=pass header.d=sender.test header.s=ed header.a=ed25519-sha256" in header
    assert "dmarc=pass" in header


def test_it_rejects_at_data_what_dmarc_p_reject_refuses(smtp_server, alice):
    code, text = send(smtp_server, message(), source=STRANGER_IP, helo="stranger.example")
    assert (code, text) == (
        550, "5.7.1 Rejected by the DMARC policy of sender.test: the message has no aligned SPF or DKIM pass",
    )
    assert inbox(alice) == []


def test_it_rejects_a_broken_signature_under_p_reject(smtp_server, alice):
    signed = sign_rsa(message()).replace(b"The numbers are in.", b"The numbers are out.")
    code, text = send(smtp_server, signed, source=STRANGER_IP, helo="stranger.example")
    assert code == 550 and text.startswith("5.7.1 Rejected by the DMARC policy of sender.test")


def test_it_files_dmarc_quarantine_into_junk(smtp_server, alice):
    code, _ = send(smtp_server, message(author="Sue <sue@soft.test>"), source=STRANGER_IP, mail_from="sue@soft.test",
                   helo="stranger.example")
    assert code == 250
    assert stored(alice) == []
    (raw,) = stored(alice, "Junk")
    header = results(raw)
    assert "spf=softfail smtp.mailfrom=soft.test" in header
    assert "dmarc=fail (p=QUARANTINE dis=QUARANTINE) header.from=soft.test" in header


def test_it_applies_the_subdomain_policy_sp(smtp_server, alice):
    code, text = send(smtp_server, message(author="n@news.org.test"), mail_from="n@news.org.test")
    assert code == 550 and "DMARC policy of news.org.test" in text


def test_it_softens_the_policy_for_messages_outside_pct(smtp_server, alice):
    code, _ = send(smtp_server, message(author="p@pct.test"), mail_from="p@pct.test")
    assert code == 250
    (raw,) = stored(alice, "Junk")
    assert "dmarc=fail (p=REJECT dis=QUARANTINE) header.from=pct.test" in results(raw)


def test_it_delivers_dmarc_p_none_failures_and_says_so(smtp_server, alice):
    code, _ = send(smtp_server, message(author="r@relaxed.test"), source=STRANGER_IP, mail_from="r@relaxed.test",
                   helo="stranger.example")
    assert code == 250
    header = results(stored(alice)[0])
    assert "spf=none smtp.mailfrom=relaxed.test" in header
    assert "dmarc=fail (p=NONE dis=NONE) header.from=relaxed.test" in header


def test_it_reports_temperror_when_dns_fails(smtp_server, alice, dns_server):
    dns_server.fail("sender.test")
    dns_server.fail("_dmarc.sender.test")
    code, _ = send(smtp_server, message(), source=STRANGER_IP, helo="stranger.example")
    assert code == 250  # no policy could be read, so none is applied
    header = results(stored(alice)[0])
    assert "spf=temperror smtp.mailfrom=sender.test" in header
    assert "dmarc=temperror header.from=sender.test" in header


def test_it_removes_forged_authentication_results_claiming_our_id(smtp_server, alice):
    forged = (
        b"Authentication-Results: mx.example.test; dmarc=pass header.from=sender.test\r\n"
        b"Authentication-Results: (comment) MX.EXAMPLE.TEST;\r\n\tspf=pass smtp.mailfrom=sender.test\r\n"
        b"Authentication-Results: lists.other.test; dkim=pass header.d=sender.test\r\n"
    )
    code, _ = send(smtp_server, forged + sign_rsa(message()))
    assert code == 250
    (raw,) = stored(alice)
    values = field_values(raw, "Authentication-Results")
    assert len(values) == 2
    assert values[0].startswith("mx.example.test;\tspf=pass") or values[0].startswith("mx.example.test;")
    assert "dmarc=pass (p=REJECT" in values[0]
    assert values[1] == "lists.other.test; dkim=pass header.d=sender.test"


def test_it_gives_loopback_no_special_treatment(smtp_server, alice):
    code, text = send(smtp_server, message(), source="127.0.0.1", helo="localhost")
    assert code == 550 and "DMARC" in text


@pytest.fixture
def stranger_trusted(settings):
    """127.0.0.3 in MAILSUITE_TRUSTED_NETWORKS (before the server starts: it reads the setting then)."""
    settings.MAILSUITE_TRUSTED_NETWORKS = (ipaddress.ip_network(f"{STRANGER_IP}/32"),)


def test_it_does_not_check_trusted_networks_but_still_removes_forgeries(stranger_trusted, smtp_server, alice):
    forged = b"Authentication-Results: mx.example.test; dmarc=pass\r\n"
    code, _ = send(smtp_server, forged + message(), source=STRANGER_IP, helo="stranger.example")
    assert code == 250
    assert field_values(stored(alice)[0], "Authentication-Results") == []


def arc_forwarded(*, sealer=b"fwd.test"):
    """sender.test's signed message as a mailing list at fwd.test passes it on: the subject
    gets a tag (which breaks the DKIM signature), then the list records what it saw and seals."""
    original = sign_rsa(message())
    changed = original.replace(b"Subject: Quarterly numbers", b"Subject: [team] Quarterly numbers")
    seen = (
        b"Authentication-Results: fwd.test; spf=pass smtp.mailfrom=sender.test;\r\n"
        b"\tdkim=pass header.d=sender.test; dmarc=pass header.from=sender.test; arc=none\r\n"
    )
    with_results = seen + changed
    arc_set = dkimpy.arc_sign(with_results, b"arc", sealer, Keys.arc_private, b"fwd.test")
    return b"".join(arc_set) + with_results


def test_it_accepts_what_a_trusted_arc_forwarder_vouches_for(smtp_server, alice, settings):
    settings.MAILSUITE_ARC_TRUSTED_SEALERS = ("fwd.test",)
    code, _ = send(smtp_server, arc_forwarded(), source=STRANGER_IP, helo="fwd.test")
    assert code == 250
    header = results(stored(alice)[0])
    assert "dkim=fail (signature did not verify) header.d=sender.test" in header
    assert "dmarc=fail (p=REJECT dis=REJECT; policy overridden: trusted ARC sealer fwd.test)" in header
    assert f"arc=pass (sealed by fwd.test) smtp.remote-ip={STRANGER_IP}" in header


def test_it_applies_dmarc_when_the_arc_sealer_is_not_trusted(smtp_server, alice, settings):
    settings.MAILSUITE_ARC_TRUSTED_SEALERS = ("other.test",)
    code, text = send(smtp_server, arc_forwarded(), source=STRANGER_IP, helo="fwd.test")
    assert code == 550 and "DMARC" in text
