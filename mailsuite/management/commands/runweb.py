import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from mailstore import search_index


class Command(BaseCommand):
    help = "Run the web server (webmail, admin, API) with uvicorn in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.MAILSUITE_BIND)
        parser.add_argument("--port", type=int, default=settings.MAILSUITE_HTTP_PORT)

    def handle(self, *args, host, port, **options):
        search_index.run_in_background()
        uvicorn.run(
            "mailsuite.asgi:application",
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
