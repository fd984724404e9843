from django.apps import AppConfig


class MailsuiteConfig(AppConfig):
    name = "mailsuite"
    verbose_name = "mailsuite"
