"""SQLite: blobs are indexed for search after the commit that stores them (mailstore.search_index).

Storing a blob now only notes its id in mailstore_search_pending; mailstore.search_index
moves pending blobs into the FTS5 tables of migration 0004 in batches. A blob deleted or
changed while pending leaves the index alone (it is not in it). PostgreSQL's pg_trgm
indexes are unchanged.
"""
import importlib

from django.db import migrations

ORIGINAL = importlib.import_module("mailstore.migrations.0004_search_index")
PENDING = "mailstore_search_pending"
IN_INDEX = f"old.id NOT IN (SELECT id FROM {PENDING})"
FORWARD = [
    f"CREATE TABLE {PENDING} (id INTEGER PRIMARY KEY)",
    "DROP TRIGGER mailstore_blob_fts_insert",
    "DROP TRIGGER mailstore_blob_fts_delete",
    "DROP TRIGGER mailstore_blob_fts_update",
    "CREATE TRIGGER mailstore_blob_fts_insert AFTER INSERT ON mailstore_blob BEGIN "
    f"INSERT INTO {PENDING}(id) VALUES (new.id); "
    "END",
    # One trigger, its statements in this order: a pending blob is not in the text index,
    # and deleting it there would corrupt it (an external-content FTS5 table trusts the text).
    "CREATE TRIGGER mailstore_blob_fts_delete AFTER DELETE ON mailstore_blob BEGIN "
    "INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts, rowid, search_text) "
    f"SELECT 'delete', old.id, old.search_text WHERE {IN_INDEX}; "
    "DELETE FROM mailstore_blob_header_fts WHERE rowid = old.id; "
    f"DELETE FROM {PENDING} WHERE id = old.id; "
    "END",
    # 0004's update trigger, for indexed blobs only (a pending one is indexed as it is then).
    ORIGINAL.SQLITE_TRIGGERS[2].replace(" BEGIN ", f" WHEN {IN_INDEX} BEGIN ", 1),
]
BACKWARD = [  # index what waits, then migration 0004's triggers again
    f"INSERT INTO mailstore_blob_text_fts(rowid, search_text) "
    f"SELECT id, search_text FROM mailstore_blob WHERE id IN (SELECT id FROM {PENDING})",
    f"INSERT INTO mailstore_blob_header_fts(rowid, header_text) "
    f"SELECT id, header_text FROM mailstore_blob WHERE id IN (SELECT id FROM {PENDING})",
    "DROP TRIGGER mailstore_blob_fts_insert",
    "DROP TRIGGER mailstore_blob_fts_delete",
    "DROP TRIGGER mailstore_blob_fts_update",
    f"DROP TABLE {PENDING}",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in FORWARD:
            schema_editor.execute(sql)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in BACKWARD + ORIGINAL.SQLITE_TRIGGERS:
            schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("mailstore", "0008_conversation_indexes"),
    ]

    operations = [
        migrations.RunPython(forward, backward),
    ]
