"""The guardrails through the built stack and the HTTP API: the x-aiestack-guard header, the 400
``guardrail_blocked`` error that never names the matched value, and PII kept out of stored exchanges
and spans even with content tracing on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiestack.build import Stack, build_stack
from aiestack.server.app import create_app
from aiestack.settings import Settings, TracingSettings

pytestmark = pytest.mark.unit

EMAIL = "jane.doe@example.com"


class _NoEmbeddings:
    name, dim = "other-model", 8

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise AssertionError("the injection classifier must not embed with a model it was not trained on")

    async def aclose(self) -> None:
        return None


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        tracing=TracingSettings(content=True),
        **overrides,
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, list[Stack]]]:
    stacks: list[Stack] = []

    def factory() -> Stack:
        stack = build_stack(_settings(tmp_path, routes={"strict": {"deployments": ["fake"], "guards": {"secrets": "block"}}}))
        stack.resources.use(embeddings=_NoEmbeddings())  # not all-MiniLM-L6-v2: the classifier uses its lexical heads (fast)
        stacks.append(stack)
        return stack

    app = create_app(factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, stacks


def _body(text: str, model: str = "fake", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_every_answer_carries_the_guard_header_and_pii_round_trips(client: Any) -> None:
    c, _ = client
    r = await c.post("/v1/chat/completions", json=_body(f"Please email {EMAIL} today"))
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == f"Please email {EMAIL} today"
    guard = r.headers["x-aiestack-guard"]
    assert "pii:redact" in guard and "injection:pass" in guard and "secrets:pass" in guard


async def test_a_block_is_a_400_naming_the_guard_but_not_the_secret(client: Any) -> None:
    c, _ = client
    key = "ghp_" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4Q5r6S7t8"
    r = await c.post("/v1/chat/completions", json=_body(f"deploy with {key}", model="strict"))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "guardrail_blocked" and "'secrets'" in error["message"]
    assert key not in r.text
    assert "secrets:block" in r.headers["x-aiestack-guard"]


async def test_streams_are_restored_and_end_cleanly(client: Any) -> None:
    c, _ = client
    async with c.stream("POST", "/v1/chat/completions", json=_body(f"Say {EMAIL}", stream=True)) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(
        (json.loads(line[6:])["choices"][0]["delta"].get("content") or "") for line in lines[:-1] if "choices" in line
    )
    assert text == f"Say {EMAIL}"


async def test_stored_exchanges_and_spans_never_hold_the_pii(client: Any) -> None:
    c, stacks = client
    r = await c.post("/v1/chat/completions", json=_body(f"My address is {EMAIL}, call +1 415-555-2671"))
    exchange_id = r.headers["x-aiestack-exchange-id"]
    stack = stacks[0]
    stack.writer.flush()
    record = stack.store.get_exchange(exchange_id)
    assert record is not None and record.request is not None
    stored = json.dumps(record.request) + (record.response or "") + json.dumps(record.attributes)
    assert EMAIL not in stored and "555-2671" not in stored
    assert "<EMAIL_1>" in json.dumps(record.request)  # the redacted request is what was recorded
    spans = stack.store.spans(exchange_id=exchange_id)
    assert spans  # the root span and the stage spans
    recorded = json.dumps([s.attributes for s in spans], default=str)
    assert "gen_ai.input.messages" in recorded and EMAIL not in recorded
