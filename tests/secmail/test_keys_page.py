"""The keys page in the webmail: make, unlock (for the session only), publish, import."""
import pytest
from django.urls import reverse

from secmail import session as secmail_session
from secmail import unlock
from secmail.models import OwnKey, PeerKey
from tests.conftest import PASSWORD

PASSPHRASE = "key passphrase 1"


@pytest.fixture
def signed_in(client, alice):
    client.post(reverse("webmail:login"), {"address": "alice@example.test", "password": PASSWORD})
    return client


def post(client, **data):
    return client.post(reverse("secmail:keys"), data)


def test_it_makes_unlocks_and_locks_an_openpgp_key(signed_in, alice):
    page = signed_in.get(reverse("secmail:keys"))
    assert page.status_code == 200 and b"No keys yet." in page.content
    refused = post(signed_in, form="generate", **{"generate-passphrase": PASSPHRASE, "generate-passphrase_again": "other one!"})
    assert refused.status_code == 400 and not OwnKey.objects.exists()
    post(signed_in, form="generate", **{"generate-passphrase": PASSPHRASE, "generate-passphrase_again": PASSPHRASE})
    key = OwnKey.objects.get(account=alice)
    assert key.kind == "openpgp" and key.has_private

    wrong = post(signed_in, form="unlock", key=key.pk, **{"unlock-passphrase": "not it at all"})
    assert unlock.UNLOCK_COOKIE not in wrong.cookies
    done = post(signed_in, form="unlock", key=key.pk, **{"unlock-passphrase": PASSPHRASE})
    cookie = done.cookies[unlock.UNLOCK_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert b"data-unlocked" in signed_in.get(reverse("secmail:keys")).content
    # the session store alone holds no usable key material
    stored = str(dict(signed_in.session))
    assert "PRIVATE KEY" not in stored and PASSPHRASE not in stored

    post(signed_in, form="lock", key=key.pk)
    assert b"data-unlocked" not in signed_in.get(reverse("secmail:keys")).content


def test_it_publishes_and_serves_nothing_private(signed_in, alice):
    post(signed_in, form="generate", **{"generate-passphrase": PASSPHRASE, "generate-passphrase_again": PASSPHRASE})
    key = OwnKey.objects.get(account=alice)
    post(signed_in, form="publish", key=key.pk, published="1")
    key.refresh_from_db()
    assert key.published
    public = signed_in.get(reverse("secmail:key_download", args=[key.pk, "public"]))
    assert b"PUBLIC KEY BLOCK" in public.content and b"PRIVATE" not in public.content


def test_another_user_cannot_touch_alices_keys(signed_in, alice, bob, client):
    post(signed_in, form="generate", **{"generate-passphrase": PASSPHRASE, "generate-passphrase_again": PASSPHRASE})
    key = OwnKey.objects.get(account=alice)
    client.post(reverse("webmail:logout"))
    client.post(reverse("webmail:login"), {"address": "bob@example.test", "password": PASSWORD})
    post(client, form="delete", key=key.pk)
    assert OwnKey.objects.filter(pk=key.pk).exists()
    assert client.get(reverse("secmail:key_download", args=[key.pk, "public"])).status_code == 404


def test_a_correspondents_key_is_added(signed_in, alice, gpg):
    fpr = gpg.new_key("carol@example.test")
    post(signed_in, form="peer", **{"peer-key": gpg.public(fpr)})
    assert PeerKey.objects.get(account=alice).fingerprint == fpr
    assert b"carol@example.test" in signed_in.get(reverse("secmail:keys")).content


def test_with_server_keys_off_the_page_offers_public_keys_only(signed_in, settings):
    settings.MAILSUITE_SERVER_PRIVATE_KEYS = False
    page = signed_in.get(reverse("secmail:keys")).content
    assert b"keeps no private keys" in page and b'value="generate"' not in page
    assert post(signed_in, form="generate", **{"generate-passphrase": PASSPHRASE, "generate-passphrase_again": PASSPHRASE}).status_code == 400


def test_the_key_passphrase_is_changed_only_with_the_current_one(signed_in, alice):
    from secmail import actions
    from secmail.errors import BadPassphrase

    post(signed_in, form="generate", **{"generate-passphrase": PASSPHRASE, "generate-passphrase_again": PASSPHRASE})
    key = OwnKey.objects.get(account=alice)
    new = "a brand new passphrase"
    post(signed_in, form="passphrase", key=key.pk, **{"change-current": "wrong one!", "change-passphrase": new, "change-passphrase_again": new})
    key.refresh_from_db()
    actions.unseal_private(key, PASSPHRASE)  # unchanged
    post(signed_in, form="passphrase", key=key.pk, **{"change-current": PASSPHRASE, "change-passphrase": new, "change-passphrase_again": new})
    key.refresh_from_db()
    actions.unseal_private(key, new)
    with pytest.raises(BadPassphrase):
        actions.unseal_private(key, PASSPHRASE)
