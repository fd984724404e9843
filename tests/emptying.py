"""How a transactional test's database is emptied after it (pytest-django's transactional_db).

Django's TransactionTestCase runs `manage.py flush`: every table emptied, on PostgreSQL with one
TRUNCATE of all 65 tables (new files for each table and index, synced at commit: 0.3-3 s on this
machine, longer under load), then the post_migrate signal, which makes the content types and
permissions again (one more second on PostgreSQL, half a second on SQLite). There are some 460
transactional tests in each pass.

This empties the same tables with DELETE in one transaction (the foreign keys Django makes are
deferred to the commit), on SQLite exactly as `flush` does, and keeps the two tables post_migrate
would fill again: content types and permissions, which migrate made and no test changes. Sequences
are left as they are, as `flush` without --reset-sequences does; the content type ids stay the same,
so ContentType's cache stays valid.
"""
from django.core.management.color import no_style
from django.db import connections
from django.test import TransactionTestCase

# Rows that migrate's post_migrate handlers make and that flush would make again at once.
KEPT = frozenset({"django_content_type", "auth_permission"})


def empty_database(connection):
    tables = [
        table for table in connection.introspection.django_table_names(only_existing=True, include_views=False)
        if table not in KEPT
    ]
    if connection.vendor == "postgresql":
        statements = [f"DELETE FROM {connection.ops.quote_name(table)}" for table in tables]
    else:
        statements = connection.ops.sql_flush(no_style(), tables, reset_sequences=False)
    connection.ops.execute_sql_flush(statements)  # in one transaction


def _fixture_teardown(self):
    for db_name in self._databases_names(include_mirrors=False):
        empty_database(connections[db_name])


def install(monkeypatch):
    monkeypatch.setattr(TransactionTestCase, "_fixture_teardown", _fixture_teardown)
