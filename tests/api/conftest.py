"""The API under test through Django's test client, with real tokens.

Personas (tests/accounts/tenants.py): root is a superadmin; alice administers
example.test (bob has a mailbox there); mallory administers mallory.example (carol).
`as_user(user, scopes)` is a client that sends a real token of that user.
"""
import json

import pytest
from django.test import Client

from tests.accounts.tenants import alice, bob, carol, example, mallory, mallory_domain, root, tenants  # noqa: F401

V1 = "/api/v1/"


class Api:
    """A client speaking JSON with `Authorization: Bearer TOKEN` (or a session, token None)."""

    def __init__(self, token=None, client=None):
        self.client = client or Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def call(self, method, path, body=None, **params):
        url = path if path.startswith("/") else V1 + path
        handler = getattr(self.client, method)
        if method == "get":
            response = handler(url, params, **self.headers)
        else:
            if params:
                from urllib.parse import urlencode

                url += "?" + urlencode(params)
            response = handler(url, json.dumps(body) if body is not None else "", content_type="application/json",
                               **self.headers)
        response.json_body = json.loads(response.content) if response.content and response.get(
            "Content-Type", "").startswith("application/json") else None
        return response

    def get(self, path, **params):
        return self.call("get", path, **params)

    def post(self, path, body=None, **params):
        return self.call("post", path, body, **params)

    def patch(self, path, body=None):
        return self.call("patch", path, body)

    def put(self, path, body=None):
        return self.call("put", path, body)

    def delete(self, path, **params):
        return self.call("delete", path, **params)


@pytest.fixture(autouse=True)
def fresh_cache():
    """The superadmin's statistics are cached: each test counts its own world."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def as_user(db):
    from api import actions

    def make(user, scopes=("*",)):
        _, text = actions.create_token(user.get_username(), list(scopes))
        return Api(text)

    return make


def ids(response):
    assert response.status_code == 200, response.content
    return sorted(row["id"] for row in response.json_body["results"])
