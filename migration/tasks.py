"""Celery tasks: fetching external accounts (beat runs fetch_external_accounts), and
long transfer jobs (imports, exports, IMAP migrations) queued by migration.actions."""
from celery import shared_task


@shared_task(ignore_result=True)
def fetch_external_accounts():
    from migration.fetching import fetch_due

    fetch_due()


@shared_task(ignore_result=True)
def run_transfer_job(job_id):
    """Run one TransferJob; a job already taken or cancelled is left alone, so a task
    delivered twice does no harm."""
    from migration.actions import run_job

    run_job(job_id)
