"""Drag and drop and uploads in a real browser: a file dropped on the compose form goes
out as an attachment, a file over the size limit is refused before anything is sent,
attachments go up with a progress bar (the upload throttled so it can be seen), a
refusal after the upload shows on the page, and messages dragged onto a folder of the
tree move there."""
import re

import pytest
from playwright.sync_api import expect

from mailstore.models import Message
from tests.conftest import message_bytes
from tests.webmail.conftest import deliver, folder, make_mail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A File built in the page and dropped on the element matching `selector`, as a desktop
# file manager's drop arrives: a DragEvent whose DataTransfer holds the file.
DROP_FILE = """([selector, name, size]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(size).fill(65)], name, { type: "application/octet-stream" }));
    const target = document.querySelector(selector);
    for (const type of ["dragenter", "dragover", "drop"]) {
        target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }
    return document.querySelector("#id_attachments").files.length;
}"""


def test_a_file_dropped_on_the_compose_form_is_sent_with_a_progress_bar(alice, bob, page, sign_in):
    sign_in(page, alice)
    page.goto("/compose/")
    page.get_by_label("To", exact=True).fill("bob@example.test")
    page.get_by_label("Subject", exact=True).fill("Dropped in")
    assert page.evaluate(DROP_FILE, ["textarea[name=body]", "dropped.bin", 600_000]) == 1
    expect(page.locator(".upload-error")).to_be_hidden()
    # Throttle the upload (about 300 kB/s) so the bar is seen moving.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 300_000,
    })
    page.get_by_role("button", name="Send").click()
    progress = page.get_by_label("Uploading attachments")
    expect(progress).to_be_visible()
    page.wait_for_function("() => +(document.querySelector('form[data-autosave]') || {dataset: {}}).dataset.uploaded > 0")
    expect(page.get_by_text("Message sent.")).to_be_visible()
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    [received] = Message.objects.filter(folder=folder(bob, "INBOX"))
    assert received.subject == "Dropped in" and received.has_attachments
    assert b'filename="dropped.bin"' in message_bytes(received)


def test_a_file_over_the_limit_is_refused_before_upload_and_a_server_refusal_shows(alice, page, sign_in):
    sign_in(page, alice)
    page.goto("/compose/")
    uploads = []
    page.on("request", lambda request: request.method == "POST" and "/compose/" in request.url and uploads.append(request))
    page.evaluate("() => { document.querySelector('form[data-autosave]').dataset.sizeLimit = '1000'; }")
    assert page.evaluate(DROP_FILE, ["form[data-autosave]", "huge.bin", 2000]) == 0
    error = page.locator(".upload-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("larger than the size limit")
    expect(error).to_contain_text("huge.bin")
    assert uploads == []
    # A file within the limit, but no recipient: the server's refusal replaces the page's
    # content after the upload, and the form is usable again.
    assert page.evaluate(DROP_FILE, ["form[data-autosave]", "small.bin", 100]) == 1
    expect(error).to_be_hidden()
    page.get_by_label("Subject", exact=True).fill("To nobody")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("No recipients")).to_be_visible()
    expect(page.get_by_label("Subject", exact=True)).to_have_value("To nobody")
    assert any("multipart/form-data" in request.headers.get("content-type", "") for request in uploads)
    page.get_by_label("To", exact=True).fill("alice@example.test")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_messages_dragged_onto_a_folder_move_there(alice, page, sign_in):
    for subject in ("Keep me here", "File me away", "File me too"):
        deliver(alice, make_mail(subject))
    sign_in(page, alice)
    page.get_by_role("checkbox", name=re.compile("File me too")).check()
    archive = page.locator("#tree .folder-link", has_text="Archive")
    # Dragging an unselected row drags it alone; a selected one takes the selection along.
    page.locator("tr.message-row", has_text="File me away").drag_to(archive)
    expect(page.locator(".message-row")).to_have_count(2)
    page.get_by_role("checkbox", name=re.compile("File me too")).check()
    page.locator("tr.message-row", has_text="Keep me here").get_by_role("checkbox").check()
    page.locator("tr.message-row", has_text="File me too").drag_to(archive)
    expect(page.locator(".message-row")).to_have_count(0)
    moved = sorted(Message.objects.filter(folder=folder(alice, "Archive")).values_list("subject", flat=True))
    assert moved == ["File me away", "File me too", "Keep me here"]


def test_a_live_update_during_a_drag_waits_for_the_drop(alice, page, sign_in):
    deliver(alice, make_mail("Drag me along"))
    sign_in(page, alice)
    expect(page.locator("body[data-live=on]")).to_have_count(1)  # the change stream is open
    row = page.locator("tr.message-row", has_text="Drag me along").locator("a.open")
    archive = page.locator("#tree .folder-link", has_text="Archive")
    start, target = row.bounding_box(), archive.bounding_box()
    page.mouse.move(start["x"] + 5, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(target["x"] + 10, target["y"] + target["height"] / 2, steps=8)
    # Mail arrives mid-drag: the page hears of it, and its list waits for the drop.
    deliver(alice, make_mail("Arrived meanwhile"))
    page.wait_for_timeout(1500)
    page.mouse.up()
    expect(page.locator(".message-row")).to_have_count(1)
    expect(page.locator("tr.message-row", has_text="Arrived meanwhile")).to_have_count(1)
    moved = list(Message.objects.filter(folder=folder(alice, "Archive")).values_list("subject", flat=True))
    assert moved == ["Drag me along"]
