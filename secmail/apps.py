from django.apps import AppConfig


class SecmailConfig(AppConfig):
    name = "secmail"
    verbose_name = "Message security (S/MIME, OpenPGP)"
