"""Per-domain spam settings and lists in the admin go through antispam.actions."""
import pytest

from antispam.models import ListEntry, SpamSettings, Verdict

pytestmark = pytest.mark.django_db


def test_it_adds_a_domain_block_entry_normalised(admin_client, domain):
    response = admin_client.post("/admin/antispam/listentry/add/", {"domain": domain.pk, "kind": "block", "pattern": " Spam.Example. "})
    assert response.status_code == 302
    assert list(ListEntry.objects.values_list("domain__name", "kind", "pattern")) == [("example.test", "block", "spam.example")]
    assert admin_client.get("/admin/antispam/listentry/").status_code == 200


def test_it_refuses_a_bad_entry_and_inverted_thresholds(admin_client, domain):
    response = admin_client.post("/admin/antispam/listentry/add/", {"domain": domain.pk, "kind": "allow", "pattern": "not a domain"})
    assert response.status_code == 200 and "is not a domain name or an address" in response.content.decode()
    response = admin_client.post("/admin/antispam/spamsettings/add/", {"domain": domain.pk, "tag_threshold": "5", "junk_threshold": "3"})
    assert "the Junk threshold cannot be below the tag threshold" in response.content.decode()
    response = admin_client.post("/admin/antispam/spamsettings/add/", {"domain": domain.pk, "tag_threshold": "3", "junk_threshold": "5"})
    assert response.status_code == 302
    assert SpamSettings.objects.get(domain=domain).junk_threshold == 5


def test_verdicts_are_read_only(admin_client):
    assert admin_client.get("/admin/antispam/verdict/").status_code == 200
    assert admin_client.get("/admin/antispam/verdict/add/").status_code == 403
    assert Verdict.objects.count() == 0
