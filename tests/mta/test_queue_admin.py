"""The queue and route pages of the admin: lists that scale, and every change through mta.actions.

Personas: alice (example.test, served here) has mail waiting on the outbound queue for
friends elsewhere. Test setup may write queue rows directly (bulk_create, for speed);
the admin under test may not.
"""
import datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts import actions as account_actions
from mailsuite.lib import secrets
from mailstore.models import Blob
from mta import actions, queue
from mta.models import DeliveryAttempt, QueuedMessage, QueuedRecipient, SmartHost
from tests.conftest import inbox, message_bytes
from tests.mta.test_queue import send

pytestmark = pytest.mark.django_db

CROWD = 3000
RELAY_SECRET = "s3cret relay pass"
State = QueuedRecipient.State


def url(name, *args):
    return reverse(f"admin:{name}", args=args)


CHANGELIST = "mta_queuedmessage_changelist"


def listed(response):
    return [obj.queue_id for obj in response.context["cl"].result_list]


def add_queued(count, *, start=0, states=(State.QUEUED, State.DEFERRED), age=datetime.timedelta(0)):
    """`count` messages from alice, two recipients each, with a deferred attempt for the second."""
    blob = Blob.objects.get_or_create(name="test/queued", defaults={"size": 2048, "sha256": "0" * 64})[0]
    created = queue.now() - age
    messages = QueuedMessage.objects.bulk_create(
        QueuedMessage(blob=blob, mail_from="alice@example.test", queue_id=f"Q{i:07}")
        for i in range(start, start + count)
    )
    QueuedMessage.objects.filter(pk__in=[m.pk for m in messages]).update(created=created)
    recipients = QueuedRecipient.objects.bulk_create(
        QueuedRecipient(
            message=message, address=f"r{n}.{i}@dest{n}.example", domain=f"dest{n}.example", state=state,
            attempts=n, last_error="451 4.3.0 try later" if n else "",
        )
        for i, message in enumerate(messages, start)
        for n, state in enumerate(states)
    )
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(recipient=r, started=created, host="mx.dest1.example[192.0.2.1]", outcome="deferred",
                        reply="451 4.3.0 try later")
        for r in recipients if r.attempts
    )
    return messages


def changelist_queries(client, **params):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url(CHANGELIST), params)
    assert response.status_code == 200
    return len(queries), response


# The list ----------------------------------------------------------------------------


def test_it_lists_ten_or_thousands_in_as_many_queries(admin_client, alice):
    add_queued(10)
    changelist_queries(admin_client)
    few, _ = changelist_queries(admin_client)
    add_queued(CROWD, start=10)
    many, response = changelist_queries(admin_client)
    assert many == few
    assert len(response.context["cl"].result_list) == 100


def test_it_shows_what_each_message_waits_for(admin_client, alice):
    [message] = add_queued(1, states=(State.HELD, State.DEFERRED, State.BOUNCED))
    later = queue.now() + datetime.timedelta(hours=2)
    QueuedRecipient.objects.filter(state=State.DEFERRED).update(next_attempt_at=later)

    response = admin_client.get(url(CHANGELIST))
    [row] = response.context["cl"].result_list
    admin = response.context["cl"].model_admin

    assert admin.first_recipient(row) == "<r0.0@dest0.example> and 2 more"
    assert admin.states(row) == "1 pending, 1 held, 1 bounced"
    assert admin.attempts(row) == 2
    assert admin.next_attempt(row) in ("in 1\xa0hour", "in 2\xa0hours")  # the clock moves on a little
    assert admin.last_error(row) == "451 4.3.0 try later"
    assert admin.size(row) == "2K"
    page = response.content.decode()
    assert "Q0000000" in page and "&lt;alice@example.test&gt;" in page


