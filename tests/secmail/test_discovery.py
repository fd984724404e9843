"""The compose page's readiness endpoint looks recipients without a key up in their Web
Key Directory (a loopback server standing in for faraway.test), keeps what it finds,
remembers misses, and stays within its time bound."""
import time

import pytest
from django.urls import reverse

from secmail import discovery, wkd
from secmail.models import OPENPGP, SMIME, PeerKey
from tests.conftest import PASSWORD


@pytest.fixture
def directory(web, gpg, monkeypatch):
    """faraway.test's WKD on loopback, holding carol's key (direct method paths)."""
    monkeypatch.setattr(wkd, "DIRECT_URL", web.url + "/{domain}/hu/{hash}?l={local}")
    fpr = gpg.new_key("carol@faraway.test", name="Carol")
    web.routes[f"/faraway.test/hu/{wkd.local_hash('carol')}"] = gpg("--export", fpr).stdout
    web.fingerprint = fpr
    return web


def ask(client, to, *, kind=OPENPGP, lookup="1"):
    return client.get(reverse("secmail:readiness"), {"kind": kind, "to": to, "lookup": lookup}).json()


@pytest.fixture
def signed_in(client, alice):
    client.post(reverse("webmail:login"), {"address": "alice@example.test", "password": PASSWORD})
    return client


def test_recipients_without_a_key_are_looked_up_and_misses_remembered(signed_in, alice, bob, directory):
    answer = ask(signed_in, "Carol <carol@faraway.test>, dave@faraway.test, bob@example.test")
    assert answer["recipients"] == {"carol@faraway.test": True, "dave@faraway.test": False, "bob@example.test": False}
    assert answer["all"] is False
    learned = PeerKey.objects.get(account=alice, address="carol@faraway.test")
    assert (learned.source, learned.fingerprint, learned.kind) == (PeerKey.WKD, directory.fingerprint, OPENPGP)
    # carol and dave were asked for; bob is of a domain served here: never looked up
    assert sorted(path.split("?")[0] for _, path in directory.requests) == sorted(
        [f"/faraway.test/hu/{wkd.local_hash('carol')}", f"/faraway.test/hu/{wkd.local_hash('dave')}"])

    # again: carol's key is kept, dave's miss remembered — no new request
    again = ask(signed_in, "carol@faraway.test, dave@faraway.test")
    assert again["recipients"] == {"carol@faraway.test": True, "dave@faraway.test": False}
    assert len(directory.requests) == 2

    # no lookup unless encryption is on (lookup=1), and none for S/MIME
    assert ask(signed_in, "erin@faraway.test", lookup="0")["recipients"] == {"erin@faraway.test": False}
    assert ask(signed_in, "erin@faraway.test", kind=SMIME)["recipients"] == {"erin@faraway.test": False}
    assert len(directory.requests) == 2


def test_a_slow_directory_costs_at_most_the_lookup_timeout(signed_in, directory, monkeypatch):
    monkeypatch.setattr(discovery, "LOOKUP_TIMEOUT", 0.5)
    directory.stall = 3
    started = time.monotonic()
    answer = ask(signed_in, "carol@faraway.test, frank@faraway.test, grace@faraway.test")
    assert answer["recipients"] == {"carol@faraway.test": False, "frank@faraway.test": False, "grace@faraway.test": False}
    assert time.monotonic() - started < 2.5


def test_lookups_per_request_are_bounded(signed_in, directory, monkeypatch):
    monkeypatch.setattr(discovery, "MAX_LOOKUPS", 2)
    many = ", ".join(f"user{i}@faraway.test" for i in range(5))
    assert not any(ask(signed_in, many)["recipients"].values())
    assert len(directory.requests) == 2
    ask(signed_in, many)  # the next two
    assert len(directory.requests) == 4
