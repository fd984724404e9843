"""The Celery app: queue workers (`python -m celery -A mailsuite worker`) run delivery
attempts; beat runs the periodic sweep. Settings come from Django settings CELERY_*."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")

app = Celery("mailsuite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
