"""The operator's admin pages: the dashboard's numbers and warnings, a domain's DNS page."""
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mta import queue
from ops import dashboard
from tests.dnsserver import DNSServer

HOST = "mail.example.test"
IP = "127.0.0.2"


def certificate(path, *, days):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days + 1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@pytest.fixture
def server_dns(settings, tmp_path):
    """This server's name, address and reverse DNS published right; a good certificate."""
    with DNSServer({
        HOST: {"A": [IP]},
        "2.0.0.127.in-addr.arpa": {"PTR": [HOST + "."]},
        "bl.test": {"TXT": ["a block list"]},
    }, ttl=0) as dns:
        settings.MAILSUITE_DNS_SERVERS = [dns.address]
        settings.MAILSUITE_HOSTNAME = HOST
        settings.MAILSUITE_DNSBL_ZONES = (("bl.test", 10),)
        settings.MAILSUITE_TLS_CERT = certificate(tmp_path / "cert.pem", days=300)
        yield dns


def warnings_of(response):
    return [(w.topic, w.text) for w in response.context["summary"]["warnings"]]


def test_the_dashboard_shows_no_warning_when_all_is_well(admin_client, server_dns, domain):
    response = admin_client.get("/admin/ops/")

    assert response.status_code == 200
    assert warnings_of(response) == []
    assert "None: the certificate, this server's DNS, the queue and the block lists look fine." in response.content.decode()
    assert response.context["summary"]["queue"]["waiting"] == {"queued": 0, "deferred": 0, "held": 0}


def test_the_dashboard_warns_of_an_expiring_certificate_a_listed_ip_and_old_mail(
    admin_client, server_dns, alice, settings, tmp_path, monkeypatch
):
    from accounts.resolve import Resolution
    from mta import inbound

    settings.MAILSUITE_TLS_CERT = certificate(tmp_path / "soon.pem", days=5)
    server_dns.set("2.0.0.127.bl.test", "A", ["127.0.0.2"])
    resolution = Resolution(address="friend@faraway.test", external=["friend@faraway.test"])
    assert inbound.accept_message(
        b"Subject: out\r\n\r\nhi\r\n", mail_from="alice@example.test", resolutions=[resolution], client_ip="127.0.0.1",
    ).startswith("250 ")
    later = dashboard.now() + datetime.timedelta(hours=3)
    monkeypatch.setattr(dashboard, "now", lambda: later)
    queue.record_sweep(at=later)  # the sweep runs: only the mail is old (tests/ops/test_queue_sweep.py)

    found = warnings_of(admin_client.get("/admin/ops/"))

    assert [topic for topic, _ in found] == ["certificate", "queue", "blocklist"]
    assert found[0][1].startswith("the TLS certificate expires in 4 days (")
    assert found[1][1] == "the oldest message has waited 3.0 hours for delivery"
    assert found[2][1].startswith(f"block list bl.test for {IP}: wrong. {IP} is listed on bl.test")


def test_the_dashboard_warns_when_the_server_name_cannot_be_in_dns(admin_client, db, settings, tmp_path):
    settings.MAILSUITE_HOSTNAME = "localhost"
    settings.MAILSUITE_TLS_CERT = str(tmp_path / "none.pem")

    found = warnings_of(admin_client.get("/admin/ops/"))

    assert found[0] == ("certificate", f"cannot read the certificate {tmp_path / 'none.pem'}: "
                                       f"[Errno 2] No such file or directory: '{tmp_path / 'none.pem'}'")
    assert found[1][0] == "dns" and "set MAILSUITE_HOSTNAME to its public name" in found[1][1]


def test_a_domains_dns_page_lists_each_finding_and_the_dashboard_remembers_its_problems(
    admin_client, server_dns, domain
):
    response = admin_client.get("/admin/ops/dns/example.test/")

    assert response.status_code == 200
    report = response.context["report"]
    assert {f.what: f.status for f in report.server} == {
        f"address of {HOST}": "ok", f"PTR {IP}": "ok", f"block list bl.test for {IP}": "ok",
    }
    assert {f.status for f in report.records} == {"missing"}
    page = response.content.decode()
    assert '<tr class="dns-missing"><th>MX</th><td>missing</td>' in page
    assert "example.test. 3600 IN MX 10 mail.example.test." in response.context["zone"]

    found = warnings_of(admin_client.get("/admin/ops/"))
    assert found and found[0][0] == "dns" and found[0][1].startswith("example.test: MX: missing, SPF: missing")
    assert admin_client.get("/admin/ops/dns/", {"domain": "Example.TEST"})["Location"] == "/admin/ops/dns/example.test/"


def test_the_pages_are_for_staff_and_the_dashboard_for_superusers(client, admin_client, django_user_model, server_dns, domain):
    assert client.get("/admin/ops/")["Location"].startswith("/admin/login/")
    staff = django_user_model.objects.create_user("staff", password="pw-staff-1234", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/ops/").status_code == 403
    assert client.get("/admin/ops/dns/example.test/").status_code == 403  # not a domain they administer
    assert admin_client.get("/admin/ops/dns/nowhere.test/").status_code == 403
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/ops/"' in index
