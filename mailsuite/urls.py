from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("ops.urls")),  # autoconfig, MTA-STS, /metrics, /healthz, /readyz, /admin/ops/ (before the admin)
    path("admin/", admin.site.urls),
    path("", include("secmail.urls")),  # before the webmail: /.well-known/openpgpkey/ and /security/
    path("settings/transfer/", include("migration.urls")),  # webmail: import, export, external accounts
    path("", include("webmail.urls")),
]
