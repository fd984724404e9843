"""accounts.resolve.local_domain() and is_local_domain(): one query whatever the answer."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Domain, DomainAlias
from accounts.resolve import is_local_domain, local_domain


@pytest.fixture
def domains(domain):
    other = Domain.objects.create(name="other.test")
    DomainAlias.objects.create(name="alias.test", target=domain)
    DomainAlias.objects.create(name="off.test", target=domain, active=False)
    return domain, other


@pytest.mark.parametrize("name, expected", [
    ("example.test", "example.test"),
    ("other.test", "other.test"),
    ("alias.test", "example.test"),  # follows the alias to its target
    ("off.test", None),  # an inactive alias serves nothing
    ("outside.test", None),
])
def test_local_domain_in_one_query(domains, name, expected):
    with CaptureQueriesContext(connection) as queries:
        found = local_domain(name)
        local = is_local_domain(name)
    assert (found.name if found else None) == expected
    assert isinstance(found, Domain) or found is None
    assert local is (expected is not None)
    assert len(queries) == 2  # one each


def test_local_domain_gives_a_full_domain(domains):
    domain, _ = domains
    Domain.objects.filter(pk=domain.pk).update(default_quota=1234, active=False)
    found = local_domain("alias.test")
    assert (found.pk, found.default_quota, found.active) == (domain.pk, 1234, False)
    assert found.created == Domain.objects.get(pk=domain.pk).created  # converted as the ORM does (aware)
    assert not found._state.adding and found._state.db == "default"
