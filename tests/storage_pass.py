"""The PostgreSQL pass runs the tests that use a database; the SQLite pass runs them all.

tests/run.py sets MAILSUITE_TEST_STORAGE_ONLY=<report file> for its PostgreSQL pass. A test
that reaches no database in this process (no django_db marker, no fixture that sets up or
unblocks the test database) runs the same code whatever DATABASE_URL says: pure parsers,
policies and rendering, servers without storage, manage.py children on a data dir and SQLite
file of their own. The SQLite pass runs those; the PostgreSQL pass deselects them, writes their
ids to the report file and says how many it left out at the end of its output.

pytest-django refuses database access to a test without the marker or a database fixture
("Database access not allowed"), so a test this drops could not have used the PostgreSQL test
database: dropping it loses no storage coverage.
"""
import os

ENV = "MAILSUITE_TEST_STORAGE_ONLY"

# pytest-django's fixtures that set up or open the test database (and live_server, which
# serves it to other threads). `db`, `transactional_db` and the rest request django_db_setup.
DATABASE_FIXTURES = frozenset({
    "db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback",
    "django_db_setup", "_django_db_helper", "live_server",
})


def uses_database(item):
    """True when the test, one of its fixtures, or a marker reaches the test database."""
    if item.get_closest_marker("django_db"):
        return True
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # not a plain pytest function (none in this suite): keep it
        return True
    if DATABASE_FIXTURES.intersection(info.names_closure):
        return True
    # A fixture of ours that opens the database itself (django_db_blocker.unblock()).
    # pytest-django's own class-scoped autouse fixture requests the blocker for every test
    # and uses it only for Django TestCase classes, which this suite does not have.
    for name in info.names_closure:
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if "django_db_blocker" in fixturedef.argnames and not is_pytest_django(fixturedef):
                return True
    return False


def is_pytest_django(fixturedef):
    return getattr(fixturedef.func, "__module__", "").startswith("pytest_django")


def deselect_tests_without_database(config, items):
    report = os.environ.get(ENV)
    if not report:
        return
    kept, dropped = [], []
    for item in items:
        (kept if uses_database(item) else dropped).append(item)
    if not dropped:
        return
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
    # Every xdist worker collects the same tests: the first (or the only process) writes.
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0":
        with open(report, "w") as f:
            f.write(f"# kept {len(kept)}\n")
            f.writelines(item.nodeid + "\n" for item in dropped)


def read_report(path):
    """(kept, [deselected node ids]) from a report file, or None when there is none."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    kept = int(lines[0].removeprefix("# kept "))
    return kept, lines[1:]


def summary(terminalreporter):
    """At the end of the pass's output (in the xdist controller too): what was left out."""
    path = os.environ.get(ENV)
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    report = read_report(path)
    if report is None:
        return
    kept, dropped = report
    by_dir = {}
    for nodeid in dropped:
        top = "/".join(nodeid.split("::")[0].split("/")[:2])
        by_dir[top] = by_dir.get(top, 0) + 1
    terminalreporter.write_sep("=", f"storage-only pass: {len(dropped)} tests that use no database deselected")
    terminalreporter.write_line(
        f"{kept} tests that use the database were selected here; these {len(dropped)} use none and are the "
        f"SQLite pass's alone: " + ", ".join(f"{d} {n}" for d, n in sorted(by_dir.items()))
    )
