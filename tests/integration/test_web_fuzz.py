"""Schemathesis generates requests from the API's own OpenAPI document and sends them, logged in,
to the app on a real store with real data: no request may make it answer 500, and every answer
must match what the document promises (status codes, content types, response schemas)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.integration.test_web_api import scenario
from tests.integration.web_helpers import bearer, make_app

pytestmark = pytest.mark.integration


@pytest.fixture
def fuzzed_app(env, monkeypatch) -> Any:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ERP_DATABASE_URL", env.erp_url)
    monkeypatch.setenv("CRM_DATABASE_URL", env.crm_url)
    scenario(env)  # mappings, jobs, errors and record logs for the generated requests to find
    return make_app(env)


@pytest.fixture
def api_schema(fuzzed_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/api/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_keeps_its_promises(case: Any, fuzzed_app: Any) -> None:
    # Two checks are off, for requests whose answer depends on more than their shape: a request the
    # schema allows may still be refused for what it names (an unknown mapping or coupling, resolve
    # without a side), and unknown query parameters and headers are ignored, as HTTP servers do.
    # Bodies are strict (models.py): a wrong type or an unknown field is a 422.
    case.call_and_validate(headers=_token(fuzzed_app), excluded_checks=[positive_data_acceptance, negative_data_rejection])


_tokens: dict[int, dict[str, str]] = {}


def _token(app: Any) -> dict[str, str]:
    """One login per app: the login throttle would rightly stop a fuzzer that logs in per request."""
    if id(app) not in _tokens:
        _tokens[id(app)] = bearer(app)
    return _tokens[id(app)]
