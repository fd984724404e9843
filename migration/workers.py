"""Worker processes that parse an import's messages and write their bytes to blob storage,
beside the process that reads the source and commits the batches in order
(migration.actions.import_messages).

Implementation notes:
- Workers never touch the database: they return IncomingMessages (parsed, bytes written)
  and the importing process places them. Their files are written without an fsync each;
  the importing process makes a batch durable with one sync before committing it.
- How they start depends on the importing process. Running one thread (the CLI in the
  foreground), it forks them: cheap, and they inherit the settings as they are. With other
  threads running (a Celery worker's thread pool, where the webmail's uploads are imported),
  forking could copy a lock another thread holds, so they are spawned: fresh interpreters
  that set Django up from the environment, as any process of this node does, and take the
  importing process's blob storage setting with them (set in the process, by a test, is
  as good as set in the environment). A spawned worker costs about a second of CPU for
  Django's imports: worth it only for a large source (see actions.worker_plan).
- Nothing in this module imports models at its top: a spawned worker unpickles references
  to these functions before Django is set up.
"""
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor


def start_method():
    """"fork" when this process runs one thread, else "spawn"."""
    return "fork" if threading.active_count() == 1 else "spawn"


class Preparer:
    """A pool of `workers` processes turning batches of raw messages into IncomingMessages."""

    def __init__(self, workers, method=None):
        from django.conf import settings

        self.method = method or start_method()
        self.depth = workers  # batches in flight beyond the one being committed
        self.pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(self.method), initializer=start,
            initargs=(self.method, settings.STORAGES["blobs"]),
        )

    def submit(self, raws):
        return self.pool.submit(prepare, raws)

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def start(method, blobs):
    if method != "fork":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsuite.settings")
        import django
        from django.conf import settings
        from django.core.files.storage import storages

        django.setup()
        settings.STORAGES = {**settings.STORAGES, "blobs": blobs}
        storages._backends, storages._storages = None, {}
        storages.__dict__.pop("backends", None)  # a cached_property, in case setup read it
    from mailstore import actions as store
    from mailstore import storage

    # No fsync per file here: the importing process syncs once per batch before its commit.
    storage.fsync_each_file = False
    # A thread pool inherited through fork has no threads: the worker makes its own.
    store._prepare_pool = None


def prepare(raws):
    from mailstore.actions import prepare_incoming

    return prepare_incoming(raws)
