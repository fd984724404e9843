"""Middleware of the ops app: Host names of our domains for client configuration, and
request timing for /metrics."""
import time

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from ops import domains, metrics

# Lower-cased paths mail clients and MTA-STS senders fetch from a name under the domain.
CLIENT_CONFIG_PATHS = frozenset({
    "/.well-known/autoconfig/mail/config-v1.1.xml",
    "/mail/config-v1.1.xml",
    "/autodiscover/autodiscover.xml",
    "/.well-known/mta-sts.txt",
})
# OpenPGP Web Key Directory (draft-koch-openpgp-webkey-service §3.1): DOMAIN (direct method)
# and openpgpkey.DOMAIN (advanced method) serve keys under this prefix (secmail.views).
WKD_PREFIX = "/.well-known/openpgpkey/"


class ServedDomainHostsMiddleware:
    """Django refuses a Host not in ALLOWED_HOSTS, but clients send autoconfig.DOMAIN,
    autodiscover.DOMAIN, mta-sts.DOMAIN or DOMAIN for every domain we serve, and OpenPGP
    clients openpgpkey.DOMAIN or DOMAIN for its Web Key Directory: no setting could list ten
    thousand domains. For the client-configuration and WKD paths only, a Host that
    names one of our active domains (checked in the database) is accepted: the request goes
    on as if sent to this server's own name (the first of ALLOWED_HOSTS, MAILSUITE_HOSTNAME),
    and request.mail_host keeps the name asked for. Any other Host on any other path meets
    Django's usual check.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.mail_host = ""
        if request.path.lower() in CLIENT_CONFIG_PATHS or request.path.startswith(WKD_PREFIX):
            raw = request.META.get("HTTP_HOST", "")
            host, _ = split_domain_port(raw)
            if host and not validate_host(host, settings.ALLOWED_HOSTS) and domains.of_host(host):
                request.META["HTTP_HOST"] = _own_name()
            request.mail_host = host
        return self.get_response(request)


def _own_name():
    named = [host for host in settings.ALLOWED_HOSTS if host not in ("*", "") and not host.startswith(".")]
    return named[0] if named else "localhost"


class RequestMetricsMiddleware:
    """Times every request for /metrics, labelled by the matched URL pattern's name (never
    the raw path: its values are unbounded) and the status class."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name if match and match.view_name else "unmatched")
        metrics.http_request(request.method, view, response.status_code, time.perf_counter() - started)
        return response
