"""Conversations: the thread key the mail store gives each message, the list grouped by
conversation (a remembered toggle), and the conversation page across folders."""
import re
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from mailstore import actions as store
from mailstore.models import Message
from tests.webmail.conftest import deliver, folder, make_mail
from webmail.models import Preferences

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def subjects(response):
    return subjects_of(response.content.decode())


def subjects_of(content):
    return re.findall(r'<span class="subject" dir="auto">([^<]*)</span>', content)


def reply_headers(*ids):
    """In-Reply-To and References of a reply to the last of `ids` (RFC 5322 §3.6.4)."""
    return (("In-Reply-To", ids[-1]), ("References", " ".join(ids)))


@pytest.fixture
def thread(alice):
    """A conversation: Mallory's question, alice's reply (in Sent), Mallory's answer;
    and an unrelated message in between."""
    question = deliver(alice, make_mail("Lunch?", text="Shall we have lunch?", date=BASE, headers=[("Message-ID", "<q@elsewhere.test>")]))
    other = deliver(alice, make_mail("Unrelated", sender="Dora <dora@elsewhere.test>", date=BASE + timedelta(hours=1),
                                     headers=[("Message-ID", "<u@elsewhere.test>")]))
    sent = store.append(alice, "Sent", make_mail(
        "Re: Lunch?", sender="alice@example.test", to="mallory@elsewhere.test", text="Yes, at noon.",
        date=BASE + timedelta(hours=2), headers=[("Message-ID", "<r@example.test>"), *reply_headers("<q@elsewhere.test>")],
    ), flags=["\\Seen"])
    answer = deliver(alice, make_mail("Re: Lunch?", text="See you there.", date=BASE + timedelta(hours=3),
                                      headers=[("Message-ID", "<a@elsewhere.test>"), *reply_headers("<q@elsewhere.test>", "<r@example.test>")]))
    inbox = folder(alice, "INBOX")
    store.store_flags(inbox, [question.uid], mode="add", flags=["\\Seen"])
    return {"question": question, "other": other, "sent": sent, "answer": answer}


def grouped(alice):
    Preferences.objects.update_or_create(account=alice, defaults={"conversations": True})


# The thread key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_id, in_reply_to, references, root",
    [
        ("<a@x>", "", [], "<a@x>"),  # starts a conversation
        ("<b@x>", "<a@x>", ["<a@x>"], "<a@x>"),  # a reply
        ("<c@x>", "<b@x>", ["<a@x>", "<b@x>"], "<a@x>"),  # a reply to the reply
        ("<d@x>", "<a@x>", [], "<a@x>"),  # In-Reply-To alone
        ("", "", [], "sha256:abc"),  # no ids: its own conversation, by its bytes
    ],
)
def test_the_thread_key_is_the_conversations_first_message_id(message_id, in_reply_to, references, root):
    expected = store.thread_key(root, "", [], "") if root.startswith("<") else store.thread_key("", "", [], "abc")
    assert store.thread_key(message_id, in_reply_to, references, "abc") == expected
    assert store.thread_key("<other@x>", "", [], "abc") != expected


def test_it_stores_the_key_at_delivery_and_keeps_it_on_moves(alice, thread):
    keys = {name: Message.objects.get(pk=m.pk).thread_key for name, m in thread.items()}
    assert keys["question"] == keys["sent"] == keys["answer"] != keys["other"]
    inbox = folder(alice, "INBOX")
    store.move_messages(inbox, [thread["answer"].uid], "Archive")
    moved = Message.objects.get(folder=folder(alice, "Archive"))
    assert moved.thread_key == keys["question"]


# The list ---------------------------------------------------------------------------------


