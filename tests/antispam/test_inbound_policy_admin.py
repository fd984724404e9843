"""The admin's inbound policy and greylisting pages: changes go through mta.actions and
antispam.greylist, and the SMTP server's in-memory copy follows."""
import pytest
from django.urls import reverse

from antispam import inbound_policy
from mta.models import GreylistAllowedNetwork, GreylistTriplet, InboundPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_policy_cache(monkeypatch):
    # Changes take effect after commit; these tests run inside one transaction.
    monkeypatch.setattr(inbound_policy, "TTL", 0)
    yield
    inbound_policy.forget()


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(user)
    return client


def test_it_turns_greylisting_on_for_a_domain_and_back(operator, domain):
    response = operator.post(
        reverse("admin:mta_inboundpolicy_add"),
        {"domain": domain.pk, "greylisting": "on", "attachments": "quarantine"},
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    policy = InboundPolicy.objects.get()
    assert (policy.domain, policy.greylisting, policy.attachments) == (domain, True, "quarantine")
    assert inbound_policy.get("example.test") == inbound_policy.Policy(greylisting=True, attachments="quarantine")

    listing = operator.get(reverse("admin:mta_inboundpolicy_changelist"))
    assert b"deliver it into Junk" in listing.content

    response = operator.post(reverse("admin:mta_inboundpolicy_change", args=[policy.pk]), {"attachments": ""})
    assert response.status_code == 302
    assert inbound_policy.get("example.test") == inbound_policy.Policy(greylisting=False, attachments="")

    response = operator.post(reverse("admin:mta_inboundpolicy_delete", args=[policy.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not InboundPolicy.objects.exists()


def test_an_operator_allows_a_network_and_bad_input_is_a_form_error(operator):
    add = reverse("admin:mta_greylistallowednetwork_add")
    response = operator.post(add, {"network": "192.0.2.77", "reason": "partner", "days": ""})
    assert response.status_code == 302
    row = GreylistAllowedNetwork.objects.get()
    assert (row.network, row.reason, row.expires_at) == ("192.0.2.0/24", "partner", None)

    response = operator.post(add, {"network": "10.0.0.0/8", "reason": "", "days": ""})
    assert response.status_code == 200
    assert "MAILSUITE_GREYLIST_SKIP_NETWORKS" in str(response.context["adminform"].form.errors)

    assert operator.get(reverse("admin:mta_greylistallowednetwork_changelist")).status_code == 200
    assert operator.get(reverse("admin:mta_greylisttriplet_changelist")).status_code == 200
    assert not GreylistTriplet.objects.exists()
