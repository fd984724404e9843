from django.urls import path, re_path

from secmail import compose, views

app_name = "secmail"

urlpatterns = [
    # draft-koch-openpgp-webkey-service §3.1: direct and advanced methods.
    re_path(r"^\.well-known/openpgpkey/hu/(?P<hashed>[a-z0-9]{32})$", views.wkd_direct_key, name="wkd_direct_key"),
    path(".well-known/openpgpkey/policy", views.wkd_direct_policy, name="wkd_direct_policy"),
    re_path(r"^\.well-known/openpgpkey/(?P<domain>[A-Za-z0-9.-]+)/hu/(?P<hashed>[a-z0-9]{32})$", views.wkd_advanced_key, name="wkd_advanced_key"),
    re_path(r"^\.well-known/openpgpkey/(?P<domain>[A-Za-z0-9.-]+)/policy$", views.wkd_advanced_policy, name="wkd_advanced_policy"),
]

urlpatterns += [
    path("security/keys/", views.keys_page, name="keys"),
    path("security/keys/<int:key_id>/<str:what>/", views.key_download, name="key_download"),
    path("security/readiness/", compose.readiness, name="readiness"),
    path("security/import/<int:folder_id>/<int:uid>/<str:number>/", views.import_part, name="import_part"),
]
