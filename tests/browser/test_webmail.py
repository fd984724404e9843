"""The webmail in a real browser: sign in, read, act, live updates, phone, Spanish."""
import re
import time

import pytest
from playwright.sync_api import expect

from mailstore import actions as store
from tests.webmail.conftest import deliver, folder, make_mail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Held(list):
    """The routes hold_requests() holds, and the URL it holds them for."""


def hold_requests(page, url, *, resource_type=None):
    """Requests to `url` (of `resource_type`, if given) hang until release(); returns the held list."""
    held = Held()

    def route(request_route):
        if resource_type in (None, request_route.request.resource_type):
            held.append(request_route)
        else:
            request_route.continue_()

    page.route(url, route)
    held.url = url
    return held


def release(page, held):
    for request_route in held:
        request_route.continue_()
    page.unroute(held.url)


def wait_until(page, condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def test_sign_in_read_and_sign_out(alice, page, sign_in):
    deliver(alice, make_mail("Welcome aboard", html="<p>Hello <b>Alice</b></p>"))
    sign_in(page, alice)
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["sessionid"]["httpOnly"] and cookies["sessionid"]["secure"] and cookies["sessionid"]["expires"] == -1
    expect(page.locator(".folder-link.current .count")).to_have_text(re.compile("^1"))
    page.get_by_role("link", name=re.compile("Welcome aboard")).click()
    expect(page.locator("#subject")).to_have_text("Welcome aboard")
    frame = page.frame_locator("iframe.body-frame")
    expect(frame.locator("b")).to_have_text("Alice")
    expect(page.locator(".folder-link.current .count")).to_have_count(0)  # read, and the tree knows
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login/"))
    page.goto("/")
    page.wait_for_url("**/login/?next=%2F")


def test_new_mail_appears_without_reload_and_changes_elsewhere_update_the_page(alice, page, sign_in):
    first = deliver(alice, make_mail("Older news"))
    sign_in(page, alice)
    page.evaluate("window.__same_page = true")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    deliver(alice, make_mail("Fresh from the bus"))
    expect(page.get_by_text("Fresh from the bus")).to_be_visible(timeout=5000)
    expect(page.locator(".folder-link.current .count")).to_have_text(re.compile("^2"))
    # Another client (IMAP, say) flags one message and moves the other away.
    inbox = folder(alice, "INBOX")
    store.store_flags(inbox, [first.uid], mode="add", flags=["\\Flagged"])
    expect(page.locator(f'tr[data-uid="{first.uid}"].flagged')).to_have_count(1, timeout=5000)
    store.move_messages(inbox, [first.uid], "Archive")
    expect(page.locator(f'tr[data-uid="{first.uid}"]')).to_have_count(0, timeout=5000)
    assert page.evaluate("window.__same_page") is True


def test_the_open_message_follows_flag_changes_made_elsewhere(alice, page, sign_in):
    message = deliver(alice, make_mail("Watch me"))
    sign_in(page, alice)
    page.goto(f"/f/{message.folder_id}/m/{message.uid}/")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    store.store_flags(folder(alice, "INBOX"), [message.uid], mode="add", flags=["\\Flagged"])
    expect(page.locator("#message-state .badge.flagged")).to_be_visible(timeout=5000)
    store.move_messages(folder(alice, "INBOX"), [message.uid], "Archive")
    expect(page.locator("#live-notice")).to_have_text("This message was moved or deleted.", timeout=5000)


def test_download_is_byte_identical_and_images_preview(alice, page, sign_in, tmp_path):
    data = bytes(range(256)) * 100 + b"\r\n\x00end"
    message = deliver(alice, make_mail("With a file", attachments=[("report.bin", "application/octet-stream", data)]))
    sign_in(page, alice)
    page.goto(f"/f/{message.folder_id}/m/{message.uid}/")
    with page.expect_download() as info:
        page.get_by_role("link", name="report.bin").click()
    download = info.value
    assert download.suggested_filename == "report.bin"
    path = tmp_path / "report.bin"
    download.save_as(path)
    assert path.read_bytes() == data


def test_bulk_move_search_and_folders(alice, page, sign_in):
    for subject in ("Invoice 17", "Party on Friday", "Invoice 18"):
        deliver(alice, make_mail(subject))
    sign_in(page, alice)
    page.get_by_role("checkbox", name=re.compile("Invoice 17")).check()
    page.get_by_role("checkbox", name=re.compile("Invoice 18")).check()
    page.get_by_label("Move to folder").select_option(label="Archive")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator(".message-row")).to_have_count(1)
    page.get_by_role("searchbox", name="Search mail").fill("invoice")
    page.get_by_label("Where to search").select_option("all")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".message-row")).to_have_count(2)
    expect(page.locator("td.c-folder").first).to_have_text("Archive")
    page.get_by_role("link", name="Manage folders").click()
    page.get_by_label("Name", exact=True).fill("Receipts")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#tree")).to_contain_text("Receipts")