def test_it_filters_by_recipient_state_domain_and_age(admin_client, alice):
    add_queued(3, states=(State.QUEUED,))
    add_queued(2, start=3, states=(State.HELD,), age=datetime.timedelta(days=2))
    add_queued(1, start=5, states=(State.DELIVERED, State.BOUNCED), age=datetime.timedelta(hours=3))

    def ids(**params):
        return sorted(listed(admin_client.get(url(CHANGELIST), params)))

    assert ids(state="held") == ["Q0000003", "Q0000004"]
    assert ids(state="pending") == ["Q0000000", "Q0000001", "Q0000002"]
    assert ids(state="bounced") == ["Q0000005"]
    assert ids(domain="dest1.example") == ["Q0000005"]
    assert ids(domain="DEST1.example") == ["Q0000005"]
    assert ids(age="lt1h") == ["Q0000000", "Q0000001", "Q0000002"]
    assert ids(age="gt1h") == ["Q0000003", "Q0000004", "Q0000005"]
    assert ids(age="gt1d") == ["Q0000003", "Q0000004"]
    assert ids(age="gt3d") == []
    domains = admin_client.get(url(CHANGELIST)).content.decode()
    assert "dest0.example (5)" in domains  # unfinished recipients per destination, busiest first


def test_it_shows_a_message_with_its_recipients_and_attempts(admin_client, alice):
    [message] = add_queued(1)

    response = admin_client.get(url("mta_queuedmessage_change", message.pk))

    page = response.content.decode()
    assert response.status_code == 200
    assert "r0.0@dest0.example" in page and "r1.0@dest1.example" in page
    assert "mx.dest1.example[192.0.2.1]" in page and page.count("451 4.3.0 try later") >= 2
    assert 'name="_save"' not in page  # nothing to edit
    assert admin_client.get(url("mta_queuedmessage_add")).status_code == 403
    assert admin_client.post(url("mta_queuedmessage_delete", message.pk), {"post": "yes"}).status_code == 403


def test_it_shows_a_big_list_message_in_a_few_queries(admin_client, alice, django_assert_max_num_queries):
    [message] = add_queued(1)
    QueuedRecipient.objects.bulk_create(
        QueuedRecipient(message=message, address=f"m{i}@list.example", domain="list.example") for i in range(1000)
    )
    admin_client.get(url("mta_queuedmessage_change", message.pk))
    with django_assert_max_num_queries(8):
        response = admin_client.get(url("mta_queuedmessage_change", message.pk))
    assert "The first 200 of 1002 recipients." in response.content.decode()


# Admin actions -----------------------------------------------------------------------


def act(client, action, *messages, **extra):
    data = {"action": action, "_selected_action": [m.pk for m in messages], **extra}
    return client.post(url(CHANGELIST), data)


@pytest.fixture
def waiting(alice):
    """Mail from alice really put on the queue (blobs and all): two messages."""
    send("friend@faraway.test", "other@faraway.test")
    send("pal@elsewhere.test")
    return list(QueuedMessage.objects.order_by("pk"))


def states():
    return sorted(QueuedRecipient.objects.values_list("address", "state"))


def test_it_holds_releases_and_retries_through_actions(admin_client, waiting, queue_kicks):
    first, second = waiting

    response = act(admin_client, "hold", first)
    assert response.status_code == 302
    assert states() == [
        ("friend@faraway.test", "held"), ("other@faraway.test", "held"), ("pal@elsewhere.test", "queued"),
    ]

    act(admin_client, "release", first, second)
    assert {state for _, state in states()} == {"queued"}

    QueuedRecipient.objects.update(state=State.DEFERRED, next_attempt_at=queue.now() + datetime.timedelta(hours=1))
    response = act(admin_client, "retry_now", first, second)
    assert queue.due().count() == 3 and QueuedRecipient.objects.filter(attempts=0, state="deferred").count() == 3
    assert [str(m) for m in response.wsgi_request._messages] == [  # none shown yet: the redirect was not followed
        "Held 2 recipient(s).",
        "Released 2 recipient(s); they will be tried now.",
        "3 recipient(s) will be tried now (held ones need release).",
    ]


def test_it_says_when_an_action_applies_to_nothing(admin_client, waiting):
    QueuedRecipient.objects.update(state=State.DELIVERED)
    response = act(admin_client, "release", *waiting)
    assert [str(m) for m in response.wsgi_request._messages] == ["Released 0 recipient(s); they will be tried now."]
    assert {m.level_tag for m in response.wsgi_request._messages} == {"warning"}


