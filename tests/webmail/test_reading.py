"""Reading: sanitised HTML in a sandboxed frame, remote images, attachments, cid: images,
charsets, RFC 2047, raw source, headers, trace."""
import base64
import re

import pytest

from webmail.models import TrustedSender
from tests.webmail.conftest import deliver, folder, make_mail

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def url(message, suffix=""):
    return f"/f/{message.folder_id}/m/{message.uid}/{suffix}"


def test_it_shows_plain_text_with_links_escaped(alice, alice_client):
    message = deliver(alice, make_mail("Links", text="See https://example.org/a_(b). <b>not bold</b>\nwww.example.net"))
    content = alice_client.get(url(message)).content.decode()
    assert '<a href="https://example.org/a_(b)" target="_blank" rel="noopener noreferrer">https://example.org/a_(b)</a>.' in content
    assert "&lt;b&gt;not bold&lt;/b&gt;" in content
    assert '<a href="https://www.example.net" target="_blank"' in content
    assert "<iframe" not in content


def test_html_goes_to_a_sandboxed_frame_with_a_strict_policy(alice, alice_client):
    message = deliver(alice, make_mail("Html", html="<p onclick='x()'>Hi<script>alert(1)</script></p><a href='javascript:alert(1)'>j</a>"))
    page = alice_client.get(url(message))
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page.content.decode()
    assert "script-src 'self'" in page["Content-Security-Policy"]
    body = alice_client.get(url(message, "body/"))
    policy = body["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "sandbox allow-popups" in policy and "script" not in policy
    assert body["X-Frame-Options"] == "SAMEORIGIN"
    html = body.content.decode()
    assert "<p>Hi</p>" in html
    assert "onclick" not in html and "<script" not in html and "javascript:" not in html


def test_remote_images_are_blocked_until_allowed_once_or_always(alice, alice_client):
    message = deliver(alice, make_mail("Pics", html='<p>x</p><img src="https://tracker.test/p.png"><img src="//cdn.test/q.png">'))
    page = alice_client.get(url(message)).content.decode()
    assert "2 remote images were blocked" in page
    body = alice_client.get(url(message, "body/"))
    assert "tracker.test" not in body.content.decode()
    assert "img-src data:;" in body["Content-Security-Policy"]
    once = alice_client.get(url(message, "body/?images=1"))
    assert 'src="https://tracker.test/p.png"' in once.content.decode()
    assert 'src="https://cdn.test/q.png"' in once.content.decode()
    assert "img-src data: https: http:" in once["Content-Security-Policy"]
    assert "blocked" not in alice_client.get(url(message, "?images=1")).content.decode()

    response = alice_client.post(url(message, "trust/"))
    assert response.status_code == 302
    assert TrustedSender.objects.filter(account=alice, address="mallory@elsewhere.test").exists()
    assert "tracker.test" in alice_client.get(url(message, "body/")).content.decode()
    assert "remote images were blocked" not in alice_client.get(url(message)).content.decode()


def test_attachments_download_byte_identical_and_preview_safe_types(alice, alice_client):
    blob = bytes(range(256)) * 40
    message = deliver(alice, make_mail("Files", attachments=[
        ("data.bin", "application/octet-stream", blob),
        ("pic.png", "image/png", PNG),
        ("doc.pdf", "application/pdf", b"%PDF-1.4\n%\xe2\xe3\n"),
        ("evil.svg", "image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"),
        ("page.html", "text/html", b"<script>alert(1)</script>"),
    ]))
    page = alice_client.get(url(message)).content.decode()
    for name in ("data.bin", "pic.png", "doc.pdf", "evil.svg", "page.html"):
        assert f">{name}</a>" in page
    assert "application/octet-stream · 10.0\xa0KB" in page
    download = alice_client.get(url(message, "part/2/"))
    assert download.content == blob
    assert download["Content-Disposition"] == 'attachment; filename="data.bin"'
    assert "sandbox" in download["Content-Security-Policy"]
    png = alice_client.get(url(message, "part/3/?inline=1"))
    assert png.content == PNG and png["Content-Type"] == "image/png" and png["Content-Disposition"].startswith("inline")
    pdf = alice_client.get(url(message, "part/4/?inline=1"))
    assert pdf["Content-Type"] == "application/pdf" and pdf["Content-Disposition"].startswith("inline")
    svg = alice_client.get(url(message, "part/5/?inline=1"))  # not previewable: always a download
    assert svg["Content-Disposition"].startswith("attachment") and "sandbox" in svg["Content-Security-Policy"]
    html = alice_client.get(url(message, "part/6/?inline=1"))
    assert html["Content-Type"] == "application/octet-stream" and html["Content-Disposition"].startswith("attachment")
    assert alice_client.get(url(message, "part/9/")).status_code == 404
    assert alice_client.get(url(message, "part/x/")).status_code == 404


def test_inline_cid_images_are_embedded_not_listed(alice, alice_client):
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "m@elsewhere.test", "alice@example.test", "Inline"
    mail.set_content("text")
    mail.add_alternative('<p>logo: <img src="cid:logo@x"></p>', subtype="html")
    mail.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@x>")
    message = deliver(alice, mail.as_bytes())
    page = alice_client.get(url(message)).content.decode()
    assert "attachments-title" not in page
    body = alice_client.get(url(message, "body/")).content.decode()
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in body


def test_charsets_and_encoded_words_are_decoded(alice, alice_client):
    raw = (
        b"From: =?ISO-8859-1?Q?Jos=E9_P=E9rez?= <jose@elsewhere.test>\r\n"
        b"To: alice@example.test\r\n"
        b"Subject: =?UTF-8?B?0J/RgNC40LLQtdGC?= =?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=\r\n"
        b"Content-Type: text/plain; charset=koi8-r\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        + "Привет, мир".encode("koi8-r") + b"\r\n"
    )
    message = deliver(alice, raw)
    page = alice_client.get(url(message)).content.decode()
    assert "Приветこんにちは" in page
    assert "José Pérez" in page
    assert "Привет, мир" in page
    listing = alice_client.get(f"/f/{message.folder_id}/").content.decode()
    assert "Приветこんにちは" in listing and "José Pérez" in listing


def test_right_to_left_text_gets_its_direction(alice, alice_client):
    message = deliver(alice, make_mail("שלום עולם", text="טקסט בעברית"))
    page = alice_client.get(url(message)).content.decode()
    assert '<h1 id="subject" dir="auto">שלום עולם</h1>' in page
    assert '<div class="plain" dir="auto">טקסט בעברית' in page


def test_raw_source_and_all_headers(alice, alice_client):
    raw = make_mail("Source", headers=[("X-Mailer", "Test =?UTF-8?Q?M=C3=BCller?=")])
    message = deliver(alice, raw)
    source = alice_client.get(url(message, "raw/"))
    assert source.content.endswith(raw)
    assert source.content.startswith(b"Return-Path: <mallory@elsewhere.test>\r\nDelivered-To: alice@example.test\r\n")
    assert source["Content-Type"] == "text/plain; charset=utf-8"
    assert "sandbox" in source["Content-Security-Policy"]
    download = alice_client.get(url(message, "raw/?download=1"))
    assert download["Content-Disposition"] == 'attachment; filename="Source.eml"'
    page = alice_client.get(url(message)).content.decode()
    assert '<th scope="row">X-Mailer</th><td dir="auto">Test Müller</td>' in page


def test_the_trace_reads_oldest_hop_first_with_delays(alice, alice_client):
    raw = (
        b"Received: from mx.example.test (mx [192.0.2.1]) by mail.example.test with ESMTPS id B; Wed, 1 May 2024 12:00:05 +0000\r\n"
        b"Received: from laptop (home [198.51.100.7]) by mx.example.test with ESMTPSA id A; Wed, 1 May 2024 11:59:58 +0000\r\n"
        b"From: m@elsewhere.test\r\nTo: alice@example.test\r\nSubject: hops\r\n\r\nbody\r\n"
    )
    message = deliver(alice, raw)
    page = alice_client.get(url(message)).content.decode()
    hops = re.findall(r'<span class="hop-from">([^<]*)</span> → <span class="hop-by">([^<]*)</span>', page)
    assert hops == [("laptop (home [198.51.100.7])", "mx.example.test"), ("mx.example.test (mx [192.0.2.1])", "mail.example.test")]
    assert '<span class="hop-delay">+7 s</span>' in page


def test_a_huge_message_is_shown_truncated_and_stays_usable(alice, alice_client):
    message = deliver(alice, make_mail("Huge", text="word " * 600_000))
    page = alice_client.get(url(message))
    assert page.status_code == 200
    assert "too long to show in full" in page.content.decode()
    assert len(page.content) < 2_000_000


def test_a_forged_content_type_cannot_shape_our_response_headers(alice, alice_client):
    raw = (
        b"From: m@elsewhere.test\r\nTo: alice@example.test\r\nSubject: odd parts\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b"--b\r\nContent-Type: text/csv; charset=\"utf-8\r\n X-Injected: 1\"\r\nContent-Disposition: attachment; filename=a.csv\r\n\r\na,b\r\n"
        b"--b\r\nContent-Type: image/p\xc3\xa9ng\r\nContent-Disposition: attachment; filename=b.png\r\n\r\nxx\r\n"
        b"--b--\r\n"
    )
    message = deliver(alice, raw)
    csv = alice_client.get(url(message, "part/2/"))
    assert csv.status_code == 200 and csv["Content-Type"] == "text/csv" and "X-Injected" not in csv
    odd = alice_client.get(url(message, "part/3/?inline=1"))
    assert odd.status_code == 200 and odd["Content-Type"] == "application/octet-stream"
    assert odd["Content-Disposition"].startswith("attachment")
