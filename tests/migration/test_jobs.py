"""Transfer jobs: imports, exports and migrations as TransferJob rows run by a Celery task
(called directly here, and once on a real worker), with progress, cancel and resume."""
import io
import os
import re
import signal
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from mailstore.models import Message
from migration import actions, sources, tasks
from migration.models import ImportedMessage, TransferJob
from tests.conftest import PASSWORD


def write_mbox_bytes(count):
    for i in range(count):
        yield (b"From carol@elsewhere.test Mon Jan 15 10:30:00 2024\n"
               + f"From: carol@elsewhere.test\nSubject: number {i}\nMessage-ID: <{i}@elsewhere.test>\n\n"
               f"Body {i}.\n\n".encode())


def write_mbox(path, count):
    with open(path, "wb") as f:
        for chunk in write_mbox_bytes(count):
            f.write(chunk)
    return path


def files_under(directory):
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*") if p.is_file())


def inbox_count(account):
    return Message.objects.filter(folder__account=account, folder__name="INBOX").count()


@pytest.fixture
def queued(monkeypatch):
    """Job ids handed to the Celery task, instead of a broker."""
    ids = []
    monkeypatch.setattr(tasks.run_transfer_job, "delay", ids.append)
    return ids


def test_it_queues_a_job_after_commit_and_the_task_runs_it(alice, tmp_path, queued, django_capture_on_commit_callbacks):
    path = write_mbox(tmp_path / "box", 5)
    with django_capture_on_commit_callbacks(execute=True):
        job = actions.create_job(alice, "import", source=path, folder="Old", total_bytes=actions.source_size(path))
    assert queued == [job.pk]
    assert (job.state, job.messages, job.percent) == ("queued", 0, 0)

    tasks.run_transfer_job(job.pk)
    job.refresh_from_db()
    assert (job.state, job.messages, job.already, job.percent, job.error) == ("done", 5, 0, 100, "")
    assert job.bytes == sum(m.size for m in Message.objects.filter(folder__account=alice, folder__name="Old"))
    assert job.started <= job.finished
    assert job.report.splitlines() == ["created folder Old", "Old: 5 imported", "5 imported, 0 already there"]

    tasks.run_transfer_job(job.pk)  # delivered twice: the second run finds it done and does nothing
    assert TransferJob.objects.get(pk=job.pk).messages == 5


def test_a_cancelled_job_stops_between_messages_and_resumes_where_it_stopped(alice, tmp_path, monkeypatch):
    path = write_mbox(tmp_path / "box", 50)
    monkeypatch.setattr(actions, "IMPORT_BATCH", 10)
    monkeypatch.setattr(actions, "CANCEL_CHECK_SECONDS", 0)
    job = actions.create_job(alice, "import", source=path, background=False)
    read_path = sources.read_path

    def cancelled_after_25(*args, **kwargs):
        for number, message in enumerate(read_path(*args, **kwargs), 1):
            if number == 26:
                actions.cancel_job(job)  # as the admin or webmail would, from another process
            yield message

    monkeypatch.setattr(sources, "read_path", cancelled_after_25)
    job, report = actions.run_job(job.pk)
    # Two whole batches were stored; the half batch read before the flag was seen was dropped.
    assert (job.state, job.messages, inbox_count(alice)) == ("cancelled", 20, 20)
    assert ImportedMessage.objects.filter(account=alice).count() == 20
    assert job.finished is not None

    monkeypatch.setattr(sources, "read_path", read_path)
    job = actions.resume_job(job, background=False)
    assert (job.state, job.cancel_requested) == ("queued", False)
    job, report = actions.run_job(job.pk)
    assert (job.state, job.messages, job.already, inbox_count(alice)) == ("done", 30, 20, 50)


def in_a_thread(function, *args):
    """function(*args) run in another thread, as Celery's thread pool runs a job (with its
    own database connection: the test must be transactional)."""
    import threading

    from django.db import connections

    results = []

    def run():
        try:
            results.append(function(*args))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert results, "the thread failed or timed out"
    return results[0]


