"""The import and export page in headless Chromium, against `runweb` and a real Celery
worker (`runqueue`, the embedded broker) sharing this test's database and data dir:
upload → job done → messages visible, and a download whose ZIP holds the stored bytes."""
import io
import re
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings

# The browser suite's fixtures (web server, Chromium, sign-in), used here as they are.
from tests.browser.conftest import CHROMIUM, blob_dir, browser, fast_password_hashing, page, runweb_log_on_failure, sign_in, web_server  # noqa: F401
from tests.e2e.helpers import child_env, manage

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"SKIPPED: {CHROMIUM} is not installed (make debs-test)"),
]

MBOX = b"".join(
    b"From carol@elsewhere.test Mon Jan 15 10:3%d:00 2024\nFrom: carol@elsewhere.test\nSubject: Old letter %d\n"
    b"X-Status: F\n\nText %d.\n\n" % (i, i, i)
    for i in range(3)
)


@pytest.fixture
def worker():
    process = manage("runqueue", "--no-beat", "--concurrency", "2", env=child_env(django_settings.DATA_DIR),
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_an_uploaded_mbox_is_imported_by_a_worker_and_its_mail_shows(alice, page, sign_in, worker):
    from playwright.sync_api import expect

    from mailstore.models import Folder

    sign_in(page, alice)
    page.goto("/settings/")
    page.get_by_role("link", name="Import, export and other accounts").click()
    page.wait_for_url("**/settings/transfer/")
    page.get_by_label("File").set_input_files({"name": "old mail.mbox", "mimeType": "application/mbox", "buffer": MBOX})
    page.get_by_label("Into").select_option("Archive")
    page.get_by_role("button", name="Upload and import").click()
    expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
    row = page.locator("[data-job]").first
    expect(row.locator("[data-job-state]")).to_have_text("Done: 3 imported, 0 already there")
    expect(row.locator("progress")).to_have_attribute("value", "100")
    expect(row.locator("strong")).to_have_text("old mail.mbox")

    archive = Folder.objects.get(account=alice, name="Archive")
    page.goto(f"/f/{archive.pk}/")
    for i in range(3):
        expect(page.get_by_text(f"Old letter {i}")).to_be_visible()
    expect(page.locator("tr.flagged")).to_have_count(3)

    page.goto("/settings/transfer/")  # the finished job is listed, and can be removed
    expect(page.locator("[data-job] [data-job-state]")).to_have_text("Done: 3 imported, 0 already there")
    page.get_by_role("button", name="Remove from list").click()
    expect(page.get_by_text("Nothing imported yet.")).to_be_visible()


def test_a_folder_downloads_as_a_zip_of_the_stored_bytes(alice, page, sign_in):
    from mailstore import actions as store

    raw = b"From: carol@elsewhere.test\r\nSubject: Keep me\r\n\r\nK\xc3\xa4se\r\n"
    store.append(alice, "Archive", raw, flags=["\\Seen", "$Label1"])
    store.append(alice, "INBOX", b"Subject: not this one\r\n\r\nx\r\n")
    sign_in(page, alice)
    page.goto("/settings/transfer/")
    page.get_by_label("Folder", exact=True).select_option("Archive")
    page.get_by_label("Format").select_option("maildir")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename == "alice@example.test-Archive-maildir.zip"
    with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as archive:
        names = archive.namelist()
        assert names[1] == ".Archive/dovecot-keywords" and archive.read(names[1]) == b"0 $Label1\n"
        assert re.fullmatch(r"\.Archive/cur/\d+\.M1V\d+\.mailsuite,S=%d:2,Sa" % len(raw), names[0])
        assert archive.read(names[0]) == raw.replace(b"\r\n", b"\n")
