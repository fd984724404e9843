from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("ops.urls")),  # autoconfig, MTA-STS, /metrics, /healthz, /readyz, /admin/ops/ (before the admin)
    path("", include("antispam.urls")),  # /admin/antispam/dry-run/ (before the admin)
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),  # REST API, its schema and docs (issue 10)
    path("", include("secmail.urls")),  # before the webmail: /.well-known/openpgpkey/ and /security/
    path("settings/transfer/", include("migration.urls")),  # webmail: import, export, external accounts
    path("", include("webmail.urls")),
]
