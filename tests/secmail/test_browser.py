"""In Chromium: alice and bob exchange a signed and encrypted message through the webmail
end to end, the server's stored copies are ciphertext, and bob sees it verified."""
import re
from pathlib import Path

import pytest

from secmail import actions
from tests.browser.conftest import CHROMIUM, TIMEOUT_MS, blob_dir, browser, fast_password_hashing, runweb_log_on_failure, sign_in, web_server  # noqa: F401
from tests.conftest import inbox, message_bytes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"SKIPPED: {CHROMIUM} is not installed (make debs-test)"),
]
PASSPHRASE = "key passphrase 1"


def open_page(browser, web_server):
    context = browser.new_context(base_url=web_server, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def unlock_key(page):
    page.goto("/security/keys/")
    page.locator("[data-unlock] input[type=password]").fill(PASSPHRASE)
    page.locator("[data-unlock]").get_by_role("button", name="Unlock").click()
    page.locator("[data-unlocked]").wait_for()


def test_a_signed_and_encrypted_message_between_two_users(alice, bob, browser, web_server, sign_in):  # noqa: F811
    from playwright.sync_api import expect

    for account in (alice, bob):
        actions.set_published(actions.generate_openpgp_key(account, passphrase=PASSPHRASE), True)

    page = open_page(browser, web_server)
    sign_in(page, alice)
    unlock_key(page)
    page.goto("/compose/")
    page.get_by_label("To", exact=True).fill("Bob <bob@example.test>")
    page.get_by_label("Subject", exact=True).fill("Launch date")
    page.get_by_label("Message", exact=True).fill("The launch is on Friday.")
    page.get_by_label("Sign").check()
    page.get_by_label("Encrypt").check()
    expect(page.locator("[data-readiness]")).to_have_text("Every recipient can receive encrypted mail.")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Message sent.")).to_be_visible()

    [stored] = inbox(bob)
    assert b"Friday" not in message_bytes(stored) and b"-----BEGIN PGP MESSAGE-----" in message_bytes(stored)
    assert b"Launch date" not in message_bytes(stored)  # the subject travels encrypted: "..." outside

    bob_page = open_page(browser, web_server)
    sign_in(bob_page, bob)
    bob_page.get_by_role("link", name=re.compile(r"\.\.\.")).click()
    expect(bob_page.locator('[data-badge="locked"]')).to_be_visible()
    unlock_key(bob_page)
    bob_page.goto(f"/f/{stored.folder_id}/m/{stored.uid}/")
    expect(bob_page.locator('[data-badge="verified"]')).to_contain_text("Signed by alice@example.test")
    expect(bob_page.locator('[data-badge="encrypted"]')).to_be_visible()
    expect(bob_page.locator(".message-body")).to_contain_text("The launch is on Friday.")
    expect(bob_page.locator("#subject")).to_have_text("Launch date")
