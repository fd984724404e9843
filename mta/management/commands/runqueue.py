"""manage.py runqueue: the outbound queue's Celery worker (and, by default, its beat)."""
from django.core.management.base import BaseCommand

from mailsuite.celery import app


class Command(BaseCommand):
    help = "Run the outbound queue worker in the foreground (Celery, with the periodic sweep)."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=8, help="delivery threads")
        parser.add_argument("--no-beat", action="store_true", help="do not run the periodic sweep here")

    def handle(self, *args, concurrency, no_beat, **options):
        argv = [
            "worker",
            "--pool", "threads",
            "--concurrency", str(concurrency),
            # The embedded (filesystem) broker has no broadcast; these need it and add nothing here.
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "INFO",
        ]
        if not no_beat:
            argv.append("--beat")
        app.worker_main(argv)
