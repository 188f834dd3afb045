"""schemathesis against the app's own OpenAPI document, in process (ASGI), with a valid token:
no request, however odd, gets a 500, and every error response is problem+json (RFC 9457).
Bounded: a few examples per operation, no shrinking."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.http_support import bearer, client, copy_db, demo_db, tokens

PROBLEM = "application/problem+json"
EXAMPLES = int(os.environ.get("SUBLEDGER_SCHEMATHESIS_EXAMPLES", "5"))
"""Examples per operation: a handful in the suite; raise it to hunt (e.g. 200)."""


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    for c in client(copy_db(demo_db(tmp_path_factory), tmp_path_factory.mktemp("schemathesis"))):
        yield c, tokens(c)


def problem_or_ok(case: Any, response: Any) -> None:
    where = (case.method, case.formatted_path, response.status_code, response.text[:300])
    assert response.status_code < 500 or response.status_code == 503, where
    if response.status_code >= 400:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith(PROBLEM), where


def test_no_500_and_every_error_is_problem_json(secrets: tuple[Any, dict[str, str]]) -> None:
    c, tokens_of = secrets
    c.app.state.read_side.wait = 0  # a min_position beyond the head is refused at once
    schema = schemathesis.openapi.from_asgi("/openapi.json", c.app)
    operations = [found.ok() for found in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        role = "operator" if operation.path.startswith("/v1/tokens") else "support"

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 10, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def exercise(case: Any) -> None:
            case.headers = {**(case.headers or {}), **bearer(tokens_of[role])}
            problem_or_ok(case, case.call())

        exercise()
