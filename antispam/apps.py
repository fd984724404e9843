from django.apps import AppConfig
from django.core.signals import setting_changed


class AntispamConfig(AppConfig):
    name = "antispam"
    verbose_name = "Anti-spam and sender authentication"

    def ready(self):
        # Tests change settings around every test and roll the database back after it:
        # what a process remembers of the database (antispam.lookups, .correspondents, .bayes)
        # must not outlive the test that read it. Nothing changes settings in production.
        setting_changed.connect(forget_cached, dispatch_uid="antispam-forget-cached")


def forget_cached(**kwargs):
    from antispam import bayes, correspondents, lookups

    bayes.forget()
    correspondents.forget()
    lookups.forget()
