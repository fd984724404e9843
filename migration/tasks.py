"""Celery tasks: fetching external accounts (beat runs fetch_external_accounts)."""
from celery import shared_task


@shared_task(ignore_result=True)
def fetch_external_accounts():
    from migration.fetching import fetch_due

    fetch_due()
