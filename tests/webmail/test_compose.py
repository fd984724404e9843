"""Composing in the webmail: sending through the submission policy (identities, limits,
DKIM), the Sent copy, reply/forward headers, drafts, CSRF."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts import actions as accounts
from mailstore.actions import read_blob
from mailstore.models import Message
from mta.models import QueuedMessage, QueuedRecipient
from tests.conftest import inbox, message_bytes
from tests.webmail.conftest import deliver, folder, make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, **fields):
    data = {"from_address": "alice@example.test", "to": "", "cc": "", "bcc": "", "subject": "", "body": "", "action": "send"}
    data.update(fields)
    return client.post("/compose/", data)


def test_it_sends_to_a_local_user_and_files_a_copy_in_sent(alice, bob, alice_client):
    attachment = SimpleUploadedFile("report.bin", bytes(range(256)) * 10, content_type="application/octet-stream")
    response = post(alice_client, to="Bob <bob@example.test>", bcc="alice@example.test", subject="Lunch",
                    body="See you at noon.", attachments=attachment)
    assert response.status_code == 302, response.content.decode()
    [received] = inbox(bob)
    raw = message_bytes(received)
    assert received.subject == "Lunch"
    # No Bcc field (a bare b"Bcc" can occur by chance in the DKIM signatures' base64).
    assert b"See you at noon." in raw and b"\nBcc:" not in raw
    assert b"Received: from webmail" in raw and raw.count(b"DKIM-Signature:") == 2
    [sent] = Message.objects.filter(folder=folder(alice, "Sent"))
    assert sent.seen
    sent_raw = message_bytes(sent)
    assert b"Bcc: alice@example.test" in sent_raw
    assert sent_raw.split(b"Message-ID:")[1].split(b"\r\n")[0] == raw.split(b"Message-ID:")[1].split(b"\r\n")[0]
    # The Bcc'd sender got her copy too, and the attachment arrived byte-identical.
    assert len(inbox(alice)) == 1
    from webmail.message import Reading

    reading = Reading(received)
    [part] = reading.attachments()
    assert part.filename == "report.bin" and reading.part_bytes(part) == bytes(range(256)) * 10


def test_it_queues_external_mail_with_a_dkim_signature(alice, alice_client):
    response = post(alice_client, to="carol@faraway.test", subject="Hi", body="Hello Carol.")
    assert response.status_code == 302
    [queued] = QueuedMessage.objects.all()
    assert [r.address for r in QueuedRecipient.objects.filter(message=queued)] == ["carol@faraway.test"]
    data = read_blob(queued.blob)
    assert data.count(b"DKIM-Signature:") == 2 and b"d=example.test" in data
    assert queued.mail_from == "alice@example.test"


def test_it_refuses_a_from_the_user_may_not_send_as(alice, bob, alice_client):
    response = post(alice_client, from_address="bob@example.test", to="bob@example.test", subject="Forged")
    assert response.status_code == 400
    assert "not an address you may send as" in response.content.decode()
    assert inbox(bob) == [] and not QueuedMessage.objects.exists()


def test_it_offers_granted_identities_and_sends_as_them(alice, bob, alice_client):
    accounts.grant_send_as("alice@example.test", "team@example.test")
    page = alice_client.get("/compose/").content.decode()
    assert '<option value="team@example.test"' in page
    response = post(alice_client, from_address="team@example.test", to="bob@example.test", subject="From the team")
    assert response.status_code == 302
    assert b"From: team@example.test" in message_bytes(inbox(bob)[0])


def test_it_refuses_past_the_sending_limit(alice, bob, alice_client):
    accounts.set_send_limits("alice@example.test", messages_per_hour=1)
    assert post(alice_client, to="bob@example.test", subject="one").status_code == 302
    response = post(alice_client, to="bob@example.test", subject="two")
    assert response.status_code == 400
    assert len(inbox(bob)) == 1


def test_it_needs_a_recipient(alice, alice_client):
    response = post(alice_client, subject="To nobody")
    assert response.status_code == 400 and "No recipients" in response.content.decode()


def test_it_refuses_an_attachment_over_the_size_limit(alice, bob, alice_client, settings):
    settings.MAILSUITE_MESSAGE_SIZE_LIMIT = 1000
    big = SimpleUploadedFile("big.bin", b"x" * 2000)
    response = post(alice_client, to="bob@example.test", subject="big", attachments=big)
    assert response.status_code == 400 and inbox(bob) == []
    # Said on the page the upload's script puts in place of the form (compose.js).
    assert "The attachment big.bin is larger than the size limit." in response.content.decode()
    assert 'data-size-limit="1000"' in response.content.decode()


def test_it_refuses_a_post_without_csrf_token(alice, bob, alice_client):
    alice_client.handler.enforce_csrf_checks = True
    for action in ("send", "save", "autosave"):
        response = post(alice_client, to="bob@example.test", subject="no token", action=action)
        assert response.status_code == 403
    assert inbox(bob) == [] and not Message.objects.filter(folder=folder(alice, "Drafts")).exists()


# Reply, reply all, forward ---------------------------------------------------------------


def test_it_prepares_a_reply_with_threading_fields_and_quote(alice, alice_client):
    original = deliver(alice, make_mail(
        "Plans", sender="Mallory <mallory@elsewhere.test>", to="alice@example.test, dave@elsewhere.test",
        text="Line one\nLine two", headers=[("Message-ID", "<m2@elsewhere.test>"), ("References", "<m1@elsewhere.test>")],
    ))
    inbox_id = folder(alice, "INBOX").pk
    page = alice_client.get(f"/compose/?reply={inbox_id}:{original.uid}").content.decode()
    assert 'value="Re: Plans"' in page
    assert "mallory@elsewhere.test" in page and "dave@elsewhere.test" not in page
    assert "&gt; Line one\n&gt; Line two" in page
    assert 'value="&lt;m2@elsewhere.test&gt;"' in page
    assert 'value="&lt;m1@elsewhere.test&gt; &lt;m2@elsewhere.test&gt;"' in page
    everyone = alice_client.get(f"/compose/?replyall={inbox_id}:{original.uid}").content.decode()
    assert "dave@elsewhere.test" in everyone and 'name="cc" value="alice@example.test' not in everyone


def test_it_sends_a_reply_that_threads_and_marks_the_original_answered(alice, bob, alice_client):
    original = deliver(alice, make_mail("Plans", sender="bob@example.test", headers=[("Message-ID", "<p1@example.test>")]))
    inbox_id = folder(alice, "INBOX").pk
    response = post(alice_client, to="bob@example.test", subject="Re: Plans", body="Yes.",
                    in_reply_to="<p1@example.test>", references="<p1@example.test>", answered=f"{inbox_id}:{original.uid}")
    assert response.status_code == 302
    raw = message_bytes(inbox(bob)[0])
    assert b"In-Reply-To: <p1@example.test>" in raw and b"References: <p1@example.test>" in raw
    original.refresh_from_db()
    assert original.answered


def test_it_forwards_with_the_attachments(alice, bob, alice_client):
    original = deliver(alice, make_mail("Files", text="See attached.", attachments=[("a.txt", "text/plain", b"alpha\n")]))
    inbox_id = folder(alice, "INBOX").pk
    page = alice_client.get(f"/compose/?forward={inbox_id}:{original.uid}").content.decode()
    assert 'value="Fwd: Files"' in page and "See attached." in page and 'name="keep" value="2"' in page
    response = post(alice_client, to="bob@example.test", subject="Fwd: Files", body="FYI",
                    source=f"{inbox_id}:{original.uid}", keep="2")
    assert response.status_code == 302
    from webmail.message import Reading

    reading = Reading(inbox(bob)[0])
    [part] = reading.attachments()
    assert part.filename == "a.txt" and reading.part_bytes(part).replace(b"\r\n", b"\n") == b"alpha\n"


def test_it_does_not_open_another_accounts_message(alice, bob, alice_client):
    theirs = deliver(bob, make_mail("Private", to="bob@example.test"))
    response = alice_client.get(f"/compose/?reply={folder(bob, 'INBOX').pk}:{theirs.uid}")
    assert response.status_code == 404


# Drafts ---------------------------------------------------------------------------------------


def test_it_saves_resumes_and_replaces_drafts(alice, bob, alice_client):
    drafts = folder(alice, "Drafts")
    answer = post(alice_client, action="autosave", to="bob@example.test", subject="Half done", body="First words")
    assert answer.status_code == 200
    first = answer.json()["draft"]
    [draft] = Message.objects.filter(folder=drafts)
    assert f"{drafts.pk}:{draft.uid}" == first and draft.subject == "Half done"
    assert draft.draft and draft.seen
    # Saving again replaces the first draft.
    answer = post(alice_client, action="autosave", to="bob@example.test", subject="Half done", body="More words", draft=first)
    second = answer.json()["draft"]
    assert second != first
    [draft] = Message.objects.filter(folder=drafts)
    assert b"More words" in message_bytes(draft)
    page = alice_client.get(f"/compose/?draft={second}").content.decode()
    assert "More words" in page and 'value="Half done"' in page and f'name="draft" value="{second}"' in page
    # Sending it removes the draft.
    response = post(alice_client, to="bob@example.test", subject="Half done", body="Done", draft=second)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert not Message.objects.filter(folder=drafts).exists()


def test_a_draft_keeps_its_attachments(alice, alice_client):
    drafts = folder(alice, "Drafts")
    upload = SimpleUploadedFile("notes.txt", b"keep me\n", content_type="text/plain")
    response = post(alice_client, action="save", to="bob@example.test", subject="With file", attachments=upload)
    assert response.status_code == 302
    [draft] = Message.objects.filter(folder=drafts)
    reference = f"{drafts.pk}:{draft.uid}"
    page = alice_client.get(f"/compose/?draft={reference}").content.decode()
    assert "notes.txt" in page and 'name="keep" value="2"' in page
    answer = post(alice_client, action="autosave", to="bob@example.test", subject="With file", body="now",
                  draft=reference, source=reference, keep="2")
    assert answer.json()["keep"] == ["2"]
    [draft] = Message.objects.filter(folder=drafts)
    from webmail.message import Reading

    reading = Reading(draft)
    assert [reading.part_bytes(part) for part in reading.attachments()] == [b"keep me\n"]


def test_it_forwards_a_message_as_an_attachment(alice, bob, alice_client):
    original = deliver(alice, make_mail("Original", text="Inner text.", headers=[("Message-ID", "<o1@elsewhere.test>")]))
    inbox_id = folder(alice, "INBOX").pk
    page = alice_client.get(f"/compose/?forward={inbox_id}:{original.uid}&as=attachment").content.decode()
    assert 'value="Fwd: Original"' in page and f'name="attach_message" value="{inbox_id}:{original.uid}"' in page
    response = post(alice_client, to="bob@example.test", subject="Fwd: Original", body="See below.",
                    attach_message=f"{inbox_id}:{original.uid}")
    assert response.status_code == 302, response.content.decode()
    raw = message_bytes(inbox(bob)[0])
    assert b"Content-Type: message/rfc822" in raw and b"Message-ID: <o1@elsewhere.test>" in raw
    assert b"Inner text." in raw  # 7bit/8bit, never base64 (RFC 2046 5.2.1)


def test_rich_text_sends_an_html_and_a_text_alternative(alice, bob, alice_client):
    response = post(alice_client, to="bob@example.test", subject="Rich", body="Hello <world>\nsecond line", html="on")
    assert response.status_code == 302
    raw = message_bytes(inbox(bob)[0])
    assert b"multipart/alternative" in raw and b"text/plain" in raw and b"text/html" in raw
    from webmail.message import Reading

    pieces = {piece.kind: piece.text for piece in Reading(inbox(bob)[0]).body()}
    assert "Hello &lt;world&gt;<br>" in pieces["html"]