@pytest.mark.django_db(transaction=True)
def test_an_upload_imported_by_worker_processes_is_cancelled_and_resumed(alice, monkeypatch, blob_dir, queued):
    monkeypatch.setattr(actions, "IMPORT_BATCH", 10)
    monkeypatch.setattr(actions, "CANCEL_CHECK_SECONDS", 0)
    monkeypatch.setattr(actions, "SPAWN_MIN_BYTES", 0)
    job = actions.save_upload(alice, SimpleUploadedFile("box.mbox", b"".join(write_mbox_bytes(50))))
    read_path = sources.read_path

    def cancelled_after_35(*args, **kwargs):
        for number, message in enumerate(read_path(*args, **kwargs), 1):
            if number == 36:
                actions.cancel_job(job)
            yield message

    monkeypatch.setattr(sources, "read_path", cancelled_after_35)
    job, report = in_a_thread(actions.run_job, job.pk)
    assert (job.state, report.worker_start) == ("cancelled", "spawn") and report.workers >= 1
    # Batches prepared but not yet committed were dropped with their bytes: what is stored,
    # the ledger and the message files agree, and the upload is kept for the resume.
    stored = inbox_count(alice)
    assert stored < 50 and stored == job.messages == ImportedMessage.objects.filter(account=alice).count()
    assert len(files_under(blob_dir)) == stored + 1 and job.source in files_under(blob_dir)

    monkeypatch.setattr(sources, "read_path", read_path)
    job, report = in_a_thread(actions.run_job, actions.resume_job(job, background=False).pk)
    assert (job.state, job.messages, job.already, inbox_count(alice)) == ("done", 50 - stored, stored, 50)
    assert len(files_under(blob_dir)) == 50 and job.source not in files_under(blob_dir)


def test_a_queued_job_is_cancelled_at_once_and_never_runs(alice, tmp_path, queued):
    job = actions.create_job(alice, "import", source=write_mbox(tmp_path / "box", 3))
    job = actions.cancel_job(job)
    assert (job.state, job.cancel_requested) == ("cancelled", True)
    assert actions.run_job(job.pk)[1] is None
    assert inbox_count(alice) == 0


def test_a_refusal_fails_the_job_with_its_reason(alice, tmp_path):
    job = actions.create_job(alice, "import", source=tmp_path / "missing", background=False)
    job, _ = actions.run_job(job.pk)
    assert (job.state, job.error) == ("failed", f"{tmp_path / 'missing'} does not exist")
    with pytest.raises(actions.TransferError, match="only a failed or cancelled job can be resumed"):
        actions.resume_job(actions.resume_job(job, background=False), background=False)


def test_an_export_job_writes_the_folder(alice, tmp_path):
    actions.import_path(alice, write_mbox(tmp_path / "box", 4))
    job = actions.create_job(alice, "export", source=tmp_path / "out", folder="INBOX", options={"format": "maildir"},
                             background=False)
    job, report = actions.run_job(job.pk)
    assert (job.state, job.messages) == ("done", 4)
    assert len(os.listdir(tmp_path / "out" / "cur")) == 4
    with pytest.raises(actions.TransferError, match="unknown export format 'zip'"):
        actions.create_job(alice, "export", source=tmp_path / "x", options={"format": "zip"})


def test_an_upload_is_kept_in_blob_storage_until_its_import_is_done(alice, tmp_path, settings, queued, blob_dir):
    settings.DATA_DIR = tmp_path / "data"
    raw = write_mbox(tmp_path / "box", 3).read_bytes()
    job = actions.save_upload(alice, SimpleUploadedFile("Old mail.mbox", raw), folder="Archive")
    assert (job.label, job.folder, job.total_bytes, job.remove_source) == ("Old mail.mbox", "Archive", len(raw), True)
    assert files_under(blob_dir) == [job.source]
    assert job.source.startswith("uploads/") and job.source.endswith("/Old mail.mbox")
    assert (blob_dir / job.source).read_bytes() == raw
    job, _ = actions.run_job(job.pk)
    assert (job.state, job.messages) == ("done", 3)
    assert [name for name in files_under(blob_dir) if name.startswith("uploads")] == []
    assert not (blob_dir / "uploads").exists() or list((blob_dir / "uploads").iterdir()) == []

    with pytest.raises(actions.TransferError, match="folder Nope does not exist"):
        actions.save_upload(alice, SimpleUploadedFile("x.mbox", raw), folder="Nope")
    assert [name for name in files_under(blob_dir) if name.startswith("uploads")] == []
    assert not (tmp_path / "data").exists()  # nothing in the data dir


def test_a_zip_upload_counts_its_members_for_the_progress_bar(alice, queued):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.eml", b"Subject: a\n\n" + b"x" * 5000)
    job = actions.save_upload(alice, SimpleUploadedFile("mail.zip", buffer.getvalue()))
    assert job.total_bytes == 5000 + len(b"Subject: a\n\n") > len(buffer.getvalue())


def test_an_upload_that_disappeared_fails_its_job_with_a_clear_reason(alice, queued, blob_dir):
    job = actions.save_upload(alice, SimpleUploadedFile("x.mbox", b"From a\n"))
    (blob_dir / job.source).unlink()
    job, _ = actions.run_job(job.pk)
    assert (job.state, job.error) == ("failed", "the uploaded file is no longer there: upload it again")