def test_it_asks_for_a_reason_before_bouncing(admin_client, waiting, alice, django_capture_on_commit_callbacks):
    first, _ = waiting

    confirm = act(admin_client, "bounce", first)
    page = confirm.content.decode()
    assert confirm.status_code == 200
    assert "Give up on the unfinished recipients" in page and first.queue_id in page
    assert 'value="delivery cancelled by the mail administrator"' in page
    assert {state for _, state in states()} == {"queued"}  # nothing yet

    refused = act(admin_client, "bounce", first, confirm="yes", reason="", select_across="0")
    assert refused.status_code == 200 and "This field is required." in refused.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        done = act(admin_client, "bounce", first, confirm="yes", reason="the account was closed", select_across="0")
    assert done.status_code == 302
    assert states() == [
        ("friend@faraway.test", "bounced"), ("other@faraway.test", "bounced"), ("pal@elsewhere.test", "queued"),
    ]
    assert set(QueuedRecipient.objects.filter(state="bounced").values_list("status", "last_error")) == {
        ("5.0.0", "the account was closed"),
    }
    [report] = inbox(alice)
    assert b"Diagnostic-Code: smtp; the account was closed" in message_bytes(report)


def test_it_bounces_everything_a_filter_selects(admin_client, waiting):
    filtered = url(CHANGELIST) + "?q=faraway"
    first, _ = waiting
    choice = {"action": "bounce", "_selected_action": [first.pk], "select_across": "1"}

    confirm = admin_client.post(filtered, choice)
    assert 'name="select_across" value="1"' in confirm.content.decode()
    admin_client.post(filtered, {**choice, "confirm": "yes", "reason": "cancelled"})

    assert states() == [
        ("friend@faraway.test", "bounced"), ("other@faraway.test", "bounced"), ("pal@elsewhere.test", "queued"),
    ]


def test_it_deletes_after_confirmation(admin_client, waiting):
    first, second = waiting
    blob = first.blob_id

    confirm = act(admin_client, "delete_messages", first)
    assert confirm.status_code == 200 and "Nobody is told" in confirm.content.decode()
    assert QueuedMessage.objects.count() == 2

    done = act(admin_client, "delete_messages", first, confirm="yes", select_across="0")
    assert done.status_code == 302
    assert list(QueuedMessage.objects.all()) == [second]
    assert Blob.objects.filter(pk=blob).exists()


