"""Migrations that move stored data: what was there before is there after, both ways."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from mailstore import actions
from mailstore.models import BlobSummary
from tests.conftest import database_vendor

pytestmark = pytest.mark.django_db(transaction=True)

RAW = b"From: sam@elsewhere.test\r\nSubject: Moved\r\n\r\nbody\r\n"


def rows(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor.fetchall()]


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate([("mailstore", target)])
    return executor


def sqlite_triggers():
    if database_vendor() != "sqlite3":
        return None
    return rows("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'mailstore_blob' ORDER BY name")


def test_0011_moves_envelope_and_bodystructure_into_their_own_table_and_back(alice):
    summarised = actions.append(alice, "INBOX", RAW).blob_id
    unsummarised = actions.append(alice, "INBOX", RAW.replace(b"Moved", b"Older")).blob_id
    BlobSummary.objects.filter(blob_id=unsummarised).delete()  # as stored before summaries existed
    stored = rows("SELECT envelope, bodystructure FROM mailstore_blobsummary WHERE blob_id = %s", [summarised])
    triggers = sqlite_triggers()
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        migrate("0010_imap_summary")
        assert rows("SELECT id, imap_envelope, imap_bodystructure FROM mailstore_blob ORDER BY id") == [
            (summarised, *stored[0]), (unsummarised, None, None),
        ]
        migrate("0011_blob_summary_table")
        assert rows("SELECT blob_id, envelope, bodystructure FROM mailstore_blobsummary") == [(summarised, *stored[0])]
        assert "imap_envelope" not in [c.name for c in connection.introspection.get_table_description(
            connection.cursor(), "mailstore_blob")]
        assert sqlite_triggers() == triggers  # the search index's triggers on the blob table are kept
    finally:
        MigrationExecutor(connection).migrate(leaves)
