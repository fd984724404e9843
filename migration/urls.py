"""The webmail's import/export and external-account pages, at /settings/transfer/
(included from mailsuite/urls.py ahead of the webmail's own settings pages)."""
from django.urls import path

from migration import views

app_name = "migration"
urlpatterns = [
    path("", views.index, name="index"),
    path("upload/", views.upload, name="upload"),
    path("export/", views.export, name="export"),
    path("jobs/<int:job_id>/", views.job_status, name="job"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:job_id>/resume/", views.job_resume, name="job_resume"),
    path("jobs/<int:job_id>/discard/", views.job_discard, name="job_discard"),
    path("external/", views.externals, name="externals"),
    path("external/<int:external_id>/", views.external_edit, name="external_edit"),
    path("external/<int:external_id>/test/", views.external_test, name="external_test"),
    path("external/<int:external_id>/fetch/", views.external_fetch, name="external_fetch"),
    path("external/<int:external_id>/remove/", views.external_remove, name="external_remove"),
]
