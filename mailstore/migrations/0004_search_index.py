"""Substring index for IMAP SEARCH TEXT/BODY/HEADER (imap.search).

Blob.header_text holds the decoded header, one field a line; existing blobs get it from
their stored bytes here. Then, by database:
- SQLite: FTS5 tables with the trigram tokenizer (case-insensitive substring search):
  mailstore_blob_text_fts reads search_text from mailstore_blob (external content, no
  copy of the bodies); mailstore_blob_header_fts keeps its own copy of header_text, so
  reading a header never walks the overflow pages of the body stored before it in the
  row. Triggers keep both in step with every INSERT, UPDATE and DELETE on mailstore_blob,
  so the mail store's raw INSERTs need nothing more.
  A later migration that makes Django rebuild mailstore_blob on SQLite (some AlterField
  operations copy the table) drops these triggers with the old table: re-run
  SQLITE_TRIGGERS after it (tests/imap/test_search.py checks they are there).
- PostgreSQL: pg_trgm GIN indexes on search_text and header_text, which ILIKE uses.
"""
import logging

from django.db import migrations, models

log = logging.getLogger(__name__)

SQLITE_TABLES = [
    "CREATE VIRTUAL TABLE mailstore_blob_text_fts USING fts5("
    "search_text, content='mailstore_blob', content_rowid='id', tokenize='trigram')",
    "CREATE VIRTUAL TABLE mailstore_blob_header_fts USING fts5(header_text, tokenize='trigram')",
]
SQLITE_TRIGGERS = [
    "CREATE TRIGGER mailstore_blob_fts_insert AFTER INSERT ON mailstore_blob BEGIN "
    "INSERT INTO mailstore_blob_text_fts(rowid, search_text) VALUES (new.id, new.search_text); "
    "INSERT INTO mailstore_blob_header_fts(rowid, header_text) VALUES (new.id, new.header_text); "
    "END",
    "CREATE TRIGGER mailstore_blob_fts_delete AFTER DELETE ON mailstore_blob BEGIN "
    "INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "DELETE FROM mailstore_blob_header_fts WHERE rowid = old.id; "
    "END",
    "CREATE TRIGGER mailstore_blob_fts_update AFTER UPDATE OF search_text, header_text ON mailstore_blob BEGIN "
    "INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO mailstore_blob_text_fts(rowid, search_text) VALUES (new.id, new.search_text); "
    "DELETE FROM mailstore_blob_header_fts WHERE rowid = old.id; "
    "INSERT INTO mailstore_blob_header_fts(rowid, header_text) VALUES (new.id, new.header_text); "
    "END",
]
SQLITE_FILL = [
    "INSERT INTO mailstore_blob_text_fts(mailstore_blob_text_fts) VALUES ('rebuild')",
    "INSERT INTO mailstore_blob_header_fts(rowid, header_text) SELECT id, header_text FROM mailstore_blob",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS mailstore_blob_fts_insert",
    "DROP TRIGGER IF EXISTS mailstore_blob_fts_delete",
    "DROP TRIGGER IF EXISTS mailstore_blob_fts_update",
    "DROP TABLE IF EXISTS mailstore_blob_text_fts",
    "DROP TABLE IF EXISTS mailstore_blob_header_fts",
]
POSTGRESQL = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX mailstore_blob_search_text_trgm ON mailstore_blob USING gin (search_text gin_trgm_ops)",
    "CREATE INDEX mailstore_blob_header_text_trgm ON mailstore_blob USING gin (header_text gin_trgm_ops)",
]
POSTGRESQL_DROP = [
    "DROP INDEX IF EXISTS mailstore_blob_search_text_trgm",
    "DROP INDEX IF EXISTS mailstore_blob_header_text_trgm",
]


def fill_header_text(apps, schema_editor):
    """Blobs stored before this migration: their header, read from storage."""
    from mailstore.mime import searchable_header
    from mailstore.storage import blob_storage

    Blob = apps.get_model("mailstore", "Blob")
    storage = blob_storage()
    batch = []
    for blob in Blob.objects.using(schema_editor.connection.alias).only("id", "name", "header_size").iterator():
        try:
            with storage.open(blob.name, "rb") as f:
                header = f.read(blob.header_size)
        except OSError:
            log.warning("blob %s unreadable: its header stays unsearchable", blob.name)
            continue
        blob.header_text = searchable_header(header)
        batch.append(blob)
        if len(batch) >= 500:
            Blob.objects.using(schema_editor.connection.alias).bulk_update(batch, ["header_text"])
            batch = []
    Blob.objects.using(schema_editor.connection.alias).bulk_update(batch, ["header_text"])


def create_index(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"sqlite": SQLITE_TABLES + SQLITE_TRIGGERS + SQLITE_FILL, "postgresql": POSTGRESQL}
    for sql in statements.get(vendor, []):
        schema_editor.execute(sql)


def drop_index(apps, schema_editor):
    statements = {"sqlite": SQLITE_DROP, "postgresql": POSTGRESQL_DROP}
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("mailstore", "0003_mailstore_ops"),
    ]

    operations = [
        migrations.AddField(
            model_name="blob",
            name="header_text",
            field=models.TextField(blank=True, db_default="", default=""),
        ),
        migrations.RunPython(fill_header_text, migrations.RunPython.noop),
        migrations.RunPython(create_index, drop_index),
    ]
