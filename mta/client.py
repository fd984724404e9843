"""The SMTP client half of the MTA: one connection to the next hop, transactions over it.

smtplib does the wire work; this adds what an MTA needs on top: trying a route's hosts
and addresses in order, opportunistic or required STARTTLS, AUTH for smart hosts,
PIPELINING (RFC 2920), SIZE, 8BITMIME/SMTPUTF8 and DSN parameters, and one reply per
recipient. Network errors never escape as anything but DeliveryError.
"""
import logging
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass

from django.conf import settings

from mta.models import SmartHost
from mta.routing import addresses

log = logging.getLogger(__name__)

TIMEOUT = 120  # seconds per command; RFC 5321 §4.5.3.2 allows more, few servers need it
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class DeliveryError(Exception):
    """The connection or transaction failed as a whole; the text says how, for a DSN."""

    def __init__(self, text, *, permanent=False, status=None):
        super().__init__(text)
        self.permanent = permanent
        self.status = status or ("5.0.0" if permanent else "4.0.0")


@dataclass
class Reply:
    code: int
    text: str

    @property
    def outcome(self):
        return "delivered" if self.code < 400 else "deferred" if self.code < 500 else "bounced"

    @property
    def status(self):
        match = _ENHANCED.match(self.text)
        if match:
            return match.group(0)
        return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(self.code // 100, "4.0.0")

    def __str__(self):
        return f"{self.code} {self.text}"


def _reply(code, message):
    return Reply(code, message.decode("utf-8", "replace").replace("\n", " ") if isinstance(message, bytes) else str(message))


def _tls_context(verify):
    if verify:
        return ssl.create_default_context()
    # Opportunistic TLS (RFC 7435): encrypt even when the certificate cannot be checked.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Connection:
    """An open, greeted (and where possible encrypted and authenticated) SMTP session."""

    def __init__(self, client, host_label):
        self.client = client
        self.host_label = host_label

    @property
    def supports_dsn(self):
        return self.client.has_extn("dsn")

    @classmethod
    def open(cls, route):
        """Connect to the first host of the route that answers; DeliveryError if none does."""
        errors = []
        for host in route.hosts:
            ips = addresses(host)
            if not ips:
                errors.append(f"{host}: no address")
            for ip in ips:
                label = f"{host}[{ip}]"
                try:
                    return cls(_connect(route, host, ip), label)
                except DeliveryError as error:
                    if error.permanent:
                        raise
                    errors.append(f"{label}: {error}")
                except (OSError, smtplib.SMTPException) as error:
                    errors.append(f"{label}: {error.__class__.__name__}: {error}")
        raise DeliveryError("; ".join(errors) or "no host to try", status="4.4.1")

    def send(self, *, mail_from, recipients, data, smtputf8=False, envid="", ret=""):
        """One transaction. `recipients`: list of (address, notify, orcpt).

        Returns {address: Reply}. A failure that concerns the whole transaction raises
        DeliveryError (the connection may then be unusable).
        """
        client = self.client
        features = client.esmtp_features
        if smtputf8 and "smtputf8" not in features:
            raise DeliveryError(
                f"{self.host_label} does not support SMTPUTF8, which this message needs", permanent=True, status="5.6.7"
            )
        if "size" in features and features["size"].isdigit() and 0 < int(features["size"]) < len(data):
            raise DeliveryError(
                f"message of {len(data)} octets is larger than {self.host_label} accepts ({features['size']})",
                permanent=True,
                status="5.3.4",
            )
        mail_options = []
        if "size" in features:
            mail_options.append(f"SIZE={len(data)}")
        if "8bitmime" in features and not data.isascii():
            mail_options.append("BODY=8BITMIME")
        if smtputf8:
            mail_options.append("SMTPUTF8")
        dsn = "dsn" in features
        if dsn and ret:
            mail_options.append(f"RET={ret}")
        if dsn and envid:
            mail_options.append(f"ENVID={envid}")
        commands = [_command("MAIL FROM:", mail_from, mail_options)]
        for address, notify, orcpt in recipients:
            options = []
            if dsn and notify:
                options.append(f"NOTIFY={notify}")
            if dsn and orcpt:
                options.append(f"ORCPT={orcpt}")
            commands.append(_command("RCPT TO:", address, options))
        try:
            if "pipelining" in features:
                # RFC 2920: MAIL and every RCPT in one write, then the replies in order.
                client.send(b"".join(commands))
                replies = [_reply(*client.getreply()) for _ in commands]
            else:
                replies = []
                for command in commands:
                    client.send(command)
                    replies.append(_reply(*client.getreply()))
                    if len(replies) == 1 and replies[0].code >= 400:
                        break
            mail_reply = replies[0]
            if mail_reply.code >= 300:
                client.rset()
                raise DeliveryError(f"{self.host_label} said {mail_reply}", permanent=mail_reply.code >= 500,
                                    status=mail_reply.status)
            results = {address: reply for (address, _, _), reply in zip(recipients, replies[1:])}
            accepted = [address for address, reply in results.items() if reply.code < 300]
            if not accepted:
                client.rset()
                return results
            data_reply = _reply(*client.data(data))
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(f"{self.host_label}: {error.__class__.__name__}: {error}") from None
        for address in accepted:
            results[address] = data_reply
        return results

    def close(self):
        try:
            self.client.quit()
        except (OSError, smtplib.SMTPException):
            self.client.close()


def _command(verb, address, options):
    line = f"{verb}<{address}>" + "".join(f" {option}" for option in options) + "\r\n"
    return line.encode("utf-8")


class _ImplicitTLS(smtplib.SMTP_SSL):
    """SMTP_SSL that dials an address we chose but checks the certificate for the host name."""

    server_name = None

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.server_name)


