"""Through the HTTP API with the default config: x-aiestack-cache says hit, semantic-hit, miss or bypass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiestack.build import Stack, build_stack
from aiestack.models.fake import FakeModel
from aiestack.server.app import create_app
from aiestack.settings import GatewaySettings, Settings
from aiestack.testing.embeddings import BagOfWordsEmbeddings

pytestmark = pytest.mark.unit


def make_app(tmp_path: Path, **overrides: Any) -> FastAPI:
    def factory() -> Stack:
        settings = Settings(
            data_dir=tmp_path,
            embedded_model=False,
            default_model="fake",
            models={"fake": {"provider": "fake"}},
            gateway=GatewaySettings(auth="off"),
            **overrides,
        )
        stack = build_stack(settings)
        stack.resources.use(embeddings=BagOfWordsEmbeddings(dim=512))
        return stack

    return create_app(factory)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = make_app(tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": text}], "temperature": 0, **extra}


async def test_the_default_config_caches_deterministic_requests(client: tuple[httpx.AsyncClient, FastAPI]) -> None:
    http, app = client
    fake = app.state.stack.models.resolve("fake").provider
    assert isinstance(fake, FakeModel)
    fake.enqueue(["Use the reset link on the login page."])
    first = await http.post("/v1/chat/completions", json=body("How do I reset my password?"))
    assert first.status_code == 200 and first.headers["x-aiestack-cache"] == "miss"
    again = await http.post("/v1/chat/completions", json=body("How do I reset my password?"))
    assert again.headers["x-aiestack-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["content"] == "Use the reset link on the login page."
    assert again.json()["usage"]["completion_tokens"] == 0
    reworded = await http.post("/v1/chat/completions", json=body("how do i reset my password please"))
    assert reworded.headers["x-aiestack-cache"] == "semantic-hit"
    streamed = await http.post("/v1/chat/completions", json=body("How do I reset my password?", stream=True))
    assert streamed.headers["x-aiestack-cache"] == "hit"
    assert "Use the reset link" in streamed.text and streamed.text.rstrip().endswith("data: [DONE]")
    warm = await http.post("/v1/chat/completions", json={**body("How do I reset my password?"), "temperature": 0.9})
    assert warm.headers["x-aiestack-cache"] == "bypass"
    assert len(fake.requests) == 2  # the first request and the warm one


async def test_the_sqlite_cache_outlives_the_server(tmp_path: Path) -> None:
    for expected in ("miss", "hit"):
        app = make_app(tmp_path)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                response = await http.post("/v1/chat/completions", json=body("What is the refund policy?"))
        assert response.headers["x-aiestack-cache"] == expected


async def test_cache_off_in_settings_sends_no_header(tmp_path: Path) -> None:
    from aiestack.settings import CacheSettings

    app = make_app(tmp_path, cache=CacheSettings(enabled=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.post("/v1/chat/completions", json=body("hello"))
    assert response.status_code == 200 and "x-aiestack-cache" not in response.headers
