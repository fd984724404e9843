"""/api/v1/ (the API), /api/schema/ (OpenAPI 3), /api/docs/ and /api/redoc/ (served from
the drf-spectacular-sidecar package's files: no CDN).

The docs pages carry a Content-Security-Policy that allows this server only: Redoc's
bundle shows a logo from its maker's CDN, and the stock Redoc page loads web fonts; here
the first is blocked (Redoc then hides it) and the second is left out of the template.
"""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from api import views

DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def local_only(view):
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = DOCS_CSP
        return response

    return wrapped


class LocalRedocView(SpectacularRedocView):
    template_name = "api/redoc.html"


router = DefaultRouter()
router.register("domains", views.DomainViewSet, basename="domain")
router.register("domain-aliases", views.DomainAliasViewSet, basename="domainalias")
router.register("accounts", views.AccountViewSet, basename="account")
router.register("aliases", views.AliasViewSet, basename="alias")
router.register("redirects", views.RedirectViewSet, basename="redirect")
router.register("routes", views.RouteViewSet, basename="route")
router.register("queue", views.QueueViewSet, basename="queue")
router.register("login-events", views.LoginEventViewSet, basename="loginevent")
router.register("audit", views.AuditEntryViewSet, basename="auditentry")
router.register("spam-lists", views.SpamListEntryViewSet, basename="spamlistentry")
router.register("spam-settings", views.SpamSettingsViewSet, basename="spamsettings")
router.register("external-accounts", views.ExternalAccountViewSet, basename="externalaccount")

scripts = views.SieveScriptViewSet
v1 = [
    path("", include(router.urls)),
    path("accounts/<int:account_pk>/sieve/", scripts.as_view({"get": "list"}), name="sieve-list"),
    path("accounts/<int:account_pk>/sieve-deactivate/", scripts.as_view({"post": "deactivate"}),
         name="sieve-deactivate"),
    path("accounts/<int:account_pk>/sieve/<str:name>/",
         scripts.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}), name="sieve-detail"),
    path("accounts/<int:account_pk>/sieve/<str:name>/activate/", scripts.as_view({"post": "activate"}),
         name="sieve-activate"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("dashboard/", views.DashboardView.as_view(), name="dashboard"),
]

urlpatterns = [
    path("v1/", include((v1, "api"), namespace="v1")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", local_only(SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
    path("redoc/", local_only(LocalRedocView.as_view(url_name="api-schema")), name="api-redoc"),
]
