"""Admin pages of the antispam app (mailsuite/urls.py includes these before the admin's own catch-all)."""
from django.urls import path

from antispam import admin_views

app_name = "antispam"
urlpatterns = [
    path("admin/antispam/dry-run/", admin_views.dry_run_view, name="admin_dry_run"),
]
