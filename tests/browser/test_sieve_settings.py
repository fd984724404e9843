"""Issue 8 in Chromium: a user creates a filter and a vacation reply in the webmail and
both take effect on the next delivery (mta.inbound, as SMTP delivers)."""
import pytest
from playwright.sync_api import expect

from accounts.resolve import resolve
from mailstore import actions as store
from mailstore.models import Message
from mta import inbound
from mta.models import QueuedRecipient
from tests.webmail.conftest import make_mail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_filter_and_a_vacation_reply_made_in_the_browser_take_effect(alice, page, sign_in):
    store.create_folder(alice, "Invoices")
    sign_in(page, alice)
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("link", name="Filters").click()
    page.get_by_label("Name", exact=True).fill("Invoices")
    page.get_by_label("If", exact=True).select_option("subject")
    page.get_by_label("Comparison").select_option("contains")
    page.get_by_label("Value").fill("invoice")
    page.get_by_label("Then", exact=True).select_option("move")
    page.get_by_label("Folder, flag, address or text").fill("Invoices")
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_text("Settings saved.")).to_be_visible()
    expect(page.locator("ol.rules li")).to_have_count(1)

    page.get_by_role("link", name="Vacation reply").click()
    page.get_by_label("Send an automatic reply").check()
    page.get_by_label("Subject").fill("Out of office")
    page.get_by_label("Message").fill("Back next week.")
    page.get_by_role("button", name="Save vacation reply").click()
    expect(page.get_by_text("Settings saved.")).to_be_visible()

    raw = make_mail("Your invoice 42", sender="Mallory <mallory@elsewhere.test>")
    reply = inbound.accept_message(raw, mail_from="mallory@elsewhere.test", resolutions=[resolve(alice.address)], client_ip="127.0.0.1")
    assert reply.startswith("250")
    [filed] = Message.objects.filter(folder__account=alice, folder__name="Invoices")
    assert filed.subject == "Your invoice 42"
    assert QueuedRecipient.objects.filter(address="mallory@elsewhere.test").count() == 1  # the vacation reply
