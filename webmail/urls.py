"""The webmail at /. URL names other pieces link to: webmail:compose (composing, next),
webmail:contacts (address book, next), webmail:settings and webmail:settings_section."""
from django.urls import path
from django.views.i18n import set_language

from webmail import events, spam_pages, views

app_name = "webmail"
urlpatterns = [
    path("", views.index, name="index"),
    path("login/", views.login, name="login"),
    path("logout/", views.logout, name="logout"),
    path("events/", events.stream, name="events"),
    path("search/", views.search, name="search"),
    path("tree/", views.tree, name="tree"),
    path("folders/", views.folders, name="folders"),
    path("folders/new/", views.folder_create, name="folder_create"),
    path("folders/<int:folder_id>/rename/", views.folder_rename, name="folder_rename"),
    path("folders/<int:folder_id>/delete/", views.folder_delete, name="folder_delete"),
    path("folders/<int:folder_id>/subscribe/", views.folder_subscribe, name="folder_subscribe"),
    path("folders/<int:folder_id>/empty/", views.folder_empty, name="folder_empty"),
    path("f/<int:folder_id>/", views.folder, name="folder"),
    path("f/<int:folder_id>/bulk/", views.bulk, name="bulk"),
    path("list-mode/", views.list_mode, name="list_mode"),
    path("f/<int:folder_id>/m/<int:uid>/", views.message, name="message"),
    path("f/<int:folder_id>/m/<int:uid>/conversation/", views.conversation, name="conversation"),
    path("f/<int:folder_id>/m/<int:uid>/conversation/body/", views.conversation_part, name="conversation_part"),
    path("f/<int:folder_id>/m/<int:uid>/conversation/action/", views.conversation_action, name="conversation_action"),
    path("f/<int:folder_id>/m/<int:uid>/body/", views.body, name="body"),
    path("f/<int:folder_id>/m/<int:uid>/raw/", views.raw, name="raw"),
    path("f/<int:folder_id>/m/<int:uid>/part/<str:number>/", views.part, name="part"),
    path("f/<int:folder_id>/m/<int:uid>/read/", views.mark_read, name="mark_read"),
    path("f/<int:folder_id>/m/<int:uid>/action/", views.message_action, name="message_action"),
    path("f/<int:folder_id>/m/<int:uid>/trust/", views.trust_sender, name="trust_sender"),
    path("f/<int:folder_id>/m/<int:uid>/spam/", spam_pages.mark, name="spam_mark"),
    path("compose/", views.compose_view, name="compose"),
    path("contacts/", views.contacts, name="contacts"),
    path("contacts/export.vcf", views.contacts_export, name="contacts_export"),
    path("contacts/suggest/", views.contacts_suggest, name="contacts_suggest"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/spam/", spam_pages.settings_page, name="spam_settings"),
    path("settings/<slug:section>/", views.settings_page, name="settings_section"),
    path("settings/language/set/", set_language, name="set_language"),
    path("settings/privacy/forget/", views.distrust_sender, name="distrust_sender"),
]
