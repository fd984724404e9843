"""What mail clients are told so they configure themselves: Thunderbird autoconfig, Outlook
Autodiscover (POX), an Apple configuration profile, and the MTA-STS policy for senders.

Every document names this server (MAILSUITE_HOSTNAME) and the ports it is configured to
listen on, whichever of our domains it is asked about: one server serves them all. Implicit
TLS comes first, STARTTLS second (RFC 8314 §3.3 and §5.1 prefer it); no client is ever told
to log in without TLS. The login name is the whole address.

Implementation notes:
- Pure functions: they take the settings-derived Server and return bytes; views (ops.views)
  find the domain and pick the document.
- XML is built with ElementTree, so an address or a domain can never break out of its
  element; Autodiscover requests are parsed with entity declarations refused and a size
  bound (the body comes from anyone on the internet).
"""
import hashlib
import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from django.conf import settings

from mailsuite.lib.addresses import display_domain

IMPLICIT_TLS = "tls"
STARTTLS = "starttls"

AUTODISCOVER_REQUEST_MAX = 16 * 1024  # a real request is a few hundred bytes
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# RFC 8461 §3.2: max_age is in seconds, at most 31557600; a week lets a changed policy
# reach senders within days while riding out an outage of the policy host.
MTA_STS_MAX_AGE = 604800


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "imap", "pop3" or "smtp" (submission)
    port: int
    security: str  # IMPLICIT_TLS or STARTTLS


@dataclass(frozen=True)
class Server:
    hostname: str
    endpoints: tuple  # of Endpoint, preferred first within each protocol

    def of(self, protocol):
        return [e for e in self.endpoints if e.protocol == protocol]


def server():
    """This server as clients reach it, from MAILSUITE_HOSTNAME and the port settings."""
    s = settings
    return Server(
        hostname=s.MAILSUITE_HOSTNAME,
        endpoints=(
            Endpoint("imap", s.MAILSUITE_IMAPS_PORT, IMPLICIT_TLS),
            Endpoint("imap", s.MAILSUITE_IMAP_PORT, STARTTLS),
            Endpoint("pop3", s.MAILSUITE_POP3S_PORT, IMPLICIT_TLS),
            Endpoint("pop3", s.MAILSUITE_POP3_PORT, STARTTLS),
            Endpoint("smtp", s.MAILSUITE_SMTPS_PORT, IMPLICIT_TLS),  # RFC 8314 §3.3
            Endpoint("smtp", s.MAILSUITE_SUBMISSION_PORT, STARTTLS),  # RFC 6409
        ),
    )


def _xml(root):
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _sub(parent, tag, text=None, **attributes):
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = str(text)
    return element


# Thunderbird --------------------------------------------------------------------------

_THUNDERBIRD_SOCKET = {IMPLICIT_TLS: "SSL", STARTTLS: "STARTTLS"}


def thunderbird(server, domain_names):
    """Thunderbird's config-v1.1.xml (the "autoconfig" format) for a provider serving
    `domain_names` (ASCII, the one asked about first)."""
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", id=domain_names[0])
    for name in domain_names:
        _sub(provider, "domain", name)
    _sub(provider, "displayName", f"{display_domain(domain_names[0])} mail")
    _sub(provider, "displayShortName", display_domain(domain_names[0]))
    for endpoint in server.of("imap") + server.of("pop3"):
        _thunderbird_server(provider, "incomingServer", endpoint, server.hostname)
    for endpoint in server.of("smtp"):
        _thunderbird_server(provider, "outgoingServer", endpoint, server.hostname)
    return _xml(root)


def _thunderbird_server(parent, tag, endpoint, hostname):
    element = _sub(parent, tag, type=endpoint.protocol)
    _sub(element, "hostname", hostname)
    _sub(element, "port", endpoint.port)
    _sub(element, "socketType", _THUNDERBIRD_SOCKET[endpoint.security])
    _sub(element, "authentication", "password-cleartext")  # inside TLS only
    _sub(element, "username", "%EMAILADDRESS%")


