"""ENVELOPE and BODYSTRUCTURE move from two Blob columns into BlobSummary, a narrow table
of their own (see its docstring); the stored bytes move with them."""
import django.db.models.deletion
from django.db import migrations, models


MOVE_TO_SUMMARIES = (
    "INSERT INTO mailstore_blobsummary (blob_id, envelope, bodystructure) "
    "SELECT id, imap_envelope, imap_bodystructure FROM mailstore_blob "
    "WHERE imap_envelope IS NOT NULL AND imap_bodystructure IS NOT NULL"
)
MOVE_BACK = (
    "UPDATE mailstore_blob SET "
    "imap_envelope = (SELECT envelope FROM mailstore_blobsummary s WHERE s.blob_id = mailstore_blob.id), "
    "imap_bodystructure = (SELECT bodystructure FROM mailstore_blobsummary s WHERE s.blob_id = mailstore_blob.id)"
)


class Migration(migrations.Migration):

    dependencies = [
        ("mailstore", "0010_imap_summary"),
    ]

    operations = [
        migrations.CreateModel(
            name="BlobSummary",
            fields=[
                (
                    "blob",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="summary",
                        serialize=False,
                        to="mailstore.blob",
                    ),
                ),
                ("envelope", models.BinaryField(editable=False)),
                ("bodystructure", models.BinaryField(editable=False)),
            ],
        ),
        migrations.RunSQL(MOVE_TO_SUMMARIES, MOVE_BACK),
        migrations.RemoveField(model_name="blob", name="imap_bodystructure"),
        migrations.RemoveField(model_name="blob", name="imap_envelope"),
    ]
