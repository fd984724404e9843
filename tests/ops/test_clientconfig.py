"""Client autoconfiguration read back as the clients read it: Thunderbird's config-v1.1.xml
fields, Outlook's POX Autodiscover response, an Apple profile through plistlib, and the
MTA-STS policy as RFC 8461 §3.2 lays it out."""
import plistlib
import xml.etree.ElementTree as ET

import pytest
from django.test import Client

from tests.conftest import PASSWORD

AUTODISCOVER_REQUEST = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>%s</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"""
RESPONSE_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


@pytest.fixture(autouse=True)
def production_ports(settings):
    settings.MAILSUITE_HOSTNAME = "mail.example.test"
    settings.MAILSUITE_SMTPS_PORT, settings.MAILSUITE_SUBMISSION_PORT = 465, 587
    settings.MAILSUITE_IMAPS_PORT, settings.MAILSUITE_IMAP_PORT = 993, 143
    settings.MAILSUITE_POP3S_PORT, settings.MAILSUITE_POP3_PORT = 995, 110


def servers(root, tag):
    """[(type, hostname, port, socketType, authentication, username)] as Thunderbird reads them."""
    provider = root.find("emailProvider")
    return [
        (s.get("type"), s.findtext("hostname"), int(s.findtext("port")), s.findtext("socketType"),
         s.findtext("authentication"), s.findtext("username"))
        for s in provider.findall(tag)
    ]


def test_it_gives_thunderbird_its_config_at_the_well_known_path_of_any_of_our_domains(domain, client):
    response = client.get("/.well-known/autoconfig/mail/config-v1.1.xml", HTTP_HOST="example.test")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml; charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    assert root.find("emailProvider").get("id") == "example.test"
    assert [d.text for d in root.find("emailProvider").findall("domain")] == ["example.test"]
    assert servers(root, "incomingServer") == [
        ("imap", "mail.example.test", 993, "SSL", "password-cleartext", "%EMAILADDRESS%"),
        ("imap", "mail.example.test", 143, "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
        ("pop3", "mail.example.test", 995, "SSL", "password-cleartext", "%EMAILADDRESS%"),
        ("pop3", "mail.example.test", 110, "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
    ]
    assert servers(root, "outgoingServer") == [
        ("smtp", "mail.example.test", 465, "SSL", "password-cleartext", "%EMAILADDRESS%"),
        ("smtp", "mail.example.test", 587, "STARTTLS", "password-cleartext", "%EMAILADDRESS%"),
    ]


def test_it_answers_the_autoconfig_host_with_the_domain_of_the_address_asked_about(domain, client):
    from accounts import actions

    actions.create_domain("second.test")
    actions.create_domain_alias("alias.test", "example.test")

    response = client.get(
        "/mail/config-v1.1.xml", {"emailaddress": "bob@alias.test"}, HTTP_HOST="autoconfig.second.test"
    )

    assert response.status_code == 200
    provider = ET.fromstring(response.content).find("emailProvider")
    assert provider.get("id") == "alias.test"
    assert [d.text for d in provider.findall("domain")] == ["alias.test", "example.test"]


def test_it_describes_no_domain_it_does_not_serve(domain, client, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "mail.example.test"]
    assert client.get(
        "/mail/config-v1.1.xml", {"emailaddress": "eve@elsewhere.test"}, HTTP_HOST="mail.example.test"
    ).status_code == 404
    # A Host that is not ours meets Django's usual check, on these paths as anywhere.
    assert client.get("/.well-known/autoconfig/mail/config-v1.1.xml", HTTP_HOST="elsewhere.test").status_code == 400
    assert client.get("/healthz", HTTP_HOST="autoconfig.example.test").status_code == 400


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml", "/AutoDiscover/AutoDiscover.xml"])
def test_it_answers_outlooks_autodiscover_post_with_imap_pop3_and_smtp(domain, path):
    client = Client(enforce_csrf_checks=True)  # Outlook has no CSRF token to give

    response = client.post(
        path, AUTODISCOVER_REQUEST % b"alice@example.test", content_type="text/xml", HTTP_HOST="autodiscover.example.test"
    )

    assert response.status_code == 200
    root = ET.fromstring(response.content)
    assert root.tag == "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}Autodiscover"
    account = root.find(f"{RESPONSE_NS}Response/{RESPONSE_NS}Account")
    assert account.findtext(f"{RESPONSE_NS}AccountType") == "email"
    assert account.findtext(f"{RESPONSE_NS}Action") == "settings"
    protocols = {
        p.findtext(f"{RESPONSE_NS}Type"): {child.tag.removeprefix(RESPONSE_NS): child.text for child in p}
        for p in account.findall(f"{RESPONSE_NS}Protocol")
    }
    assert set(protocols) == {"IMAP", "POP3", "SMTP"}
    assert protocols["IMAP"] | {} == {
        "Type": "IMAP", "Server": "mail.example.test", "Port": "993", "DomainRequired": "off",
        "LoginName": "alice@example.test", "SPA": "off", "SSL": "on", "Encryption": "SSL", "AuthRequired": "on",
    }
    assert (protocols["SMTP"]["Port"], protocols["SMTP"]["Encryption"]) == ("465", "SSL")
    assert protocols["SMTP"]["UsePOPAuth"] == "on"


def autodiscover_error(response):
    root = ET.fromstring(response.content)
    ns = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
    return root.findtext(f"{ns}Response/{ns}Error/{ns}ErrorCode")


def test_it_answers_autodiscover_for_other_domains_and_bad_requests_with_autodiscover_errors(domain, client):
    post = lambda body: client.post("/autodiscover/autodiscover.xml", body, content_type="text/xml", HTTP_HOST="example.test")  # noqa: E731

    assert autodiscover_error(post(AUTODISCOVER_REQUEST % b"eve@elsewhere.test")) == "601"
    assert autodiscover_error(post(b"<Autodiscover><Request/></Autodiscover>")) == "600"
    assert autodiscover_error(post(b"not xml")) == "600"
    entities = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "alice@example.test">]><a><EMailAddress>&x;</EMailAddress></a>'
    assert autodiscover_error(post(entities)) == "600"
    assert autodiscover_error(post(b"<a>" + b" " * 20000 + b"</a>")) == "600"


def test_it_gives_a_signed_in_user_an_apple_profile_with_imap_and_smtp(alice, client):
    assert client.get("/settings/apple.mobileconfig").status_code == 302  # to the sign-in page
    client.post("/login/", {"address": "alice@example.test", "password": PASSWORD})

    response = client.get("/settings/apple.mobileconfig")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert response["Content-Disposition"] == 'attachment; filename="example.test.mobileconfig"'
    profile = plistlib.loads(response.content)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    [account] = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert {k: v for k, v in account.items() if not k.startswith("Payload")} == {
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAccountDescription": "alice@example.test",
        "EmailAccountName": "Alice",
        "EmailAddress": "alice@example.test",
        "IncomingMailServerHostName": "mail.example.test",
        "IncomingMailServerPortNumber": 993,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": "alice@example.test",
        "OutgoingMailServerHostName": "mail.example.test",
        "OutgoingMailServerPortNumber": 465,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": "alice@example.test",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    # Downloaded again, the same identifiers: the device replaces the profile, not adds one.
    again = plistlib.loads(client.get("/settings/apple.mobileconfig").content)
    assert (again["PayloadUUID"], again["PayloadContent"][0]["PayloadUUID"]) == (
        profile["PayloadUUID"], account["PayloadUUID"]
    )


def test_it_serves_the_mta_sts_policy_only_when_turned_on(domain, client, settings):
    assert client.get("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.example.test").status_code == 404

    settings.MAILSUITE_MTA_STS_MODE = "enforce"
    response = client.get("/.well-known/mta-sts.txt", HTTP_HOST="mta-sts.example.test")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
