"""``/v1/embeddings`` goes through keys, limits, budgets, cost and traces like chat (issue #13, defect 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aiestack.build import Stack

from .conftest import make_app, stack_of

pytestmark = pytest.mark.unit

EMBED = {"model": "fake-embed", "input": ["alpha beta", "gamma"]}


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Stack]]:
    app = make_app(tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, stack_of(app)


async def test_an_rpm_limit_counts_embedding_calls(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, stack = keyed
    _, secret = stack.keys.create(tenant="acme", rpm=2, tpm=100)
    auth = {"authorization": f"Bearer {secret}"}
    codes = [(await client.post("/v1/embeddings", json=EMBED, headers=auth)).status_code for _ in range(5)]
    assert codes == [200, 200, 429, 429, 429]


async def test_a_tpm_limit_refuses_a_large_embedding_request(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, stack = keyed
    _, secret = stack.keys.create(tenant="acme", tpm=100)
    r = await client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x" * 1000}, headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 400 and "TPM limit" in r.json()["error"]["message"]


async def test_an_embedding_call_is_recorded_with_its_tokens(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, stack = keyed
    record_key, secret = stack.keys.create(tenant="acme")
    r = await client.post("/v1/embeddings", json=EMBED, headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 200
    exchange_id = r.headers["x-aiestack-exchange-id"]
    assert stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(exchange_id)
    assert record is not None
    assert (record.key_id, record.tenant, record.model, record.outcome) == (record_key.id, "acme", "fake-embed", "ok")
    assert record.input_tokens == r.json()["usage"]["prompt_tokens"] == 3
    assert record.request["operation"] == "embeddings" and record.request["inputs"] == 2
    assert "alpha" not in repr(record)  # inputs are content: never stored


async def test_a_model_the_key_may_not_use_is_refused(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, stack = keyed
    _, secret = stack.keys.create(tenant="acme", models=["fake"])
    r = await client.post("/v1/embeddings", json=EMBED, headers={"authorization": f"Bearer {secret}"})
    assert r.status_code == 403


async def test_input_size_limits(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, stack = keyed
    stack.settings.gateway.max_embedding_inputs = 3
    stack.settings.gateway.max_embedding_chars = 100
    r = await client.post("/v1/embeddings", json={"model": "fake-embed", "input": ["a"] * 4})
    assert r.status_code == 400 and "at most 3" in r.json()["error"]["message"]
    r = await client.post("/v1/embeddings", json={"model": "fake-embed", "input": ["a" * 60, "b" * 60]})
    assert r.status_code == 400 and "at most 100" in r.json()["error"]["message"]
