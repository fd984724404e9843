"""Actions on messages and folders, each through the mail store, and CSRF on every POST."""
import re

import pytest
from django.test import Client
from django.urls import get_resolver

from mailstore import actions as store
from mailstore.models import Folder, Message, TrainingExample
from tests.conftest import PASSWORD
from tests.webmail.conftest import deliver, folder, make_mail


@pytest.fixture
def three(alice):
    return [deliver(alice, make_mail(f"m{i}")) for i in range(3)]


def flags(account, name="INBOX"):
    return {m.subject: (m.seen, m.flagged) for m in Message.objects.filter(folder__account=account, folder__name=name)}


def names(account, name):
    return sorted(Message.objects.filter(folder__account=account, folder__name=name).values_list("subject", flat=True))


def test_bulk_read_unread_flag_unflag(alice, alice_client, three):
    inbox = folder(alice, "INBOX")
    uids = [three[0].uid, three[1].uid]
    response = alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "read", "uid": uids, "next": f"/f/{inbox.pk}/?sort=size"})
    assert response.status_code == 302 and response["Location"] == f"/f/{inbox.pk}/?sort=size"
    alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "flag", "uid": [three[1].uid]})
    assert flags(alice) == {"m0": (True, False), "m1": (True, True), "m2": (False, False)}
    alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "unread", "uid": uids})
    alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "unflag", "uid": uids})
    assert flags(alice) == {"m0": (False, False), "m1": (False, False), "m2": (False, False)}
    assert folder(alice, "INBOX").unseen_count == 3


def test_bulk_move_delete_to_trash_and_for_good(alice, alice_client, three):
    inbox, archive, trash = folder(alice, "INBOX"), folder(alice, "Archive"), folder(alice, "Trash")
    alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "move", "uid": [three[0].uid], "target": archive.pk})
    alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "delete", "uid": [three[1].uid]})
    assert (names(alice, "INBOX"), names(alice, "Archive"), names(alice, "Trash")) == (["m2"], ["m0"], ["m1"])
    trashed = Message.objects.get(folder=trash)
    alice_client.post(f"/f/{trash.pk}/bulk/", {"action": "delete", "uid": [trashed.uid]})
    assert names(alice, "Trash") == []


def test_spam_and_not_spam_move_and_are_recorded_for_training(alice, alice_client, three):
    inbox, junk = folder(alice, "INBOX"), folder(alice, "Junk")
    alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "junk", "uid": [three[0].uid]})
    assert names(alice, "Junk") == ["m0"]
    assert TrainingExample.objects.get().verdict == "spam"
    junked = Message.objects.get(folder=junk)
    alice_client.post(f"/f/{junk.pk}/bulk/", {"action": "notjunk", "uid": [junked.uid]})
    assert names(alice, "INBOX") == ["m0", "m1", "m2"]
    assert sorted(TrainingExample.objects.values_list("verdict", flat=True)) == ["ham", "spam"]


def test_bulk_refuses_nonsense_politely(alice, alice_client, three):
    inbox = folder(alice, "INBOX")
    response = alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "move", "uid": [three[0].uid], "target": 999999}, follow=True)
    assert "Choose a folder to move to." in response.content.decode()
    response = alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "read"}, follow=True)
    assert "Select at least one message." in response.content.decode()
    assert alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "read", "uid": ["1; DROP"]}, follow=True).status_code == 200
    assert flags(alice)["m0"] == (False, False)


