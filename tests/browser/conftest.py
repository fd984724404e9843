"""Browser tests: Debian's Chromium, headless, driven by Playwright, against `manage.py
runweb` (uvicorn, as in production) in a child process sharing this test's database,
data dir and blob storage, so mail delivered here reaches its change bus.

Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
between browser steps are plain synchronous calls, hence DJANGO_ALLOW_ASYNC_UNSAFE.
"""
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.conftest import PASSWORD
from tests.e2e.helpers import child_env, free_port, manage, settings_blob_location

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
CHROMIUM = "/usr/bin/chromium"
# How long actions and assertions wait: a form posted to the web server can take many seconds
# when the whole suite loads the machine (10 s was once too little in CI).
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.slow


def pytest_collection_modifyitems(items):
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"SKIPPED: {CHROMIUM} is not installed (Debian package chromium; make debs-test)")
        for item in items:
            if "tests/browser" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def fast_password_hashing():
    """The web server is another process with the real hashers: keep them here too."""


@pytest.fixture(autouse=True)
def blob_dir(settings):
    """Blobs where the web server looks for them: the data dir's."""
    location = Path(django_settings.DATA_DIR) / "blobs"
    settings_blob_location(settings, django_settings.DATA_DIR)
    return location


_runweb_logs = []  # the log of each runweb this process started


@pytest.fixture(autouse=True)
def runweb_log_on_failure():
    """What runweb logged during a test (warnings and errors) is printed, so a failing test shows it."""
    marks = {path: path.stat().st_size for path in _runweb_logs}
    yield
    for path in _runweb_logs:
        with path.open(errors="replace") as log:
            log.seek(marks.get(path, 0))
            text = log.read()
        if text:
            print(f"--- {path} during this test ---\n{text}")


@pytest.fixture(scope="session")
def web_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """runweb on a free loopback port; yields its base URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("runweb") / "runweb.log").open("w+")
    with django_db_blocker.unblock():
        env = child_env(django_settings.DATA_DIR, MAILSUITE_LOG_LEVEL="WARNING")
    process = manage("runweb", "--port", str(port), env=env, stdout=log, stderr=subprocess.STDOUT)
    _runweb_logs.append(Path(log.name))
    base = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"runweb did not start:\n{log.read()}")
            time.sleep(0.2)
    yield base
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop running in this thread
    # while it is open, and tests elsewhere start their own with asyncio.run().
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield browser
        browser.close()


class Watch:
    """What a page did that it must not: dialogs, script run in the mail frame, requests
    that leak (any URL with "xss" in it)."""

    def __init__(self, page):
        self.dialogs, self.console, self.leaks = [], [], []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("console", lambda message: self.console.append(message.text))
        page.on("request", lambda request: "xss" in request.url.lower() and self.leaks.append(request.url))

    @property
    def scripts_ran(self):
        # A sandboxed frame that runs alert() logs "Ignored call to 'alert()'".
        return [text for text in self.console if "Ignored call" in text or "xss-ran" in text]


@pytest.fixture
def page(browser, web_server):
    context = browser.new_context(base_url=web_server, accept_downloads=True, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.watch = Watch(page)
    yield page
    context.close()
    if page.watch.console:  # shown when the test fails
        print("--- the browser's console during this test ---", *page.watch.console, sep="\n")


@pytest.fixture
def sign_in():
    def sign_in(page, account, *, remember=False):
        page.goto("/login/")
        page.get_by_label("Email address").fill(account.address)
        page.get_by_label("Password").fill(PASSWORD)
        if remember:
            page.get_by_label("Remember me").check()
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/f/*/")
        return page

    return sign_in
