"""Settings pages: account, identities and signature, language, remote content, and the
Sieve-backed filters, vacation reply, forwarding and raw editor taking effect at the next
delivery through mta.inbound."""
import pytest

from accounts import actions as accounts
from accounts.models import Account
from accounts.resolve import resolve
from mailstore import actions as store
from mta import inbound
from mta.models import QueuedRecipient
from sieve import actions as sieve_actions
from sieve import rules
from sieve.models import VacationReply
from tests.conftest import PASSWORD, inbox
from tests.webmail.conftest import deliver, make_mail

pytestmark = pytest.mark.django_db(transaction=True)


def arrive(subject="Quarterly report", sender="mallory@elsewhere.test"):
    raw = make_mail(subject, sender=sender)
    reply = inbound.accept_message(raw, mail_from=sender, resolutions=[resolve("alice@example.test")], client_ip="127.0.0.1")
    assert reply.startswith("250"), reply


def messages_in(account, name):
    from mailstore.models import Message

    return list(Message.objects.filter(folder__account=account, folder__name=name).order_by("uid"))


def test_every_section_renders(alice, alice_client):
    for section in ("account", "identities", "language", "privacy", "filters", "vacation", "forwarding", "sieve", "spam"):
        assert alice_client.get(f"/settings/{section}/").status_code == 200, section


def test_it_changes_the_display_name(alice, alice_client):
    response = alice_client.post("/settings/account/", {"form": "name", "display_name": "  Alice Liddell "})
    assert response.status_code == 302
    assert Account.objects.get(pk=alice.pk).display_name == "Alice Liddell"


def test_it_changes_the_password_and_stays_signed_in(alice, alice_client):
    new = "a brand new passphrase 42"
    wrong = alice_client.post("/settings/account/", {"form": "password", "current": "nope", "new": new, "again": new})
    assert wrong.status_code == 400 and "not your current password" in wrong.content.decode()
    differ = alice_client.post("/settings/account/", {"form": "password", "current": PASSWORD, "new": new, "again": new + "x"})
    assert differ.status_code == 400
    response = alice_client.post("/settings/account/", {"form": "password", "current": PASSWORD, "new": new, "again": new})
    assert response.status_code == 302
    assert Account.objects.get(pk=alice.pk).check_password(new)
    assert alice_client.get("/settings/account/").status_code == 200  # this session survived


def test_signature_goes_into_new_messages_and_identities_are_listed(alice, alice_client):
    accounts.grant_send_as("alice@example.test", "team@example.test")
    response = alice_client.post("/settings/identities/", {"form": "signature", "signature": "Alice\nExample Ltd"})
    assert response.status_code == 302
    page = alice_client.get("/settings/identities/").content.decode()
    assert "team@example.test" in page and "Example Ltd" in page
    compose = alice_client.get("/compose/").content.decode()
    assert "\n\n-- \nAlice\nExample Ltd\n</textarea>" in compose


def test_language_can_be_chosen(alice, alice_client):
    response = alice_client.post("/settings/language/set/", {"language": "es", "next": "/settings/language/"})
    assert response.status_code == 302
    assert "Idioma" in alice_client.get("/settings/language/").content.decode()


def test_remote_content_always(alice, alice_client):
    message = deliver(alice, make_mail("Pics", html='<p><img src="https://images.example/x.png">hi</p>'))
    body = f"/f/{message.folder_id}/m/{message.uid}/body/"
    assert "https:" not in alice_client.get(body)["Content-Security-Policy"]
    response = alice_client.post("/settings/privacy/", {"form": "remote", "remote_content": "always"})
    assert response.status_code == 302
    assert "https:" in alice_client.get(body)["Content-Security-Policy"]


def test_a_filter_takes_effect_on_the_next_delivery(alice, alice_client):
    store.create_folder(alice, "Reports")
    response = alice_client.post("/settings/filters/", {
        "form": "rule", "name": "Reports", "field": "subject", "operator": "contains", "value": "report",
        "action": "move", "argument": "Reports",
    })
    assert response.status_code == 302, response.content.decode()
    script = sieve_actions.active_script(alice)
    assert script is not None and rules.is_simple(script.text) and "Reports" in script.text
    arrive("Quarterly report")
    arrive("Lunch?")
    assert [m.subject for m in messages_in(alice, "Reports")] == ["Quarterly report"]
    assert [m.subject for m in inbox(alice)] == ["Lunch?"]
    # Disabled, it no longer files.
    assert alice_client.post("/settings/filters/", {"form": "toggle", "index": "0"}).status_code == 302
    arrive("Another report")
    assert [m.subject for m in inbox(alice)] == ["Lunch?", "Another report"]
    assert alice_client.post("/settings/filters/", {"form": "delete", "index": "0"}).status_code == 302
    assert rules.load(alice).filters.rules == []