def test_htmx_posts_answer_with_the_page_to_go_to(alice, alice_client, three):
    inbox = folder(alice, "INBOX")
    response = alice_client.post(f"/f/{inbox.pk}/bulk/", {"action": "read", "uid": [three[0].uid], "next": f"/f/{inbox.pk}/"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Location"] == f"/f/{inbox.pk}/"


def test_reading_view_actions_go_on_to_the_next_message(alice, alice_client, three):
    inbox = folder(alice, "INBOX")
    page = alice_client.get(f"/f/{inbox.pk}/m/{three[1].uid}/").content.decode()
    assert f'name="then" value="{three[0].uid}"' in page  # newest first: the next is the older one
    assert not Message.objects.get(pk=three[1].pk).seen  # GET changes nothing...
    assert alice_client.post(f"/f/{inbox.pk}/m/{three[1].uid}/read/").status_code == 204  # ...the page posts this
    assert Message.objects.get(pk=three[1].pk).seen
    response = alice_client.post(f"/f/{inbox.pk}/m/{three[1].uid}/action/", {"action": "delete", "then": three[0].uid})
    assert response["Location"] == f"/f/{inbox.pk}/m/{three[0].uid}/"
    assert names(alice, "Trash") == ["m1"]
    response = alice_client.post(f"/f/{inbox.pk}/m/{three[0].uid}/action/", {"action": "flag"})
    assert response["Location"] == f"/f/{inbox.pk}/m/{three[0].uid}/"
    assert Message.objects.get(pk=three[0].pk).flagged


def test_folders_create_rename_move_delete_subscribe(alice, alice_client):
    alice_client.post("/folders/new/", {"name": "Projects"})
    projects = folder(alice, "Projects")
    alice_client.post("/folders/new/", {"name": "2024", "parent": projects.pk})
    assert folder(alice, "Projects/2024")
    response = alice_client.post("/folders/new/", {"name": "a/b"}, follow=True)
    assert "A folder name cannot contain “/”." in response.content.decode()
    alice_client.post(f"/folders/{projects.pk}/rename/", {"name": "Work"})
    assert set(Folder.objects.filter(account=alice, name__startswith="Work").values_list("name", flat=True)) == {"Work", "Work/2024"}
    archive = folder(alice, "Archive")
    child = folder(alice, "Work/2024")
    alice_client.post(f"/folders/{child.pk}/rename/", {"name": "2024", "parent": archive.pk})
    assert folder(alice, "Archive/2024").pk == child.pk
    response = alice_client.post(f"/folders/{archive.pk}/delete/", follow=True)
    assert "has child folders" in response.content.decode()
    alice_client.post(f"/folders/{child.pk}/subscribe/", {"subscribed": "0"})
    assert not folder(alice, "Archive/2024").subscribed
    alice_client.post(f"/folders/{child.pk}/delete/")
    assert not Folder.objects.filter(account=alice, name="Archive/2024").exists()
    inbox = folder(alice, "INBOX")
    response = alice_client.post(f"/folders/{inbox.pk}/delete/", follow=True)
    assert "INBOX cannot be deleted" in response.content.decode()


def test_empty_trash_and_junk_only(alice, alice_client, three):
    inbox, trash = folder(alice, "INBOX"), folder(alice, "Trash")
    store.move_messages(inbox, [m.uid for m in three[:2]], "Trash")
    response = alice_client.post(f"/folders/{trash.pk}/empty/", follow=True)
    assert "2 messages deleted for good." in response.content.decode()
    assert names(alice, "Trash") == []
    response = alice_client.post(f"/folders/{inbox.pk}/empty/", follow=True)
    assert "only Trash and Junk can be emptied" in response.content.decode()
    assert names(alice, "INBOX") == ["m2"]


def _post_urls():
    """Every webmail URL with its arguments filled in (ids that exist in the test)."""
    resolver = get_resolver()
    urls = []
    for pattern in resolver.url_patterns:
        if getattr(pattern, "app_name", None) != "webmail":
            continue
        for sub in pattern.url_patterns:
            route = str(sub.pattern)
            urls.append(route)
    return urls


def test_every_state_changing_request_needs_the_csrf_token(alice, three):
    client = Client(enforce_csrf_checks=True)
    login = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.content.decode()).group(1)
    assert client.post("/login/", {"address": alice.address, "password": PASSWORD}).status_code == 403  # no token
    assert client.post("/login/", {"address": alice.address, "password": PASSWORD, "csrfmiddlewaretoken": token}).status_code == 302
    inbox = folder(alice, "INBOX")
    values = {"folder_id": inbox.pk, "uid": three[0].uid, "number": "1", "section": "privacy"}
    routes = _post_urls()
    assert len(routes) >= 20
    for route in routes:
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route)
        response = client.post(path, {"action": "delete", "uid": [three[0].uid], "name": "X", "address": "x@y"})
        assert response.status_code in (403, 405), (path, response.status_code)
    assert names(alice, "INBOX") == ["m0", "m1", "m2"]
    assert Folder.objects.filter(account=alice).count() == 6
    # With the token the same request works.
    token = client.cookies["csrftoken"].value
    response = client.post(f"/f/{inbox.pk}/bulk/", {"action": "delete", "uid": [three[0].uid]}, headers={"X-CSRFToken": token})
    assert response.status_code == 302
    assert names(alice, "INBOX") == ["m1", "m2"]
