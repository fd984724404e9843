"""TLS: self-signed pair on first start, hot reload of a renewed certificate, `tls status`."""
import io
import socket
import ssl

import pytest
from cryptography import x509
from django.core.management import call_command

from mailsuite.lib import tls
from tests.conftest import smtp_servers


def peer_common_name(port, *, starttls=False):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls:
            reader = raw.makefile("rb")
            reader.readline()
            raw.sendall(b"EHLO t.test\r\n")
            while reader.readline()[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"220 ")
        with context.wrap_socket(raw) as wrapped:
            cert = x509.load_der_x509_certificate(wrapped.getpeercert(binary_form=True))
    return cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value


@pytest.mark.django_db(transaction=True)
def test_a_renewed_certificate_is_used_without_a_restart(tmp_path, settings, monkeypatch):
    monkeypatch.setattr(tls, "RELOAD_CHECK_SECONDS", 0)
    settings.MAILSUITE_TLS_CERT = str(tmp_path / "cert.pem")
    settings.MAILSUITE_TLS_KEY = str(tmp_path / "key.pem")
    tls.ensure_certificate(settings.MAILSUITE_TLS_CERT, settings.MAILSUITE_TLS_KEY, "old.example.test")
    with smtp_servers("smtps", "smtp") as servers:
        assert peer_common_name(servers.ports["smtps"]) == "old.example.test"
        assert peer_common_name(servers.ports["smtp"], starttls=True) == "old.example.test"
        renewed = tmp_path / "renewed"
        tls.ensure_certificate(renewed / "cert.pem", renewed / "key.pem", "new.example.test")
        (renewed / "cert.pem").replace(settings.MAILSUITE_TLS_CERT)
        (renewed / "key.pem").replace(settings.MAILSUITE_TLS_KEY)
        assert peer_common_name(servers.ports["smtps"]) == "new.example.test"
        assert peer_common_name(servers.ports["smtp"], starttls=True) == "new.example.test"


def test_a_broken_renewal_keeps_the_previous_certificate(tmp_path, caplog):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.ensure_certificate(cert, key, "mail.example.test")
    provider = tls.TLSContextProvider(cert, key, check_interval=0)
    before = provider.current()
    cert.write_text("-----BEGIN CERTIFICATE-----\nhalf written")
    assert provider.current() is before
    assert "could not reload the TLS certificate" in caplog.text


def test_the_self_signed_pair_names_the_host(tmp_path):
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert tls.ensure_certificate(cert, key, "mail.example.test") is True
    assert tls.ensure_certificate(cert, key, "mail.example.test") is False
    info = tls.certificate_info(cert)
    assert info["subject"] == "CN=mail.example.test"
    assert "mail.example.test" in info["san"] and info["self_signed"]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    context = tls.server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_tls_status_prints_subject_names_and_expiry(tmp_path, settings):
    settings.MAILSUITE_TLS_CERT = str(tmp_path / "cert.pem")
    settings.MAILSUITE_TLS_KEY = str(tmp_path / "key.pem")
    settings.MAILSUITE_HOSTNAME = "mail.example.test"
    out = io.StringIO()
    call_command("tls", "ensure", stdout=out)
    call_command("tls", "status", stdout=out)
    text = out.getvalue()
    assert "subject:  CN=mail.example.test" in text
    assert "names:    mail.example.test, localhost, 127.0.0.1, ::1" in text
    assert "valid:    " in text and " to " in text


def test_daemons_starting_together_make_one_matching_pair(tmp_path):
    """runmail starts SMTP, IMAP and POP3 at once on a new data dir: every one of them
    must load a key that matches the certificate."""
    import subprocess
    import sys

    script = (
        "import sys, ssl\n"
        "from mailsuite.lib.tls import ensure_certificate\n"
        "ensure_certificate(sys.argv[1], sys.argv[2], 'mx.example.test')\n"
        "ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(sys.argv[1], sys.argv[2])\n"
    )
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    processes = [subprocess.Popen([sys.executable, "-c", script, str(cert), str(key)]) for _ in range(12)]
    assert [p.wait(60) for p in processes] == [0] * 12
