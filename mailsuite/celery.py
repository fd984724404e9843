"""The Celery app: queue workers (`python -m celery -A mailsuite worker`) run delivery
attempts; beat runs the periodic sweep. Settings come from Django settings CELERY_*."""
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")

app = Celery("mailsuite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.beat_embedded_init.connect
def _beat_dies_with_its_worker(**kwargs):
    # The worker's embedded beat is a forked child: without this, a kill -9 of the
    # worker would leave it running, still sending sweeps to the broker.
    from mailsuite.supervisor import die_with_parent

    die_with_parent()
