"""Web Key Directory: our users' published keys served at /.well-known/openpgpkey/, and
others' looked up over HTTP (a live server on loopback standing in for their domain)."""
import pytest

from secmail import actions, openpgp, wkd
from secmail.models import PeerKey

PASSPHRASE = "key passphrase 1"


def test_the_hash_matches_the_drafts_example():
    # draft-koch-openpgp-webkey-service §3.1: "Joe.Doe@Example.ORG"
    assert wkd.local_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"


@pytest.fixture
def published(alice, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "example.test", "openpgpkey.example.test", "other.test"]
    own = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    actions.set_published(own, True)
    return own


def test_it_serves_a_published_key_by_the_direct_and_advanced_methods(client, published, gpg):
    hashed = wkd.local_hash("alice")
    direct = client.get(f"/.well-known/openpgpkey/hu/{hashed}", {"l": "alice"}, HTTP_HOST="example.test")
    advanced = client.get(f"/.well-known/openpgpkey/example.test/hu/{hashed}", HTTP_HOST="openpgpkey.example.test")
    for response in (direct, advanced):
        assert (response.status_code, response["Content-Type"]) == (200, "application/octet-stream")
    gpg("--import", input=direct.content)
    assert gpg.fingerprint("alice@example.test") == published.fingerprint
    assert client.get("/.well-known/openpgpkey/policy", HTTP_HOST="example.test").status_code == 200


def test_it_serves_nothing_unpublished_or_elsewhere(client, published, bob):
    actions.generate_openpgp_key(bob, passphrase=PASSPHRASE)  # not published
    assert client.get(f"/.well-known/openpgpkey/hu/{wkd.local_hash('bob')}", HTTP_HOST="example.test").status_code == 404
    assert client.get(f"/.well-known/openpgpkey/hu/{wkd.local_hash('alice')}", HTTP_HOST="other.test").status_code == 404
    assert client.get(f"/.well-known/openpgpkey/hu/{wkd.local_hash('alice')}", {"l": "bob"}, HTTP_HOST="example.test").status_code == 404
    assert client.get("/.well-known/openpgpkey/policy", HTTP_HOST="other.test").status_code == 404
    actions.set_published(published, False)
    assert client.get(f"/.well-known/openpgpkey/hu/{wkd.local_hash('alice')}", HTTP_HOST="example.test").status_code == 404


def test_a_lookup_finds_the_key_over_http(live_server, published, bob, monkeypatch):
    monkeypatch.setattr(wkd, "DIRECT_URL", live_server.url + "/.well-known/openpgpkey/{domain}/hu/{hash}?l={local}")
    learned = actions.learn_from_wkd(bob, "alice@example.test")
    assert (learned.fingerprint, learned.source, learned.address) == (published.fingerprint, PeerKey.WKD, "alice@example.test")
    assert openpgp.inspect(learned.public_data)[0].addresses == ["alice@example.test"]
    assert actions.learn_from_wkd(bob, "nobody@example.test") is None


def test_the_domains_own_names_reach_the_directory_without_allowed_hosts(client, alice, settings):
    """ops' ServedDomainHostsMiddleware admits openpgpkey.DOMAIN and DOMAIN for WKD paths
    of the domains we serve (no ALLOWED_HOSTS entry for them), and only for those paths."""
    assert not {"example.test", "openpgpkey.example.test"} & set(settings.ALLOWED_HOSTS)
    own = actions.generate_openpgp_key(alice, passphrase=PASSPHRASE)
    actions.set_published(own, True)
    hashed = wkd.local_hash("alice")
    advanced = client.get(f"/.well-known/openpgpkey/example.test/hu/{hashed}", {"l": "alice"}, HTTP_HOST="openpgpkey.example.test")
    direct = client.get(f"/.well-known/openpgpkey/hu/{hashed}", {"l": "alice"}, HTTP_HOST="example.test:443")
    assert (advanced.status_code, direct.status_code) == (200, 200)
    assert advanced.content == direct.content and openpgp.inspect(advanced.content)[0].fingerprint == own.fingerprint
    assert client.get("/.well-known/openpgpkey/example.test/policy", HTTP_HOST="openpgpkey.example.test").status_code == 200
    assert client.get("/.well-known/openpgpkey/policy", HTTP_HOST="example.test").status_code == 200
    # names of domains we do not serve, and other paths on our domains' names, meet Django's Host check
    assert client.get(f"/.well-known/openpgpkey/stranger.test/hu/{hashed}", HTTP_HOST="openpgpkey.stranger.test").status_code == 400
    assert client.get("/security/keys/", HTTP_HOST="openpgpkey.example.test").status_code == 400


def test_a_lookup_tries_the_advanced_method_first_and_falls_back_only_if_unreachable(alice, web, gpg, monkeypatch):
    import socket

    fpr = gpg.new_key("carol@faraway.test")
    key_path = f"/faraway.test/hu/{wkd.local_hash('carol')}"
    monkeypatch.setattr(wkd, "DIRECT_URL", web.url + "/direct/{domain}/hu/{hash}?l={local}")
    monkeypatch.setattr(wkd, "ADVANCED_URL", web.url + "/advanced/{domain}/hu/{hash}?l={local}")
    web.routes["/advanced" + key_path] = gpg("--export", fpr).stdout
    assert actions.learn_from_wkd(alice, "carol@faraway.test").fingerprint == fpr
    assert [path.split("?")[0] for _, path in web.requests] == ["/advanced" + key_path]

    # the advanced host answers "no such key": final, the direct method is not asked
    web.requests.clear()
    assert wkd.lookup("dave@faraway.test") is None
    assert [path.split("/")[1] for _, path in web.requests] == ["advanced"]

    # the advanced host does not exist (here: nothing listens): the direct method is used
    with socket.socket() as closed:
        closed.bind(("127.0.0.3", 0))
        dead = f"http://127.0.0.3:{closed.getsockname()[1]}"
    monkeypatch.setattr(wkd, "ADVANCED_URL", dead + "/advanced/{domain}/hu/{hash}?l={local}")
    web.routes["/direct" + key_path] = web.routes.pop("/advanced" + key_path)
    web.requests.clear()
    found = wkd.lookup("carol@faraway.test")
    assert found is not None and found[0].fingerprint == fpr
    assert [path.split("?")[0] for _, path in web.requests] == ["/direct" + key_path]
