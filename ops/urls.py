"""URLs of the ops app, at the site root: the names mail clients and monitoring expect."""
from django.urls import path, re_path

from ops import admin_views, views

app_name = "ops"
urlpatterns = [
    path(".well-known/autoconfig/mail/config-v1.1.xml", views.thunderbird, name="autoconfig_wellknown"),
    path("mail/config-v1.1.xml", views.thunderbird, name="autoconfig"),
    # Outlook capitalises as it likes: /autodiscover/autodiscover.xml, /Autodiscover/Autodiscover.xml …
    re_path(r"^[Aa]uto[Dd]iscover/[Aa]uto[Dd]iscover\.xml$", views.autodiscover, name="autodiscover"),
    path(".well-known/mta-sts.txt", views.mta_sts, name="mta_sts"),
    path("settings/apple.mobileconfig", views.mobileconfig, name="mobileconfig"),
    path("metrics", views.metrics_view, name="metrics"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    # Admin pages (mailsuite/urls.py includes these before the admin's own catch-all).
    path("admin/ops/", admin_views.dashboard_view, name="admin_dashboard"),
    path("admin/ops/dns/", admin_views.dns_lookup_view, name="admin_dns_lookup"),
    path("admin/ops/dns/<str:name>/", admin_views.dns_view, name="admin_dns"),
]