def test_a_late_live_update_does_not_paint_an_old_page_over_a_new_one(alice, page, sign_in):
    for subject in ("Invoice 17", "Party on Friday", "Invoice 18"):
        deliver(alice, make_mail(subject))
    sign_in(page, alice)
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    inbox_url = page.url
    held = hold_requests(page, lambda url: url == inbox_url, resource_type="fetch")
    deliver(alice, make_mail("Late news"))  # the inbox's live refresh starts, and hangs
    wait_until(page, lambda: held)
    page.get_by_role("searchbox", name="Search mail").fill("invoice")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".message-row")).to_have_count(2)
    with page.expect_event("requestfinished", lambda request: request.url == inbox_url):
        release(page, held)
    page.wait_for_timeout(500)  # time enough for the inbox's answer to be swapped in, were it
    expect(page.locator(".message-row")).to_have_count(2)
    expect(page.get_by_text("Late news")).to_have_count(0)


def test_spam_button_moves_to_junk(alice, page, sign_in):
    message = deliver(alice, make_mail("Cheap pills"))
    sign_in(page, alice)
    page.goto(f"/f/{message.folder_id}/m/{message.uid}/")
    page.get_by_role("button", name="Spam").click()
    page.wait_for_url(re.compile(r"/f/\d+/$"))
    assert list(store.Message.objects.filter(folder__account=alice, folder__name="Junk").values_list("subject", flat=True)) == ["Cheap pills"]


def test_a_phone_sized_screen(alice, browser, web_server, sign_in):
    deliver(alice, make_mail("Small screens", text="Read on the bus"))
    context = browser.new_context(base_url=web_server, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, alice)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(page.locator("#sidebar")).to_be_hidden()
    page.get_by_role("button", name="Folders").click()
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Compose"))).to_be_visible()
    page.get_by_role("button", name="Folders").click()
    page.get_by_role("link", name=re.compile("Small screens")).click()
    expect(page.locator(".plain")).to_have_text("Read on the bus\n")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    context.close()


def test_spanish_for_a_spanish_browser(alice, browser, web_server):
    context = browser.new_context(base_url=web_server, locale="es-ES")
    page = context.new_page()
    page.goto("/login/")
    page.get_by_label("Dirección de correo").fill(alice.address)
    page.get_by_label("Contraseña").fill("correct horse battery staple")
    page.get_by_role("button", name="Iniciar sesión").click()
    expect(page.locator("#tree")).to_contain_text("Bandeja de entrada")
    expect(page.get_by_role("link", name="Redactar")).to_be_visible()
    expect(page.locator("#tree")).to_contain_text("Papelera")
    context.close()


def test_keyboard_j_k_and_enter_open_messages(alice, page, sign_in):
    for subject in ("first key", "second key"):
        deliver(alice, make_mail(subject))
    sign_in(page, alice)
    page.keyboard.press("j")
    expect(page.locator("tr.message-row.cursor")).to_contain_text("second key")
    # A live refresh of the list may swallow a key pressed while it swaps the rows; the
    # cursor stops at the last row, so pressing again until it gets there is safe.
    cursor = page.locator("tr.message-row.cursor")
    for _ in range(10):
        page.keyboard.press("j")
        if "first key" in cursor.inner_text():
            break
        page.wait_for_timeout(300)
    expect(cursor).to_contain_text("first key")
    page.keyboard.press("Enter")
    expect(page.locator("#subject")).to_have_text("first key")
    page.keyboard.press("k")
    expect(page.locator("#subject")).to_have_text("second key")


def test_grouped_search_and_deleting_a_whole_conversation(alice, page, sign_in):
    root = "<picnic@elsewhere.test>"
    deliver(alice, make_mail("Picnic?", text="Saturday?", headers=[("Message-ID", root)]))
    deliver(alice, make_mail("Re: Picnic?", text="Bring a blanket.", headers=[("In-Reply-To", root), ("References", root)]))
    deliver(alice, make_mail("Other news"))
    sign_in(page, alice)
    page.get_by_role("button", name="Group by conversation").click()
    expect(page.locator(".message-row")).to_have_count(2)
    page.get_by_role("searchbox", name="Search mail").fill("picnic")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".message-row")).to_have_count(1)  # two matches, one conversation
    # Opening it marks the newest message read, which refreshes the folder tree. That
    # refresh hangs here until the Delete is done: the page that follows the Delete must
    # not wait for it (it once queued behind it, and a newer refresh then dropped it).
    held = hold_requests(page, re.compile(r"/tree/"))
    page.get_by_role("link", name=re.compile("Re: Picnic")).click()
    expect(page.locator(".conversation-message")).to_have_count(2)
    wait_until(page, lambda: held)
    page.locator("#conversation").get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_text("Nothing matches this search.")).to_be_visible()
    release(page, held)
    trash = store.Message.objects.filter(folder__account=alice, folder__name="Trash")
    assert sorted(trash.values_list("subject", flat=True)) == ["Picnic?", "Re: Picnic?"]