# Outlook Autodiscover (POX) -------------------------------------------------------------


class AutodiscoverRequestError(ValueError):
    """An Autodiscover request we cannot read; the message is for logs."""


def autodiscover_address(body):
    """The EMailAddress of a POX Autodiscover request, or AutodiscoverRequestError."""
    if len(body) > AUTODISCOVER_REQUEST_MAX:
        raise AutodiscoverRequestError("request too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise AutodiscoverRequestError("document type declarations are refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as error:
        raise AutodiscoverRequestError(f"not XML: {error}") from None
    for element in root.iter():
        if element.tag.rpartition("}")[2] == "EMailAddress" and (element.text or "").strip():
            return element.text.strip()
    raise AutodiscoverRequestError("no EMailAddress in the request")


def autodiscover(server, address):
    """The POX Autodiscover response for `address`: IMAP and SMTP over implicit TLS."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = _sub(root, "Response", xmlns=AUTODISCOVER_OUTLOOK_NS)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for protocol in ("imap", "pop3", "smtp"):
        endpoint = server.of(protocol)[0]
        element = _sub(account, "Protocol")
        _sub(element, "Type", protocol.upper())
        _sub(element, "Server", server.hostname)
        _sub(element, "Port", endpoint.port)
        _sub(element, "DomainRequired", "off")
        _sub(element, "LoginName", address)
        _sub(element, "SPA", "off")  # no NTLM: the password goes inside TLS
        # SSL on with Encryption says which TLS: "SSL" is implicit, "TLS" is STARTTLS.
        _sub(element, "SSL", "on")
        _sub(element, "Encryption", "SSL" if endpoint.security == IMPLICIT_TLS else "TLS")
        _sub(element, "AuthRequired", "on")
        if protocol == "smtp":
            _sub(element, "UsePOPAuth", "on")  # the same login as the incoming server
    return _xml(root)


def autodiscover_error(code, message):
    """An Autodiscover error response: 600 "Invalid Request", 601 "Provider not found"."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = _sub(root, "Response")
    error = _sub(response, "Error", Id=str(uuid.uuid4().int % 10**10))
    _sub(error, "ErrorCode", code)
    _sub(error, "Message", message)
    _sub(error, "DebugData")
    return _xml(root)


# Apple configuration profile -----------------------------------------------------------


def mobileconfig(server, *, address, display_name=""):
    """An unsigned .mobileconfig with one IMAP account (IMAP and SMTP over implicit TLS).

    Identifiers and UUIDs are derived from the server and the address, so downloading the
    profile again replaces the installed one instead of adding a second account. Unsigned:
    devices show it as "Unsigned" and install it after the user confirms; signing would
    need a certificate from a CA the device trusts, which we do not have.
    """
    imap, smtp = server.of("imap")[0], server.of("smtp")[0]
    reverse_host = ".".join(reversed(server.hostname.split(".")))
    identifier = f"{reverse_host}.mail.{address}"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier}.account",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{identifier}.account")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAccountDescription": address,
        "EmailAccountName": display_name or address,
        "EmailAddress": address,
        "IncomingMailServerHostName": server.hostname,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": address,
        "OutgoingMailServerHostName": server.hostname,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, identifier)).upper(),
        "PayloadDisplayName": f"Mail: {address}",
        "PayloadDescription": f"Reads and sends the mail of {address} through {server.hostname}.",
        "PayloadOrganization": server.hostname,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


# MTA-STS (RFC 8461) -------------------------------------------------------------------


def mta_sts_policy(mode, mx_hosts):
    """The policy file (RFC 8461 §3.2): key: value lines ending in CRLF; None when off."""
    if mode == "off":
        return None
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host}" for host in mx_hosts), f"max_age: {MTA_STS_MAX_AGE}"]
    return "".join(line + "\r\n" for line in lines)


def mta_sts_id(policy):
    """The id for the _mta-sts TXT record (RFC 8461 §3.1: 1-32 letters and digits): a digest
    of the policy, so it changes exactly when the policy does and senders fetch it again."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]