@pytest.fixture
def viewer(client, alice):
    """A staff user who may look at the queue but change nothing."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_queuedmessage"))
    client.force_login(user)
    return client


def test_it_offers_a_viewer_no_actions(viewer, waiting):
    response = viewer.get(url(CHANGELIST))
    assert response.status_code == 200
    assert response.context["action_form"] is None
    act(viewer, "hold", *waiting)
    assert {state for _, state in states()} == {"queued"}


# Routes ------------------------------------------------------------------------------


def route_form(**fields):
    data = {"kind": "smarthost", "domain": "", "host": "", "port": "25", "tls": "", "verify_certificate": "on",
            "username": "", "auth_password": "", "verify_recipients": "none", "recipients": ""}
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def test_it_adds_a_smart_host_and_never_shows_its_password(admin_client):
    response = admin_client.post(url("mta_smarthost_add"), route_form(
        host="smtp.provider.test", port="587", username="relay@corp.test", auth_password=RELAY_SECRET,
    ))

    assert response.status_code == 302, response.context["adminform"].form.errors
    route = SmartHost.objects.get()
    assert (route.domain, route.host, route.port, route.tls, route.username) == (
        "", "smtp.provider.test", 587, "starttls", "relay@corp.test",
    )
    assert secrets.decrypt(route.password) == RELAY_SECRET
    pages = [
        admin_client.get(url("mta_smarthost_changelist")),
        admin_client.get(url("mta_smarthost_change", route.pk)),
        admin_client.get(url("mta_smarthost_history", route.pk)),
    ]
    for page in pages:
        text = page.content.decode()
        assert page.status_code == 200
        assert RELAY_SECRET not in text and route.password not in text and "fernet:" not in text
    assert "smtp.provider.test:587" in pages[0].content.decode()


def test_it_keeps_a_routes_password_unless_given_a_new_one(admin_client):
    route = actions.set_smarthost("smtp.provider.test", 587, username="u", password=RELAY_SECRET)
    change = url("mta_smarthost_change", route.pk)

    response = admin_client.post(change, route_form(kind=None, domain=None, host="smtp2.provider.test", port="587",
                                                    tls="starttls", username="u"))
    assert response.status_code == 302
    route.refresh_from_db()
    assert route.host == "smtp2.provider.test" and secrets.decrypt(route.password) == RELAY_SECRET

    admin_client.post(change, route_form(kind=None, domain=None, host="smtp2.provider.test", port="587",
                                         tls="starttls", username="u", auth_password="new one"))
    route.refresh_from_db()
    assert secrets.decrypt(route.password) == "new one"

    admin_client.post(change, route_form(kind=None, domain=None, host="smtp2.provider.test", port="25"))
    route.refresh_from_db()
    assert (route.username, route.password, route.tls) == ("", "", "opportunistic")


def test_it_adds_a_relay_domain_with_a_recipient_list(admin_client):
    response = admin_client.post(url("mta_smarthost_add"), route_form(
        kind="relay", domain="Branch.test", host="10.0.0.5", verify_recipients="list",
        recipients="anna@branch.test\nBo@Branch.test",
    ))

    assert response.status_code == 302
    route = SmartHost.objects.get()
    assert (route.domain, route.accept_relay, route.verify_recipients, route.recipients) == (
        "branch.test", True, "list", "anna@branch.test\nbo@branch.test",
    )
    listing = admin_client.get(url("mta_smarthost_changelist")).content.decode()
    assert "relay domain" in listing and "listed (2)" in listing


def test_it_shows_refusals_in_the_form_and_saves_nothing(admin_client, domain):
    def errors(**fields):
        response = admin_client.post(url("mta_smarthost_add"), route_form(**fields))
        assert response.status_code == 200
        form = response.context["adminform"].form
        return {name: list(messages) for name, messages in form.errors.items()}

    assert errors(kind="relay", domain="example.test", host="mx.other.test") == {
        "__all__": ["example.test is a local domain: its mail is delivered here (remove it first)"],
    }
    assert errors(kind="transport", host="mx.other.test") == {
        "domain": ["Give the domain this transport is for."],
    }
    assert errors(kind="smarthost", domain="x.test", host="mx.other.test") == {
        "domain": ["A smart host is for all domains: leave the domain empty."],
    }
    assert errors(host="smtp.provider.test", tls="opportunistic", username="u", auth_password="pw") == {
        "__all__": ["sending a password needs TLS: use TLS mode 'starttls' or 'implicit'"],
    }
    assert errors(host="relay") == {"__all__": ["next hop: 'relay' is not a fully qualified domain name"]}
    assert not SmartHost.objects.exists()
    actions.set_smarthost("smtp.provider.test")
    assert errors(host="smtp2.provider.test") == {"__all__": ["a smart host is already set: smtp.provider.test:25"]}


def test_it_removes_routes_through_actions(admin_client):
    smarthost = actions.set_smarthost("smtp.provider.test")
    transport = actions.set_transport("partner.test", "gw.partner.test")

    assert admin_client.post(url("mta_smarthost_delete", smarthost.pk), {"post": "yes"}).status_code == 302
    admin_client.post(url(
        "mta_smarthost_changelist"), {"action": "delete_selected", "_selected_action": [transport.pk], "post": "yes"})
    assert not SmartHost.objects.exists()


def test_it_refuses_a_transport_for_a_local_alias_domain(admin_client, domain):
    account_actions.create_domain_alias("example.net", "example.test")
    response = admin_client.post(url("mta_smarthost_add"), route_form(kind="transport", domain="example.net",
                                                                      host="mx.other.test"))
    assert "local alias domain" in response.content.decode()


def test_it_names_the_admin_in_the_audit_log_of_queue_and_route_changes(admin_client, admin_user, waiting):
    from accounts.models import AuditEntry

    act(admin_client, "hold", waiting[0])
    admin_client.post(url("mta_smarthost_add"), route_form(kind="smarthost", host="smtp.provider.test"))
    route = SmartHost.objects.get()
    admin_client.post(url("mta_smarthost_delete", route.pk), {"post": "yes"})
    entries = list(AuditEntry.objects.exclude(action__startswith="domain.").exclude(action__startswith="account.")
                   .order_by("pk").values_list("action", "actor_id", "actor_name", "via"))
    assert entries == [
        ("queue.hold", admin_user.pk, admin_user.username, "admin"),
        ("route.set_smarthost", admin_user.pk, admin_user.username, "admin"),
        ("route.clear_smarthost", admin_user.pk, admin_user.username, "admin"),
    ]
