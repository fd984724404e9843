"""Uploads on several nodes: with blob storage on S3-compatible object storage (moto's
server on loopback), a webmail upload received on one node is kept in the bucket, a
worker on another node (another data dir) imports it, and the upload is deleted when
the job is done."""
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from mailstore.models import Message
from mailstore.storage import blob_storage_setting
from migration import actions, tasks
from tests.objectstore import CREDENTIALS, ObjectStore

MBOX = b"".join(
    b"From carol@elsewhere.test Mon Jan 15 10:30:00 2024\nFrom: carol@elsewhere.test\nSubject: letter %d\n"
    b"X-Status: F\n\nText %d.\n\n" % (i, i)
    for i in range(6)
)


@pytest.fixture
def s3_blobs(settings, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with ObjectStore() as store:
        settings.STORAGES = {**settings.STORAGES, "blobs": blob_storage_setting(store.url, Path(settings.DATA_DIR))}
        yield store


@pytest.fixture
def queued(monkeypatch):
    ids = []
    monkeypatch.setattr(tasks.run_transfer_job, "delay", ids.append)
    return ids


def files_under(directory):
    return [p for p in Path(directory).rglob("*") if p.is_file()]


@pytest.mark.parametrize("spawned_workers", [False, True], ids=["in-thread", "spawned-workers"])
def test_an_upload_received_on_one_node_is_imported_on_another(s3_blobs, alice, settings, tmp_path, queued,
                                                                monkeypatch, blob_dir, spawned_workers):
    if spawned_workers:  # the worker processes write the messages' bytes to the bucket themselves
        monkeypatch.setattr(actions, "SPAWN_MIN_BYTES", 0)
        monkeypatch.setattr(actions, "IMPORT_BATCH", 2)
    settings.DATA_DIR = tmp_path / "node-a"
    job = actions.save_upload(alice, SimpleUploadedFile("old.mbox", MBOX), folder="Archive")
    assert s3_blobs.objects() == {job.source: MBOX}

    settings.DATA_DIR = tmp_path / "node-b"
    job, report = actions.run_job(job.pk)
    assert (job.state, job.messages, job.error) == ("done", 6, "")
    assert report.workers == (actions.worker_plan(len(MBOX))[0] if spawned_workers else 0)
    stored = Message.objects.filter(folder__account=alice, folder__name="Archive").select_related("blob")
    assert sorted(m.subject for m in stored) == [f"letter {i}" for i in range(6)]
    assert all(m.flagged for m in stored)
    # The bucket holds the messages and no longer the upload; no node kept a file.
    assert sorted(s3_blobs.keys()) == sorted(m.blob.name for m in stored)
    assert files_under(tmp_path) == [] and files_under(blob_dir) == []


def test_a_discarded_upload_is_deleted_from_the_bucket(s3_blobs, alice, queued):
    job = actions.save_upload(alice, SimpleUploadedFile("old.mbox", MBOX))
    assert s3_blobs.keys() == [job.source]
    actions.discard_job(actions.cancel_job(job))
    assert s3_blobs.keys() == []
