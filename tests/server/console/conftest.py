"""Fixtures for the console tests: a stack on the fake model with content tracing, and a logged-in client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiestack.build import Stack, build_stack
from aiestack.server.app import create_app
from aiestack.settings import TracingSettings

from ..conftest import ADMIN, ADMIN_KEY, settings

ROUTE = "support"


def console_settings(tmp_path: Path, **overrides: Any) -> Any:
    """Models ``fake`` and ``fake2``, a route ``support`` over them, content tracing on."""
    options: dict[str, Any] = {
        "tracing": TracingSettings(content=True),
        "routes": {ROUTE: {"deployments": [{"model": "fake2"}]}},
    }
    options.update(overrides)
    s = settings(tmp_path, **options)
    s.models["fake2"] = {"provider": "fake"}
    return s


def console_app(tmp_path: Path, **overrides: Any) -> FastAPI:
    return create_app(lambda: build_stack(console_settings(tmp_path, **overrides)))


_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "the page carries no CSRF token"
    return match.group(1)


@dataclass
class Console:
    client: httpx.AsyncClient
    app: FastAPI
    csrf: str

    @property
    def stack(self) -> Stack:
        stack: Stack = self.app.state.stack
        return stack

    async def chat(self, text: str, *, model: str = "fake", **body: Any) -> httpx.Response:
        """A request to /v1 with the admin key (not the session), stored before returning."""
        r = await self.client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": text}], **body},
            headers=ADMIN,
        )
        assert self.stack.writer.flush(timeout=10)
        return r


async def login(client: httpx.AsyncClient) -> str:
    """Log ``client`` in with the admin key; the CSRF token of its session."""
    r = await client.post("/login", data={"key": ADMIN_KEY, "next": "/exchanges"})
    assert r.status_code == 303, r.text
    page = await client.get("/exchanges")
    assert page.status_code == 200
    return csrf_of(page.text)


@pytest.fixture
async def anonymous(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = console_app(tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app


@pytest.fixture
async def console(anonymous: tuple[httpx.AsyncClient, FastAPI]) -> Console:
    client, app = anonymous
    return Console(client, app, await login(client))
