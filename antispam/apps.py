from django.apps import AppConfig


class AntispamConfig(AppConfig):
    name = "antispam"
    verbose_name = "Anti-spam and sender authentication"
