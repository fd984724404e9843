"""Keeps parallel test processes out of each other's way (loaded early with `-p tests.isolation`).

tests/run.py runs the suite in several pytest-xdist workers at once, and its SQLite and
PostgreSQL passes side by side. Each worker gets:
- its own MAILSUITE_DATA_DIR (SQLite files, blobs, the local change bus's sockets, the
  embedded broker), a directory named after the worker under the run's data dir;
- its own Redis database for the Celery-on-Redis tests, which empty it first
  (MAILSUITE_TEST_REDIS_DB, counted down from 15; tests/run.py gives each pass a range).
PostgreSQL needs nothing here: pytest-django names each worker's test database after it.

This runs when the plugin is imported, before pytest-django reads the settings.
"""
import os

REDIS_DB_ENV = "MAILSUITE_TEST_REDIS_DB"
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_base = os.environ.get("MAILSUITE_DATA_DIR") or os.path.abspath("var")

if _worker:
    os.environ["MAILSUITE_DATA_DIR"] = _data_dir = os.path.join(_base, _worker)
    os.makedirs(_data_dir, exist_ok=True)
    _first = int(os.environ.get(REDIS_DB_ENV, "15"))
    os.environ[REDIS_DB_ENV] = str(_first - int(_worker.removeprefix("gw")))


def pass_data_dir():
    """The data dir this run was given: the workers' own dirs are inside it."""
    return _base


def redis_db():
    """The Redis database number this process's tests may use (and empty)."""
    return int(os.environ.get(REDIS_DB_ENV, "15"))
