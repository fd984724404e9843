"""Celery tasks of the content filter. The work is in the database (TrainingExample rows
not yet learned), so a lost task only delays learning until the next run."""
from celery import shared_task


@shared_task(ignore_result=True)
def learn():
    """Learn users' judgements (moves into and out of Junk); beat runs this every minute."""
    from antispam.actions import LEARN_BATCH, learn_examples

    while learn_examples() == LEARN_BATCH:
        pass
