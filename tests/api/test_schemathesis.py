"""schemathesis against the OpenAPI schema, in-process over the WSGI app: for every
operation, generated requests (valid and invalid) never get a 5xx, and every response
matches the schema. Bounded: a few examples per operation, so the module takes well
under a minute."""
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings

from accounts import actions
from api import actions as api_actions

EXAMPLES = 12

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def token(tenants, bob):
    """A superadmin's token over a small world: every operation reaches real rows."""
    actions.create_domain_alias("example.net", "example.test")
    _, text = api_actions.create_token("root", ["*"])
    return text


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """The WSGI handler closes the database connection after each request; the test's
    transaction lives on it. Django's own test client keeps it open the same way."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.django_db
def test_it_answers_every_generated_request_without_5xx_or_schema_violation(token):
    """One test over all operations (not one per operation), so the world is made once."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks)

        try:
            check()
        except Exception as error:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{operation.label}: {str(error)[:2000]}")
    assert not failures, "\n\n".join(failures)
