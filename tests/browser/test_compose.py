"""Composing in a real browser: a message with an attachment to another local user, who
sees it arrive, downloads the file byte-identical and replies, and the conversation shows
both; drafts autosave."""
import re

import pytest
from playwright.sync_api import expect

from mailstore.models import Message
from tests.browser.conftest import TIMEOUT_MS
from tests.webmail.conftest import folder

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_compose_with_attachment_download_and_reply(alice, bob, browser, web_server, sign_in, tmp_path):
    data = bytes(range(256)) * 64 + b"\r\n\x00tail"
    upload = tmp_path / "plan.bin"
    upload.write_bytes(data)

    bob_context = browser.new_context(base_url=web_server, accept_downloads=True, locale="en-US")
    bob_page = bob_context.new_page()
    bob_page.set_default_timeout(TIMEOUT_MS)
    sign_in(bob_page, bob)
    expect(bob_page.locator("body[data-live=on]")).to_have_count(1)

    alice_context = browser.new_context(base_url=web_server, locale="en-US")
    page = alice_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, alice)
    page.get_by_role("link", name="Compose").click()
    page.wait_for_url("**/compose/")
    page.get_by_label("To", exact=True).fill("Bob <bob@example.test>")
    page.get_by_label("Subject", exact=True).fill("The plan")
    page.get_by_label("Message", exact=True).fill("Attached is the plan.")
    page.get_by_label("Attach files").set_input_files(str(upload))
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Message sent.")).to_be_visible()

    # Bob's open INBOX shows it without a reload.
    link = bob_page.get_by_role("link", name=re.compile("The plan"))
    expect(link).to_be_visible(timeout=5000)
    link.click()
    expect(bob_page.locator("#subject")).to_have_text("The plan")
    with bob_page.expect_download() as info:
        bob_page.get_by_role("link", name="plan.bin").click()
    saved = tmp_path / "downloaded.bin"
    info.value.save_as(saved)
    assert saved.read_bytes() == data

    bob_page.get_by_role("link", name="Reply", exact=True).click()
    bob_page.wait_for_url("**/compose/?reply=*")
    expect(bob_page.get_by_label("Subject", exact=True)).to_have_value("Re: The plan")
    expect(bob_page.get_by_label("Message", exact=True)).to_have_value(re.compile("> Attached is the plan."))
    bob_page.get_by_label("Message", exact=True).press("Control+Home")
    bob_page.get_by_label("Message", exact=True).type("Looks good. ")
    bob_page.get_by_role("button", name="Send").click()
    expect(bob_page.get_by_text("Message sent.")).to_be_visible()

    # Alice's INBOX has the answer, threaded on her message; her Sent has the original.
    page.goto("/")
    page.get_by_role("button", name="Group by conversation").click()
    conversation = page.get_by_role("link", name=re.compile("Re: The plan"))
    expect(conversation.locator(".thread-count")).to_have_text(re.compile("^2"))
    conversation.click()
    page.wait_for_url("**/conversation/")
    # The thread shows both: her message (from Sent, read, folded) and Bob's answer (open).
    entries = page.locator("details.conversation-message")
    expect(entries).to_have_count(2)
    expect(entries.nth(0).locator("summary")).to_contain_text("Sent")
    expect(entries.nth(0)).not_to_have_attribute("open", "")
    expect(entries.nth(1).locator(".plain").first).to_contain_text("Looks good.")
    entries.nth(0).locator("summary").click()
    expect(entries.nth(0).locator(".plain").first).to_contain_text("Attached is the plan.")
    expect(entries.nth(0).get_by_role("link", name="plan.bin")).to_be_visible()
    [original] = Message.objects.filter(folder=folder(alice, "Sent"))
    [answer] = Message.objects.filter(folder=folder(alice, "INBOX"))
    assert original.subject == "The plan" and answer.subject == "Re: The plan"
    assert Message.objects.get(folder=folder(bob, "INBOX")).answered
    from tests.conftest import message_bytes

    message_id = re.search(rb"Message-ID: (<[^>]+>)", message_bytes(original)).group(1)
    assert b"In-Reply-To: " + message_id in message_bytes(answer)
    bob_context.close()
    alice_context.close()


def test_drafts_autosave_and_resume(alice, page, sign_in):
    sign_in(page, alice)
    page.goto("/compose/")
    page.get_by_label("Subject", exact=True).fill("Unfinished thoughts")
    page.get_by_label("Message", exact=True).fill("First half")
    drafts = folder(alice, "Drafts")
    expect(page.locator(".autosave-status")).to_have_text(re.compile("Draft saved"))
    [draft] = Message.objects.filter(folder=drafts)
    page.get_by_label("Message", exact=True).fill("First half, second half")
    expect(page.locator("input[name=draft]")).not_to_have_value(f"{drafts.pk}:{draft.uid}")
    [replaced] = Message.objects.filter(folder=drafts)
    assert replaced.uid != draft.uid
    page.goto(f"/compose/?draft={drafts.pk}:{replaced.uid}")
    expect(page.get_by_label("Message", exact=True)).to_have_value("First half, second half")
    expect(page.get_by_label("Subject", exact=True)).to_have_value("Unfinished thoughts")


def test_undo_send_keeps_the_message_and_sending_again_delivers(alice, bob, page, sign_in):
    sign_in(page, alice)
    page.goto("/compose/")
    page.get_by_label("To", exact=True).fill("bob@example.test")
    page.get_by_label("Subject", exact=True).fill("Second thoughts")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text(re.compile("Sending in"))).to_be_visible()
    page.get_by_role("button", name="Undo").click()
    page.wait_for_timeout(6000)
    assert not Message.objects.filter(folder__account=bob).exists()
    expect(page.get_by_label("Subject", exact=True)).to_have_value("Second thoughts")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_text("Message sent.")).to_be_visible()
    assert Message.objects.get(folder=folder(bob, "INBOX")).subject == "Second thoughts"
