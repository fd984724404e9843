"""manage.py runqueue: the outbound queue's Celery worker (and, by default, its beat)."""
from django.core.management.base import BaseCommand

from mailsuite.celery import app
from mailstore import search_index


class Command(BaseCommand):
    help = "Run the outbound queue worker in the foreground (Celery, with the periodic sweep)."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=8, help="delivery threads")
        parser.add_argument("--no-beat", action="store_true", help="do not run the periodic sweep here")

    def handle(self, *args, concurrency, no_beat, **options):
        search_index.run_in_background()
        worker = app.Worker(
            pool_cls="threads",
            concurrency=concurrency,
            beat=not no_beat,
            # The embedded (filesystem) broker has no broadcast; these need it and add nothing here.
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            loglevel="INFO",
        )
        worker.start()
        # A worker that died of an unrecoverable error must look like a failure to
        # whatever supervises it, not like a clean stop.
        raise SystemExit(worker.exitcode or 0)
