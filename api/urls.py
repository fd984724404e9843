"""/api/v1/ (the API), /api/schema/ (OpenAPI 3), /api/docs/ and /api/redoc/ (served from
the drf-spectacular-sidecar package's files: no CDN)."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from api import views

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
]

urlpatterns = [
    path("v1/", include((v1, "api"), namespace="v1")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
