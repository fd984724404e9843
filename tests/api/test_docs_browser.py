"""The interactive API docs in Chromium against `manage.py runweb`: Swagger UI and Redoc
render the operations from the files this server ships, and the page asks no other host.
The docs are public (like the schema); using the API needs a token or a session."""
import pytest

from tests.accounts.tenants import make_user
from tests.browser.conftest import blob_dir, browser, fast_password_hashing, page, runweb_log_on_failure, web_server  # noqa: F401
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def requests_elsewhere(page, web_server):
    """Requests to other hosts that left the browser. One the page's CSP blocks is reported
    by Chromium as a request that failed without reaching the network; it does not count."""
    asked = []

    def elsewhere(request):
        return not request.url.startswith((web_server, "data:", "blob:"))

    page.on("requestfinished", lambda request: elsewhere(request) and asked.append(request.url))
    page.on("requestfailed", lambda request: elsewhere(request) and "csp" not in (request.failure or "").lower()
            and asked.append(f"{request.url} ({request.failure})"))
    return asked


def test_it_renders_swagger_ui_from_local_files_and_tries_a_call(page, web_server):
    make_user("root", superuser=True)
    asked = requests_elsewhere(page, web_server)
    page.goto("/admin/login/?next=/api/docs/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/api/docs/")
    page.get_by_text("mailsuite API").first.wait_for()
    operation = page.locator(".opblock-summary-path", has_text="/api/v1/accounts/").first
    operation.wait_for()
    assert page.locator(".opblock").count() > 30
    assert asked == []


def test_it_renders_redoc_from_local_files(page, web_server):
    asked = requests_elsewhere(page, web_server)
    response = page.goto("/api/redoc/")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.locator("h1", has_text="mailsuite API").wait_for()
    page.locator("h2", has_text="List accounts").first.wait_for()
    assert asked == []