def test_the_toggle_is_remembered_for_the_account(alice, alice_client, thread):
    inbox = folder(alice, "INBOX")
    assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Re: Lunch?", "Unrelated", "Lunch?"]
    response = alice_client.post("/list-mode/", {"conversations": "1", "next": f"/f/{inbox.pk}/"})
    assert response.status_code == 302 and response["Location"] == f"/f/{inbox.pk}/"
    assert Preferences.objects.get(account=alice).conversations is True
    assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Re: Lunch?", "Unrelated"]
    alice_client.post("/list-mode/", {"conversations": "0"})
    assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Re: Lunch?", "Unrelated", "Lunch?"]


def test_a_conversation_row_has_its_size_newest_date_and_unread_state(alice, alice_client, thread):
    grouped(alice)
    inbox = folder(alice, "INBOX")
    content = alice_client.get(f"/f/{inbox.pk}/").content.decode()
    rows = re.findall(r'<tr class="message-row([^"]*)" data-uid="(\d+)">(.*?)</tr>', content, re.S)
    assert [(uid, "unread" in classes) for classes, uid, _ in rows] == [(str(thread["answer"].uid), True), (str(thread["other"].uid), True)]
    first = rows[0][2]
    # Three messages: the two in INBOX and alice's reply in Sent.
    assert '<span class="thread-count"' in first and ">3<" in first
    assert f'href="/f/{inbox.pk}/m/{thread["answer"].uid}/conversation/"' in first
    assert "conversation" not in rows[1][2]  # a lone message opens as usual
    assert "1–2 of 2" in content
    # Read the newest: the conversation is still unread while the question... is read too.
    store.store_flags(inbox, [thread["answer"].uid], mode="add", flags=["\\Seen"])
    content = alice_client.get(f"/f/{inbox.pk}/").content.decode()
    assert re.search(rf'<tr class="message-row" data-uid="{thread["answer"].uid}">', content)


def test_filters_apply_to_conversations(alice, alice_client, thread):
    grouped(alice)
    inbox = folder(alice, "INBOX")
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?filter=unread")) == ["Re: Lunch?", "Unrelated"]
    store.store_flags(inbox, [thread["answer"].uid, thread["other"].uid], mode="add", flags=["\\Seen"])
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?filter=unread")) == []
    store.store_flags(inbox, [thread["question"].uid], mode="add", flags=["\\Flagged"])
    # The conversation's row is its newest message that passes the filter.
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?filter=flagged")) == ["Lunch?"]
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?filter=attachments")) == []
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?sort=date&order=asc")) == ["Unrelated", "Re: Lunch?"]
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?sort=subject")) == ["Lunch?", "Re: Lunch?", "Unrelated"]  # other sorts list messages


# Search results -------------------------------------------------------------------------


def test_search_results_are_grouped_by_conversation_when_the_list_is(alice, alice_client, thread):
    inbox = folder(alice, "INBOX")
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?q=lunch")) == ["Re: Lunch?", "Lunch?"]  # not grouped: messages
    grouped(alice)
    content = alice_client.get(f"/f/{inbox.pk}/?q=lunch").content.decode()
    assert subjects_of(content) == ["Re: Lunch?"]
    assert "1–1 of 1" in content and '<span class="thread-count"' in content
    assert f'href="/f/{inbox.pk}/m/{thread["answer"].uid}/conversation/?q=lunch"' in content
    # A match on an older message stands for its conversation: the row is the newest match.
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?q=shall")) == ["Lunch?"]
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?q=nothing-like-it")) == []
    # In every folder: alice's reply in Sent matches too, and the conversation is one row.
    content = alice_client.get("/search/?q=lunch").content.decode()
    assert subjects_of(content) == ["Re: Lunch?"]
    assert re.search(r'<td class="c-folder" dir="auto">INBOX</td>', content)
    assert "1–1 of 1" in content
    # Sorted otherwise, results are messages again.
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?q=lunch&sort=subject")) == ["Lunch?", "Re: Lunch?"]


