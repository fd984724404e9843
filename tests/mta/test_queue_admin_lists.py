"""The admin's queue list with thousands of messages waiting: a few queries a page, filters
and search without DISTINCT. The messages are made once for this module
(tests.conftest.rows_for_the_module): every test here only reads them."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import actions as account_actions
from tests.conftest import PASSWORD, rows_for_the_module
from tests.mta.test_queue_admin import CHANGELIST, CROWD, add_queued, listed, url

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def crowd(django_db_setup, django_db_blocker):
    """Alice's mail waiting for friends elsewhere: CROWD messages, two recipients each."""
    with rows_for_the_module(django_db_blocker):
        account_actions.create_domain("example.test")
        account_actions.create_account("alice@example.test", password=PASSWORD, display_name="Alice")
        yield add_queued(CROWD)


@pytest.mark.parametrize(
    "params",
    [{}, {"state": "deferred"}, {"domain": "dest1.example"}, {"age": "lt1h"}, {"q": "r1.2999@dest1"},
     {"q": "Q0001234"}, {"state": "pending", "domain": "dest0.example", "q": "alice"}],
)
def test_it_lists_thousands_of_messages_in_a_few_queries(admin_client, crowd, params, django_assert_max_num_queries):
    admin_client.get(url(CHANGELIST))  # warm the session and content types
    with django_assert_max_num_queries(6):
        response = admin_client.get(url(CHANGELIST), params)
    assert response.status_code == 200
    assert response.context["cl"].result_count > 0


def test_it_filters_and_searches_without_distinct(admin_client, crowd):
    admin_client.get(url(CHANGELIST))
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(url(CHANGELIST), {"state": "deferred", "domain": "dest1.example", "q": "dest1"})
    assert not any("DISTINCT" in query["sql"].upper() for query in queries.captured_queries)


def test_it_searches_by_queue_id_sender_and_recipient(admin_client, crowd):
    def ids(q):
        return listed(admin_client.get(url(CHANGELIST), {"q": q}))

    assert ids("q0001234") == ["Q0001234"]
    assert ids("r1.1234@dest1.example") == ["Q0001234"]
    assert ids("r0.2999@") == ["Q0002999"]
    assert len(ids("alice@example")) == 100
    assert ids("mallory") == []
