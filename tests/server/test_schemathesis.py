"""Property-based fuzzing of every operation in the server's own OpenAPI schema: never a 5xx.

Bounded for CI: at most 30 generated requests per operation (half valid, half deliberately
invalid), against a live server on 127.0.0.1, with the admin key so that the admin routes are
exercised past authentication.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.openapi import from_url
from schemathesis.schemas import APIOperation, BaseSchema

from .conftest import ADMIN_KEY, ADMIN_KEY_ENV, make_app, serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaseSchema]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ADMIN_KEY_ENV, ADMIN_KEY)
        with serve(make_app(tmp_path_factory.mktemp("fuzz"))) as live:
            yield from_url(f"{live.url}/openapi.json")


def _fuzz(operation: APIOperation, mode: GenerationMode, statuses: list[int]) -> list[str]:
    """Up to EXAMPLES_PER_OPERATION requests for one operation; the 5xx (or shapeless errors) seen."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION // 2,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        response = case.call(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=20)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
            )
        elif response.status_code >= 400:
            error = response.json().get("error") or {}
            if not (error.get("message") and error.get("type")):
                failures.append(
                    f"{case.method} {case.formatted_path}: error without the OpenAI shape: {response.text[:300]}"
                )

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (e.g. GET /health)
    return failures


def test_no_server_errors(api_schema: BaseSchema) -> None:
    operations: list[APIOperation] = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), f"invalid operation in the OpenAPI schema: {result.err()}"
        operations.append(result.ok())
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /v1/chat/completions", "POST /v1/embeddings", "POST /admin/keys", "GET /ready"} <= labels
    statuses: list[int] = []
    failures = [f for op in operations for mode in GenerationMode for f in _fuzz(op, mode, statuses)]
    assert not failures, "\n".join(dict.fromkeys(failures))
    # The fuzzing really ran, and reached both the happy paths and the refusals.
    assert len(statuses) >= 10 * len(operations)
    assert {200, 400} <= set(statuses)
