"""Through the HTTP API, with content tracing on: no text field of chat or completions reaches the
model or the store with a PII value or a secret in it (issue #13, defect 2; docs/security.md)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from .conftest import ADMIN, fake_of, stack_of
from .console.conftest import console_app

pytestmark = pytest.mark.unit

EMAIL = "jane.doe@example.com"
KEY = "ghp_" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4Q5r6S7t8"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    application = console_app(tmp_path)  # content tracing on
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, application


def _stored(application: FastAPI, exchange_id: str) -> str:
    stack = stack_of(application)
    assert stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(exchange_id)
    assert record is not None
    spans = stack.store.spans(exchange_id=exchange_id)
    assert spans  # the root span and the stage spans
    return repr(record) + repr(spans)


async def test_chat_every_field(app: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, application = app
    body = {
        "model": "fake",
        "messages": [
            {"role": "system", "content": f"The user is {EMAIL}; the token is {KEY}."},
            {"role": "user", "content": [{"type": "text", "text": f"hello, I am {EMAIL}"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "mail", "arguments": json.dumps({"to": EMAIL})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": f"sent to {EMAIL}"},
            {"role": "user", "content": "thanks"},
        ],
        "stop": [EMAIL],
        "user": EMAIL,
        "tools": [{"type": "function", "function": {"name": "mail", "description": f"mail {EMAIL}",
                                                   "parameters": {"type": "object", "description": KEY}}}],
    }
    r = await client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    sent = repr(fake_of(application).requests[-1])
    assert EMAIL not in sent and KEY not in sent
    stored = _stored(application, r.headers["x-aiestack-exchange-id"])
    assert EMAIL not in stored and KEY not in stored


async def test_completions_every_field(app: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, application = app
    body = {"model": "fake", "prompt": f"Write to {EMAIL} with {KEY}", "stop": [EMAIL], "user": EMAIL}
    r = await client.post("/v1/completions", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    sent = repr(fake_of(application).requests[-1])
    assert EMAIL not in sent and KEY not in sent
    stored = _stored(application, r.headers["x-aiestack-exchange-id"])
    assert EMAIL not in stored and KEY not in stored


async def test_an_unknown_model_name_is_stored_masked(app: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, application = app
    r = await client.post("/v1/chat/completions", json={"model": f"model-{EMAIL}", "messages": [{"role": "user", "content": "hi"}]}, headers=ADMIN)
    assert r.status_code == 404
    stored = _stored(application, r.headers["x-aiestack-exchange-id"])
    assert EMAIL not in stored