def _connect(route, host, ip):
    implicit = route.tls == SmartHost.TLS.IMPLICIT
    if implicit:
        client = _ImplicitTLS(
            local_hostname=settings.MAILSUITE_HOSTNAME, timeout=TIMEOUT, context=_tls_context(route.verify_certificate)
        )
        client.server_name = host
    else:
        client = smtplib.SMTP(local_hostname=settings.MAILSUITE_HOSTNAME, timeout=TIMEOUT)
    try:
        code, message = client.connect(ip, route.port)
        if code != 220:
            raise DeliveryError(f"greeting {code} {message.decode('utf-8', 'replace')}")
        client.ehlo_or_helo_if_needed()
        if not implicit and route.tls != SmartHost.TLS.NONE:
            if client.has_extn("starttls"):
                # Opportunistic TLS encrypts without checking (RFC 7435): refusing an unchecked
                # certificate would only make us fall back to no encryption at all.
                verify = route.verify_certificate and route.tls == SmartHost.TLS.REQUIRED
                context = _tls_context(verify)
                client._host = host  # smtplib checks the certificate against _host, which connect() set to the IP
                client.starttls(context=context)
                client.ehlo()
            elif route.tls == SmartHost.TLS.REQUIRED:
                raise DeliveryError(f"{host} does not offer STARTTLS, which is required")
        if route.username:
            try:
                client.login(route.username, route.password)
            except smtplib.SMTPAuthenticationError as error:
                raise DeliveryError(f"{host} refused our login: {error.smtp_code} {error.smtp_error!r}") from None
        return client
    except BaseException:
        client.close()
        raise


def verify_recipient(route, address):
    """Ask the route's first host that answers whether it would take `address` (a
    callout: MAIL FROM:<>, RCPT TO, then RSET and QUIT). Returns the RCPT Reply."""
    connection = Connection.open(route)
    try:
        client = connection.client
        code, message = client.mail("")
        if code >= 300:
            return _reply(code, message)
        return _reply(*client.rcpt(address))
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryError(f"{connection.host_label}: {error}") from None
    finally:
        connection.close()