def test_a_vacation_reply_is_sent_on_the_next_delivery(alice, alice_client):
    response = alice_client.post("/settings/vacation/", {
        "enabled": "on", "subject": "Away", "body": "Back on Monday.", "start": "", "end": "", "days": "7",
    })
    assert response.status_code == 302, response.content.decode()
    arrive("Are you there?")
    assert VacationReply.objects.filter(account=alice).count() == 1
    assert QueuedRecipient.objects.filter(address="mallory@elsewhere.test").exists()
    form = alice_client.get("/settings/vacation/").content.decode()
    assert "Back on Monday." in form and 'value="Away"' in form


def test_forwarding_with_a_copy(alice, alice_client):
    response = alice_client.post("/settings/forwarding/", {"enabled": "on", "address": "me@faraway.test", "keep_copy": "on"})
    assert response.status_code == 302
    arrive("Forward me")
    assert [m.subject for m in inbox(alice)] == ["Forward me"]
    assert QueuedRecipient.objects.filter(address="me@faraway.test").exists()


def test_the_raw_editor_shows_errors_at_their_line_and_saves_valid_scripts(alice, alice_client):
    store.create_folder(alice, "Reports")
    bad = 'require ["fileinto"];\nif header :contains "subject" "x" {\n  fileinto "X"\n}\n'
    response = alice_client.post("/settings/sieve/", {"text": bad})
    page = response.content.decode()
    assert response.status_code == 400
    assert "Line 4, column 1: expected" in page and '<pre class="code">}\n^</pre>' in page
    assert sieve_actions.active_script(alice) is None
    good = 'require ["fileinto"];\nif header :contains "subject" "report" { fileinto "Reports"; }\n'
    assert alice_client.post("/settings/sieve/", {"text": good}).status_code == 302
    assert sieve_actions.active_script(alice).text == good
    # Not written by the simple editor: the simple pages offer the raw editor.
    for section in ("filters", "vacation", "forwarding"):
        page = alice_client.get(f"/settings/{section}/").content.decode()
        assert "too complex for the simple editor" in page and "/settings/sieve/" in page
    arrive("The report")
    assert [m.subject for m in messages_in(alice, "Reports")] == ["The report"]


def test_settings_posts_need_the_csrf_token(alice, alice_client):
    alice_client.handler.enforce_csrf_checks = True
    assert alice_client.post("/settings/account/", {"form": "name", "display_name": "X"}).status_code == 403
    assert alice_client.post("/settings/sieve/", {"text": "keep;"}).status_code == 403
    assert Account.objects.get(pk=alice.pk).display_name == "Alice"


def test_vacation_dates_round_trip_in_spanish_too(alice, alice_client):
    response = alice_client.post("/settings/vacation/", {
        "enabled": "on", "subject": "Away", "body": "Back later.", "start": "2026-12-20", "end": "2027-01-06", "days": "3",
    })
    assert response.status_code == 302
    vacation = rules.load(alice).filters.vacation
    assert (vacation.start.isoformat(), vacation.end.isoformat(), vacation.days) == ("2026-12-20", "2027-01-06", 3)
    page = alice_client.get("/settings/vacation/", headers={"Accept-Language": "es"}).content.decode()
    assert 'value="2026-12-20"' in page and 'value="2027-01-06"' in page
    backwards = alice_client.post("/settings/vacation/", {
        "enabled": "on", "subject": "Away", "body": "x", "start": "2027-01-06", "end": "2026-12-20", "days": "3",
    })
    assert backwards.status_code == 400


def test_a_script_put_over_managesieve_shows_in_the_webmail(alice, alice_client):
    text = 'require ["imap4flags"];\nif address :is "from" "boss@faraway.test" { addflag "\\\\Flagged"; }\n'
    sieve_actions.put_script(alice, "from-thunderbird", text, activate=True)
    page = alice_client.get("/settings/sieve/").content.decode()
    assert "addflag &quot;\\\\Flagged&quot;" in page
    assert "too complex for the simple editor" in alice_client.get("/settings/filters/").content.decode()
    # Saving from the raw editor keeps the script's name, so the client sees its script changed.
    assert alice_client.post("/settings/sieve/", {"text": "keep;\n"}).status_code == 302
    assert sieve_actions.active_script(alice).name == "from-thunderbird"
    assert sieve_actions.active_script(alice).text == "keep;\n"
