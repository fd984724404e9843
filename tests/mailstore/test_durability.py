"""Which commits wait for the disk (mailsuite.db.durability): new mail does, flag changes,
expunges, copies and moves do not, and the connection is left as it was."""
import pytest
from django.db import connection, transaction

from mailsuite.db.durability import lazy_commit
from mailstore import actions
from tests.conftest import inbox

pytestmark = pytest.mark.django_db(transaction=True)
RAW = b"From: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def durability_setting():
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous")
            return {1: "lazy", 2: "durable"}[cursor.fetchone()[0]]
        cursor.execute("SHOW synchronous_commit")
        return {"off": "lazy", "on": "durable"}[cursor.fetchone()[0]]


def test_it_commits_lazily_inside_and_durably_after():
    seen = []
    lazy_commit(lambda: seen.append(durability_setting()))()
    assert seen == ["lazy"]
    assert durability_setting() == "durable"


def test_it_restores_durable_commits_when_the_change_fails():
    def fails():
        raise ValueError("refused")

    with pytest.raises(ValueError):
        lazy_commit(fails)()
    assert durability_setting() == "durable"


def test_an_enclosing_transaction_decides():
    seen = []
    with transaction.atomic():
        lazy_commit(lambda: seen.append(durability_setting()))()
    assert seen == ["durable"]


def test_flag_changes_and_expunges_commit_lazily_and_new_mail_durably(alice, monkeypatch):
    seen = []
    real = actions.events.publish_on_commit
    monkeypatch.setattr(actions.events, "publish_on_commit", lambda change: (seen.append((change.kind, durability_setting())), real(change)))
    message = actions.append(alice, "INBOX", RAW)
    folder = message.folder
    actions.store_flags(folder, [message.uid], mode="add", flags=["\\Deleted"])
    actions.copy_messages(folder, [message.uid], "Trash")
    actions.expunge(folder, [message.uid])
    assert seen == [("append", "durable"), ("flags", "lazy"), ("append", "lazy"), ("expunge", "lazy")]
    assert inbox(alice) == []