def test_discarding_a_job_removes_its_upload(alice, queued, blob_dir):
    job = actions.save_upload(alice, SimpleUploadedFile("x.mbox", b"From a\n"))
    with pytest.raises(actions.TransferError, match="cancel it first"):
        actions.discard_job(job)
    assert files_under(blob_dir) == [job.source]
    actions.discard_job(actions.cancel_job(job))
    assert files_under(blob_dir) == []
    assert not TransferJob.objects.exists()


def test_a_job_kept_in_the_data_dir_by_an_earlier_version_still_runs_and_tidies_up(alice, tmp_path, settings, queued):
    settings.DATA_DIR = tmp_path / "data"
    directory = tmp_path / "data" / actions.UPLOADS_DIR / "0123abcd"
    directory.mkdir(parents=True)
    path = write_mbox(directory / "old.mbox", 2)
    job = actions.create_job(alice, "import", source=path, label="old.mbox", remove_source=True)
    job, _ = actions.run_job(job.pk)
    assert (job.state, job.messages) == ("done", 2)
    assert os.listdir(tmp_path / "data" / actions.UPLOADS_DIR) == []


@pytest.mark.django_db(transaction=True)
def test_a_large_upload_run_by_a_worker_thread_is_parsed_by_spawned_processes(alice, queued, monkeypatch):
    """Celery runs jobs in threads, where forking is unsafe: a large upload still gets
    worker processes, spawned; a small one is done in the thread alone."""
    monkeypatch.setattr(actions, "IMPORT_BATCH", 10)
    raw = b"".join(write_mbox_bytes(40))
    monkeypatch.setattr(actions, "SPAWN_MIN_BYTES", len(raw))
    small = actions.save_upload(alice, SimpleUploadedFile("small.mbox", raw[: len(raw) // 2].rsplit(b"\nFrom ", 1)[0]))
    large = actions.save_upload(alice, SimpleUploadedFile("large.mbox", raw), folder="Archive")
    small, small_report = in_a_thread(actions.run_job, small.pk)
    large, large_report = in_a_thread(actions.run_job, large.pk)
    assert (small.state, small_report.workers) == ("done", 0)
    assert (large.state, large.messages, large_report.worker_start) == ("done", 40, "spawn")
    assert large_report.workers == actions.worker_plan(len(raw))[0] >= 1
    assert f"parsed and stored by {large_report.workers} worker processes (spawn)" in large.report
    subjects = set(Message.objects.filter(folder__account=alice, folder__name="Archive").values_list("subject", flat=True))
    assert subjects == {f"number {i}" for i in range(40)}


def test_an_upload_name_is_only_a_file_name(alice, queued):
    for given, kept in [("...", "upload"), ("..\\evil.mbox", "_evil.mbox"), (".hidden", "hidden"), ("a\nb.mbox", "a_b.mbox")]:
        job = actions.save_upload(alice, SimpleUploadedFile(given, b"From a\n"))
        assert job.label == kept
        assert re.fullmatch(rf"uploads/[0-9a-f]{{32}}/{re.escape(kept)}", job.source)


def test_the_cli_queues_lists_cancels_and_resumes_jobs(alice, tmp_path, queued, django_capture_on_commit_callbacks):
    path = write_mbox(tmp_path / "box", 2)
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("mail", "import", "alice@example.test", str(path), "--background", stdout=out)
    [job] = TransferJob.objects.all()
    assert queued == [job.pk]
    assert out.getvalue().startswith(f"job {job.pk} queued: import for alice@example.test")
    assert inbox_count(alice) == 0

    out = io.StringIO()
    call_command("mail", "jobs", "alice@example.test", "--active", stdout=out)
    assert out.getvalue().split()[:6] == [str(job.pk), "alice@example.test", "import", "queued", "0%", "0"]

    call_command("mail", "job-cancel", str(job.pk), stdout=io.StringIO())
    with pytest.raises(CommandError, match=f"job {job.pk} is cancelled: nothing to cancel"):
        call_command("mail", "job-cancel", str(job.pk))
    out = io.StringIO()
    call_command("mail", "job-resume", str(job.pk), "--foreground", stdout=out)
    assert "imported 2 messages" in out.getvalue()
    assert TransferJob.objects.get(pk=job.pk).state == "done"
    with pytest.raises(CommandError, match="no job 999"):
        call_command("mail", "job-cancel", "999")


def queue_from_the_cli(alice, tmp_path, env):
    """`mail import --background` in another process."""
    from tests.e2e.helpers import manage

    path = write_mbox(tmp_path / "box", 30)
    queued = manage("mail", "import", "alice@example.test", str(path), "--background", env=env,
                    stdout=-1, stderr=-1, text=True)
    out, err = queued.communicate(timeout=60)
    assert queued.returncode == 0, err
    return TransferJob.objects.get()


def queue_an_upload_for_two_worker_processes(alice, tmp_path, env):
    """An upload, with worker processes asked for: they are spawned, not forked from the
    threaded worker."""
    from tests.e2e.helpers import manage

    job = actions.save_upload(alice, SimpleUploadedFile("old.mbox", b"".join(write_mbox_bytes(30))))
    # Queued for this process's broker (not a worker's): hand it to the children's with
    # job-resume, asking for two worker processes as a large upload gets.
    actions.cancel_job(job)
    TransferJob.objects.filter(pk=job.pk).update(options={**job.options, "workers": 2})
    resumed = manage("mail", "job-resume", str(job.pk), env=env, stdout=-1, stderr=-1, text=True)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    return job


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("queue", "seconds", "report_says"), [
    pytest.param(queue_from_the_cli, 60, "", id="cli"),
    pytest.param(queue_an_upload_for_two_worker_processes, 90, "parsed and stored by 2 worker processes (spawn)",
                 id="upload-with-worker-processes"),
])
def test_a_real_worker_runs_a_background_import(settings, alice, tmp_path, queued, queue, seconds, report_says):
    """A job queued by one process and run by `runqueue` (Celery on the embedded broker,
    its thread pool) in another, sharing this test's database and data dir."""
    from tests.e2e.helpers import child_env, manage, settings_blob_location

    settings_blob_location(settings, settings.DATA_DIR)
    env = child_env(settings.DATA_DIR)
    job = queue(alice, tmp_path, env)
    worker = manage("runqueue", "--no-beat", "--concurrency", "2", env=env, stdout=-3, stderr=-3)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if not job.active:
                break
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    assert (job.state, job.messages, job.error) == ("done", 30, "")
    assert report_says in job.report
    assert inbox_count(alice) == 30
    if job.source.startswith(f"{actions.UPLOADS_PREFIX}/"):  # an imported upload is removed
        assert not (Path(settings.DATA_DIR) / "blobs" / actions.UPLOADS_PREFIX / job.source.split("/")[1]).exists()


def test_a_background_migration_keeps_the_password_encrypted_until_done(alice, queued):
    job = actions.create_job(alice, "migrate", source="bob@127.0.0.1:1", password=PASSWORD,
                             options={"host": "127.0.0.1", "port": 1, "user": "bob", "tls": "none"})
    assert job.secret.startswith("fernet:") and PASSWORD not in job.secret
    job, _ = actions.run_job(job.pk)
    assert (job.state, job.error) == ("failed", "cannot connect to 127.0.0.1:1: connection refused")
    assert job.secret  # kept: the job can be resumed without asking again
    with pytest.raises(actions.TransferError, match="needs the remote password"):
        actions.create_job(alice, "migrate", source="x", options={})


def test_the_admin_lists_jobs_with_progress_and_cancels_them(alice, admin_client, tmp_path, queued):
    from django.urls import reverse

    running = actions.create_job(alice, "import", source=tmp_path / "a.mbox", label="a.mbox", total_bytes=1000)
    TransferJob.objects.filter(pk=running.pk).update(state="running", read_bytes=420, messages=7)
    page = admin_client.get(reverse("admin:migration_transferjob_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert '<progress max="100" value="42">42%</progress> 42%' in text and "a.mbox" in text

    detail = admin_client.get(reverse("admin:migration_transferjob_change", args=[running.pk]))
    assert detail.status_code == 200 and "42%" in detail.content.decode()

    admin_client.post(reverse("admin:migration_transferjob_changelist"),
                      {"action": "cancel", "_selected_action": [running.pk]})
    running.refresh_from_db()
    assert (running.state, running.cancel_requested) == ("running", True)  # the worker stops it


def test_a_job_whose_worker_died_can_be_resumed(alice, tmp_path, queued):
    from datetime import timedelta

    from django.utils import timezone

    from migration.models import STALL_AFTER

    job = actions.create_job(alice, "import", source=write_mbox(tmp_path / "box", 2))
    TransferJob.objects.filter(pk=job.pk).update(state="running", updated=timezone.now() - timedelta(minutes=1))
    job.refresh_from_db()
    with pytest.raises(actions.TransferError, match="is running"):
        actions.resume_job(job, background=False)
    TransferJob.objects.filter(pk=job.pk).update(updated=timezone.now() - STALL_AFTER - timedelta(seconds=1))
    job.refresh_from_db()
    assert job.stalled
    job, _ = actions.run_job(actions.resume_job(job, background=False).pk)
    assert (job.state, job.messages) == ("done", 2)
