"""Delegated administration of the content filter's settings: a domain admin sees and
changes the thresholds and allow/block lists of their domains and their accounts only;
the actions refuse the rest again.

Personas (tests/accounts/tenants.py): root is a superadmin; alice administers
example.test, where bob has a mailbox; mallory administers mallory.example (carol's).
"""
import pytest
from django.urls import reverse

from antispam import actions
from antispam.models import ListEntry, SpamSettings
from tests.accounts.tenants import alice, bob, carol, example, mallory, mallory_domain, root  # noqa: F401

pytestmark = pytest.mark.django_db


def test_a_domain_admin_manages_their_domains_lists_and_thresholds(client, alice, bob, example, mallory_domain):
    client.force_login(alice)
    add = reverse("admin:antispam_listentry_add")
    response = client.post(add, {"domain": mallory_domain.pk, "kind": "block", "pattern": "spam.example"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert client.post(add, {"domain": example.pk, "kind": "block", "pattern": "spam.example"}).status_code == 302
    assert client.post(add, {"account": bob.pk, "kind": "allow", "pattern": "friend@x.example"}).status_code == 302
    response = client.post(reverse("admin:antispam_spamsettings_add"), {"domain": example.pk, "junk_threshold": "8"})
    assert response.status_code == 302
    assert SpamSettings.objects.get(domain=example).junk_threshold == 8
    assert sorted(ListEntry.objects.values_list("pattern", flat=True)) == ["friend@x.example", "spam.example"]


def test_a_domain_admin_sees_only_their_rows(client, alice, mallory, bob, carol, example, mallory_domain):
    actions.add_list_entry("block", "ours.example", domain=example)
    actions.add_list_entry("block", "bobs.example", account=bob)
    actions.add_list_entry("block", "theirs.example", domain=mallory_domain)
    actions.add_list_entry("block", "carols.example", account=carol)
    client.force_login(alice)
    page = client.get(reverse("admin:antispam_listentry_changelist")).content.decode()
    assert "ours.example" in page and "bobs.example" in page
    assert "theirs.example" not in page and "carols.example" not in page
    theirs = ListEntry.objects.get(pattern="theirs.example")
    assert client.get(reverse("admin:antispam_listentry_change", args=[theirs.pk])).status_code == 302  # not found
    response = client.post(reverse("admin:antispam_listentry_add"), {"account": carol.pk, "kind": "allow", "pattern": "x.example"})
    assert "Select a valid choice" in response.content.decode()
    assert client.get(reverse("admin:antispam_verdict_changelist")).status_code == 403  # the superusers'


def test_changes_made_in_the_admin_are_audited(client, alice, example):
    from accounts.models import AuditEntry

    client.force_login(alice)
    client.post(reverse("admin:antispam_listentry_add"), {"domain": example.pk, "kind": "block", "pattern": "spam.example"})
    entry = AuditEntry.objects.latest("id")
    assert (entry.action, entry.actor_name, entry.via, entry.object_repr) == (
        "spam.list_add", "alice", "admin", "spam.example on example.test",
    )