def test_grouped_search_pages_fifty_conversations_at_a_time(alice, alice_client):
    grouped(alice)
    for n in range(55):
        root = f"<s{n}@elsewhere.test>"
        deliver(alice, make_mail(f"needle {n}", date=BASE + timedelta(minutes=2 * n), headers=[("Message-ID", root)]))
        deliver(alice, make_mail(f"Re: needle {n}", date=BASE + timedelta(minutes=2 * n + 1), headers=reply_headers(root)))
    inbox = folder(alice, "INBOX")
    first = alice_client.get(f"/f/{inbox.pk}/?q=needle")
    assert len(subjects(first)) == 50 and subjects(first)[0] == "Re: needle 54"
    assert "1–50 of 55" in first.content.decode()
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?q=needle&page=2")) == [f"Re: needle {n}" for n in range(4, -1, -1)]


def test_conversations_page_fifty_at_a_time(alice, alice_client):
    grouped(alice)
    for n in range(60):
        root = f"<t{n}@elsewhere.test>"
        deliver(alice, make_mail(f"topic {n}", date=BASE + timedelta(minutes=2 * n), headers=[("Message-ID", root)]))
        deliver(alice, make_mail(f"Re: topic {n}", date=BASE + timedelta(minutes=2 * n + 1), headers=reply_headers(root)))
    inbox = folder(alice, "INBOX")
    first = alice_client.get(f"/f/{inbox.pk}/")
    assert subjects(first)[:2] == ["Re: topic 59", "Re: topic 58"] and len(subjects(first)) == 50
    assert "1–50 of 60" in first.content.decode()
    second = alice_client.get(f"/f/{inbox.pk}/?page=2")
    assert subjects(second) == [f"Re: topic {n}" for n in range(9, -1, -1)]


def test_a_bulk_action_on_a_conversation_row_takes_the_whole_conversation(alice, alice_client, thread):
    grouped(alice)
    inbox = folder(alice, "INBOX")
    response = alice_client.post(f"/f/{inbox.pk}/bulk/", {
        "action": "move", "target": folder(alice, "Archive").pk, "uid": [thread["answer"].uid], "conversations": "1",
    })
    assert response.status_code == 302
    assert list(Message.objects.filter(folder=inbox).values_list("subject", flat=True)) == ["Unrelated"]
    assert sorted(Message.objects.filter(folder=folder(alice, "Archive")).values_list("subject", flat=True)) == ["Lunch?", "Re: Lunch?"]
    assert Message.objects.filter(folder=folder(alice, "Sent")).count() == 1  # other folders keep theirs


# The conversation page ------------------------------------------------------------------


