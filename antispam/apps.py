from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save


class AntispamConfig(AppConfig):
    name = "antispam"
    verbose_name = "Anti-spam and sender authentication"

    def ready(self):
        # Tests change settings around every test and roll the database back after it:
        # what a process remembers of the database (antispam.lookups, .correspondents, .bayes)
        # must not outlive the test that read it. Nothing changes settings in production.
        setting_changed.connect(forget_cached, dispatch_uid="antispam-forget-cached")
        # Which domains are ours: known at once in the process that changed them (the
        # others within antispam.lookups.TTL).
        for model in ("Domain", "DomainAlias"):
            sender = self.apps.get_model("accounts", model)
            for event, signal in (("saved", post_save), ("deleted", post_delete)):
                signal.connect(forget_local_domains, sender=sender, dispatch_uid=f"antispam-forget-{model}-{event}")


def forget_cached(**kwargs):
    from antispam import bayes, correspondents, lookups

    bayes.forget()
    correspondents.forget()
    lookups.forget()


def forget_local_domains(**kwargs):
    from antispam import lookups

    lookups.forget_local_domains()
