"""Admin pages of the ops app, under /admin/ops/ with the admin's look and login:
the dashboard (superusers: it is about the whole server) and a domain's DNS doctor page
(anyone who may see the domain in the admin)."""
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from accounts.errors import AccountsError
from accounts.models import Domain
from mailsuite.lib.addresses import AddressError, normalize_domain
from ops import dashboard, dnsdoctor

DASHBOARD_DOMAINS = 500  # domains whose remembered DNS check the dashboard looks up


def _domains_visible_to(user):
    # Delegated administration narrows a domain admin to their domains (accounts.models).
    objects = Domain.objects
    if hasattr(objects, "visible_to"):
        return objects.visible_to(user)
    return objects.all() if user.is_superuser else objects.none()


def dashboard_view(request):
    if not request.user.is_superuser:
        raise PermissionDenied
    names = list(Domain.objects.order_by("name").values_list("name", flat=True)[:DASHBOARD_DOMAINS])
    context = {
        **admin.site.each_context(request),
        "title": "Mail server dashboard",
        "summary": dashboard.summary(domain_names=names),
        "domain_count": Domain.objects.count(),
    }
    return render(request, "ops/dashboard.html", context)


def dns_lookup_view(request):
    """The dashboard's "check a domain" form lands here."""
    try:
        name = normalize_domain(request.GET.get("domain", ""))
    except AddressError:
        return redirect("ops:admin_dashboard")
    return redirect("ops:admin_dns", name=name)


def dns_view(request, name):
    try:
        name = normalize_domain(name)
    except AddressError:
        name = ""
    domain = _domains_visible_to(request.user).filter(name=name).first()
    if domain is None:
        raise PermissionDenied  # unknown and not yours look the same
    context = {**admin.site.each_context(request), "title": f"DNS of {domain}", "domain": domain}
    try:
        report = dnsdoctor.check(domain)
    except AccountsError as error:  # MAILSUITE_HOSTNAME is not a public name
        context["error"] = str(error)
    else:
        dashboard.remember_dns_report(report)
        context["report"] = report
        context["zone"] = "".join(f.record.zone_line() + "\n" for f in report.records if f.record)
    return render(request, "ops/dns.html", context)


dashboard_view = admin.site.admin_view(dashboard_view)
dns_lookup_view = admin.site.admin_view(dns_lookup_view)
dns_view = admin.site.admin_view(dns_view)
