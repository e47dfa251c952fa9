"""Fixtures for the server tests: a stack on the fake model, served in-process or by real uvicorn.

``live`` runs uvicorn in a thread on 127.0.0.1 and an ephemeral port, so the real OpenAI SDK
talks to it over a loopback socket; ``asgi`` drives the same app in-process through
``httpx.ASGITransport`` (no socket at all) for the fast unit tests.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from aiestack.build import Stack, build_stack
from aiestack.models.base import Health
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry
from aiestack.server.app import create_app
from aiestack.settings import GatewaySettings, Settings
from aiestack.types import ChatRequest, Delta, TokenLogprob, Usage

EMBED_MODEL = "fake-embed"


class FakeEmbeddings:
    """A deterministic :class:`~aiestack.models.base.EmbeddingModel`: unit vectors from a text hash."""

    name = EMBED_MODEL
    dim = 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [vector(t) for t in texts]

    async def aclose(self) -> None:
        return None


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[: FakeEmbeddings.dim]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


@dataclass
class LogprobModel:
    """A provider that returns logprobs with its tokens (the fake provider has none)."""

    provider: str = "lp"
    requests: list[ChatRequest] = field(default_factory=list)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        for token, lp in (("Hi", -0.25), ("!", -1.5)):
            yield Delta(text=token, logprobs=(TokenLogprob(token, lp, ((token, lp), ("Yo", -3.0))),))
        yield Delta(finish_reason="stop", usage=Usage(input_tokens=3, output_tokens=2))

    async def check(self, model: str) -> Health:
        return Health(ok=True)

    async def aclose(self) -> None:
        return None


#: The environment variable the test stacks read their admin key from, and that key.
ADMIN_KEY_ENV = "AIESTACK_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-secret"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Model ``fake``; keys looked up afresh on every request, so a revoke shows at once."""
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        gateway=GatewaySettings(admin_key_env=ADMIN_KEY_ENV, key_cache_ttl_s=0),
        **overrides,
    )


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN_KEY)


def set_embeddings(stack: Stack, model: FakeEmbeddings) -> None:
    """Give the stack an embedding model (the stack builds its configured one lazily, on first use)."""
    stack.resources.use(embeddings=model)


def make_app(tmp_path: Path, **kwargs: Any) -> FastAPI:
    """The app on a fresh stack: model ``fake`` (echo), ``lp`` (logprobs), embeddings ``fake-embed``."""

    def factory() -> Stack:
        stack = build_stack(settings(tmp_path), models=[ModelEntry("lp", LogprobModel(), "lp", local=True)])
        set_embeddings(stack, FakeEmbeddings())
        return stack

    return create_app(factory, **kwargs)


def stack_of(app: FastAPI) -> Stack:
    stack: Stack = app.state.stack
    return stack


def fake_of(app: FastAPI) -> FakeModel:
    provider = stack_of(app).models.resolve("fake").provider
    assert isinstance(provider, FakeModel)
    return provider


@dataclass
class Live:
    """A uvicorn server in a thread; ``base_url`` ends in ``/v1`` as OpenAI clients expect."""

    app: FastAPI
    url: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def stack(self) -> Stack:
        return stack_of(self.app)

    @property
    def fake(self) -> FakeModel:
        return fake_of(self.app)


@contextmanager
def serve(app: FastAPI) -> Iterator[Live]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    with serve(make_app(tmp_path)) as server:
        yield server


@pytest.fixture
async def asgi(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An in-process client on the app (lifespan run), and the app."""
    app = make_app(tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app