def test_the_conversation_shows_its_messages_in_order_across_folders(alice, alice_client, thread):
    inbox = folder(alice, "INBOX")
    response = alice_client.get(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/")
    assert response.status_code == 200
    content = response.content.decode()
    items = re.findall(r'<details class="conversation-message([^"]*)" data-uid="(\d+)" data-folder="(\d+)"([^>]*)>', content)
    assert [(uid, folder_id) for _classes, uid, folder_id, _rest in items] == [
        (str(thread["question"].uid), str(inbox.pk)),
        (str(thread["sent"].uid), str(folder(alice, "Sent").pk)),
        (str(thread["answer"].uid), str(inbox.pk)),
    ]
    opened = [" open" in rest for _c, _u, _f, rest in items]
    assert opened == [False, False, True]  # read ones folded, the newest (unread) open
    bodies = re.findall(r'<div class="conversation-body">(.*?)</div>\s*</details>', content, re.S)
    assert bodies[0] == bodies[1] == "" and "See you there." in bodies[2]  # only the open one is parsed
    assert "Shall we have lunch?" in content  # the folded ones show their preview
    assert "3 messages" in content and '<span class="badge">Sent</span>' in content
    # Reading it marks the unread one read; a folded one unfolds on demand.
    assert f'hx-post="/f/{inbox.pk}/m/{thread["answer"].uid}/read/"' in content
    folded = alice_client.get(f"/f/{inbox.pk}/m/{thread['question'].uid}/conversation/body/")
    assert folded.status_code == 200 and "Shall we have lunch?" in folded.content.decode()
    assert "Unrelated" not in content


def test_trash_and_junk_are_no_part_of_a_conversation_unless_opened_there(alice, alice_client, thread):
    inbox = folder(alice, "INBOX")
    store.move_messages(inbox, [thread["question"].uid], "Trash")
    content = alice_client.get(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/").content.decode()
    assert content.count('<details class="conversation-message') == 2
    trash = folder(alice, "Trash")
    content = alice_client.get(f"/f/{trash.pk}/m/1/conversation/").content.decode()
    assert content.count('<details class="conversation-message') == 3


def test_another_accounts_conversation_is_not_found(alice, bob, client_for, thread):
    inbox = folder(alice, "INBOX")
    bob_client = client_for(bob)
    assert bob_client.get(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/").status_code == 404
    assert bob_client.get(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/body/").status_code == 404


def test_grouped_list_queries_are_bounded_on_ten_thousand_messages(alice, alice_client):
    """10,000 messages in 2,000 conversations of five: a page costs a fixed number of queries."""
    grouped(alice)
    incoming = store.IncomingMessage(make_mail("bulk", date=BASE))
    with incoming.atomic():
        store.place_messages([store.Job(incoming, [store.Placement(alice, "INBOX") for _ in range(10_000)])])
    inbox = folder(alice, "INBOX")
    # One message placed 10,000 times shares one key: give every five UIDs their own.
    Message.objects.filter(folder=inbox).update(thread_key=(F("uid") - 1) / 5)
    store.rebuild_conversations(inbox)
    alice_client.get(f"/f/{inbox.pk}/")
    for url in ("", "?page=30", "?filter=unread"):
        with CaptureQueriesContext(connection) as queries:
            response = alice_client.get(f"/f/{inbox.pk}/{url}")
        assert len(subjects(response)) == 50, url
        assert len(queries) <= 10, (url, [q["sql"] for q in queries])
    # (The copies share their bytes, so each conversation counts as one message.)
    assert "1–50 of 2000" in response.content.decode()


def test_the_grouped_list_follows_changes_without_grouping_the_folder(alice, alice_client, thread):
    """The list reads the Conversation rows the mail store keeps: no GROUP BY over the
    folder's messages, and every change shows at once."""
    grouped(alice)
    inbox = folder(alice, "INBOX")
    with CaptureQueriesContext(connection) as queries:
        assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Re: Lunch?", "Unrelated"]
    assert not any("GROUP BY" in q["sql"] and "MAX" in q["sql"] for q in queries.captured_queries)
    deliver(alice, make_mail("Newest", date=BASE + timedelta(days=1)))
    assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Newest", "Re: Lunch?", "Unrelated"]
    store.expunge(inbox, [thread["other"].uid])
    assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Newest", "Re: Lunch?"]
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?filter=unread")) == ["Newest", "Re: Lunch?"]
    store.store_flags(inbox, [thread["answer"].uid], mode="add", flags=["\\Seen"])
    assert subjects(alice_client.get(f"/f/{inbox.pk}/?filter=unread")) == ["Newest"]
    store.move_messages(inbox, [thread["answer"].uid], "Archive")  # the conversation's newest leaves
    assert subjects(alice_client.get(f"/f/{inbox.pk}/")) == ["Newest", "Lunch?"]


# Actions on a whole conversation ----------------------------------------------------------


def conversation_action(client, inbox, uid, **data):
    return client.post(f"/f/{inbox.pk}/m/{uid}/conversation/action/", data)


def test_the_conversation_page_offers_actions_on_the_whole_conversation(alice, alice_client, thread):
    inbox = folder(alice, "INBOX")
    content = alice_client.get(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/").content.decode()
    assert f'action="/f/{inbox.pk}/m/{thread["answer"].uid}/conversation/action/"' in content
    for action in ("read", "unread", "delete", "junk", "move"):
        assert f'name="action" value="{action}"' in content


def test_mark_unread_and_read_take_the_conversation_in_every_folder_shown(alice, alice_client, thread):
    inbox = folder(alice, "INBOX")
    response = conversation_action(alice_client, inbox, thread["answer"].uid, action="unread", keep="filter=unread")
    assert response.status_code == 302 and response["Location"] == f"/f/{inbox.pk}/?filter=unread"
    assert set(Message.objects.filter(thread_key=thread["answer"].thread_key).values_list("seen", flat=True)) == {False}
    assert Message.objects.get(pk=thread["other"].pk).seen is False  # untouched either way
    assert folder(alice, "Sent").unseen_count == 1
    response = conversation_action(alice_client, inbox, thread["answer"].uid, action="read")
    assert response["Location"] == f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/"
    assert set(Message.objects.filter(thread_key=thread["answer"].thread_key).values_list("seen", flat=True)) == {True}
    assert (folder(alice, "INBOX").unseen_count, folder(alice, "Sent").unseen_count) == (1, 0)


def test_move_delete_and_spam_take_the_conversations_messages_in_the_folder(alice, alice_client, thread):
    inbox, archive = folder(alice, "INBOX"), folder(alice, "Archive")
    response = conversation_action(alice_client, inbox, thread["answer"].uid, action="move", target=archive.pk)
    assert response.status_code == 302 and response["Location"] == f"/f/{inbox.pk}/"
    assert list(Message.objects.filter(folder=inbox).values_list("subject", flat=True)) == ["Unrelated"]
    assert sorted(Message.objects.filter(folder=archive).values_list("subject", flat=True)) == ["Lunch?", "Re: Lunch?"]
    assert Message.objects.filter(folder=folder(alice, "Sent")).count() == 1  # alice's reply stays in Sent
    # Delete from Archive: to Trash; Spam: to Junk (a training example each).
    conversation_action(alice_client, archive, 1, action="delete")
    trash = folder(alice, "Trash")
    assert Message.objects.filter(folder=archive).count() == 0 and Message.objects.filter(folder=trash).count() == 2
    conversation_action(alice_client, trash, 1, action="junk")
    junk = folder(alice, "Junk")
    assert Message.objects.filter(folder=junk).count() == 2
    from mailstore.models import TrainingExample

    assert TrainingExample.objects.filter(account=alice, verdict="spam").count() == 2
    # Not spam brings it back to INBOX; a folder to move to must be chosen.
    conversation_action(alice_client, junk, 1, action="notjunk")
    assert Message.objects.filter(folder=inbox).count() == 3
    back = Message.objects.filter(folder=inbox, subject="Lunch?").get()
    response = conversation_action(alice_client, inbox, back.uid, action="move", target="")
    assert response["Location"] == f"/f/{inbox.pk}/m/{back.uid}/conversation/"
    assert Message.objects.filter(folder=inbox).count() == 3


def test_conversation_actions_refuse_what_is_not_the_users(alice, bob, alice_client, client_for, thread):
    inbox = folder(alice, "INBOX")
    assert client_for(bob).post(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/action/", {"action": "delete"}).status_code == 404
    assert Message.objects.filter(folder=inbox).count() == 3
    response = conversation_action(alice_client, inbox, thread["answer"].uid, action="move", target=folder(bob, "INBOX").pk)
    assert response.status_code == 302 and Message.objects.filter(folder=folder(bob, "INBOX")).count() == 0
    response = conversation_action(alice_client, inbox, thread["answer"].uid, action="explode")
    assert response.status_code == 302 and Message.objects.filter(folder=inbox).count() == 3
    assert alice_client.get(f"/f/{inbox.pk}/m/{thread['answer'].uid}/conversation/action/").status_code == 405
