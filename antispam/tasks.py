"""Celery tasks of the content filter. The work is in the database (TrainingExample rows
not yet learned), so a lost task only delays learning until the next run."""
from celery import shared_task


@shared_task(ignore_result=True)
def learn():
    """Learn users' judgements (moves into and out of Junk); beat runs this every minute."""
    from antispam.actions import LEARN_BATCH, learn_examples

    while learn_examples() == LEARN_BATCH:
        pass


@shared_task(ignore_result=True)
def prune():
    """Daily housekeeping of the anti-spam tables that grow with traffic: dead greylist
    triplets and expired auto-allowed networks, and training examples learned long ago.
    Returns {what: rows deleted} (for the log and tests)."""
    import logging

    from antispam import greylist
    from antispam.actions import prune_training_examples

    pruned = {"greylist": greylist.prune(), "training examples": prune_training_examples()}
    logging.getLogger(__name__).info("anti-spam prune: %s", ", ".join(f"{n} {what}" for what, n in pruned.items()))
    return pruned
