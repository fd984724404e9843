"""HTTP endpoints of the ops app: client autoconfiguration, MTA-STS, metrics and health.

The client-configuration views answer for any of our domains (see
ops.middleware.ServedDomainHostsMiddleware for the Host names they accept) and 404 for
others, so the server never describes itself for a domain it does not serve.
"""
import ipaddress
import json
import logging

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from ops import clientconfig, domains, health, metrics
from webmail.auth import account_required

log = logging.getLogger(__name__)

XML = "application/xml; charset=utf-8"


@require_GET
def thunderbird(request):
    """config-v1.1.xml. Thunderbird asks https://autoconfig.DOMAIN/mail/config-v1.1.xml
    ?emailaddress=ADDRESS, then https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml."""
    address = request.GET.get("emailaddress", "")
    names = domains.of_address(address) if address else domains.of_host(request.mail_host or request.get_host())
    if not names:
        raise Http404("not a domain served here")
    return HttpResponse(clientconfig.thunderbird(clientconfig.server(), names), content_type=XML)


@csrf_exempt  # clients post XML without a session
@require_http_methods(["POST", "GET"])
def autodiscover(request):
    """Outlook's POX Autodiscover: POST /autodiscover/autodiscover.xml with the address."""
    if request.method == "GET":  # Outlook probes with GET first; only a POST carries the address
        return HttpResponse(clientconfig.autodiscover_error(600, "Invalid Request"), content_type=XML)
    try:
        address = clientconfig.autodiscover_address(request.body)
    except clientconfig.AutodiscoverRequestError as error:
        log.info("autodiscover: unreadable request from %s: %s", request.META.get("REMOTE_ADDR"), error)
        return HttpResponse(clientconfig.autodiscover_error(600, "Invalid Request"), content_type=XML)
    if not domains.of_address(address):
        return HttpResponse(clientconfig.autodiscover_error(601, "Provider not found"), content_type=XML)
    return HttpResponse(clientconfig.autodiscover(clientconfig.server(), address), content_type=XML)


@require_GET
def mta_sts(request):
    """RFC 8461 §3.3: the policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt."""
    policy = clientconfig.mta_sts_policy(settings.MAILSUITE_MTA_STS_MODE, [settings.MAILSUITE_HOSTNAME])
    if policy is None:
        raise Http404("MTA-STS is off")
    return HttpResponse(policy, content_type="text/plain; charset=utf-8")


@require_GET
@account_required
def mobileconfig(request):
    """The signed-in user's Apple configuration profile (unsigned; see clientconfig)."""
    account = request.account
    body = clientconfig.mobileconfig(
        clientconfig.server(), address=account.address, display_name=account.display_name
    )
    response = HttpResponse(body, content_type="application/x-apple-aspen-config")
    response["Content-Disposition"] = f'attachment; filename="{account.domain.name}.mobileconfig"'
    return response


# Metrics and health -------------------------------------------------------------------


def _may_scrape(request):
    """With MAILSUITE_METRICS_TOKEN set, only its bearer; else only a loopback client that
    did not come through a proxy (a proxy on this machine would make everyone loopback)."""
    token = settings.MAILSUITE_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and constant_time_compare(given.strip(), token)
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_GET
def metrics_view(request):
    if not _may_scrape(request):
        response = HttpResponse("metrics need a bearer token or a loopback client\n", status=403,
                                content_type="text/plain; charset=utf-8")
        if settings.MAILSUITE_METRICS_TOKEN:
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


@never_cache
@require_GET
def healthz(request):
    """The process is up and serving requests; nothing else is asked."""
    return HttpResponse("ok\n", content_type="text/plain; charset=utf-8")


@never_cache
@require_GET
def readyz(request):
    """200 when the database, the blob storage, the mail ports and the queue sweep are all
    fine, else 503; the JSON body says which check failed. ?service=imap&service=smtp…
    checks only those ports (a node that runs some daemons only), and the queue sweep only
    with service=queue."""
    services = request.GET.getlist("service") or None
    if services and not set(services) <= health.SERVICES:
        return HttpResponseBadRequest("unknown service\n", content_type="text/plain; charset=utf-8")
    checks = health.readiness(services)
    ok = all(check.ok for check in checks)
    body = {"ready": ok, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
    return HttpResponse(json.dumps(body, indent=1) + "\n", status=200 if ok else 503,
                        content_type="application/json")
