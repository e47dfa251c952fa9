"""Bad requests get a 4xx in the OpenAI error shape with a message saying what to fix; never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiestack.build import Stack

from .conftest import ADMIN, make_app, stack_of

pytestmark = pytest.mark.unit

Client = tuple[httpx.AsyncClient, FastAPI]
CHAT = "/v1/chat/completions"
HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hello"}]}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


async def test_malformed_json(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(
        CHAT, content=b'{"model": "fake", "messages": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    error = error_of(r)
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize("raw", [b"", b"[]", b'"text"', b"42"])
async def test_body_that_is_not_an_object(asgi: Client, raw: bytes) -> None:
    client, _ = asgi
    r = await client.post(CHAT, content=raw)
    assert r.status_code == 400
    assert error_of(r)["code"] == "invalid_request"


async def test_wrong_types_name_the_field(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(
        CHAT, json={"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}
    )
    assert r.status_code == 400
    error = error_of(r)
    assert error["param"] == "temperature"
    assert "temperature" in error["message"] and "'hot'" in error["message"]


async def test_missing_fields(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(CHAT, json={"model": "fake"})
    assert r.status_code == 400
    assert "messages: this field is required" in error_of(r)["message"]


async def test_out_of_range_values(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(CHAT, json={**HELLO, "temperature": 5})
    assert r.status_code == 400
    assert "temperature" in error_of(r)["message"]


async def test_json_schema_format_without_schema(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(CHAT, json={**HELLO, "response_format": {"type": "json_schema"}})
    assert r.status_code == 400
    assert "json_schema.schema" in error_of(r)["message"]


async def test_unknown_model_is_404_with_exchange_id(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(CHAT, json={**HELLO, "model": "fak"})
    assert r.status_code == 404
    error = error_of(r)
    assert error["code"] == "model_not_found"
    assert "Did you mean 'fake'" in error["message"]
    assert r.headers["x-aiestack-exchange-id"].startswith("ex_")


@pytest.fixture
def small_app(tmp_path: Path) -> Iterator[FastAPI]:
    yield make_app(tmp_path, max_body_bytes=1000)


@pytest.fixture
async def small(small_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with small_app.router.lifespan_context(small_app):
        transport = httpx.ASGITransport(app=small_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_oversized_body_with_length_is_413(small: httpx.AsyncClient) -> None:
    big = {"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
    r = await small.post(CHAT, json=big)
    assert r.status_code == 413
    error = error_of(r)
    assert error["code"] == "request_too_large"
    assert "at most 1000 bytes" in error["message"]


async def test_oversized_chunked_body_is_413(small: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 200

    r = await small.post(CHAT, content=chunks())  # no Content-Length: counted as it arrives
    assert r.status_code == 413
    assert error_of(r)["code"] == "request_too_large"


async def test_body_under_the_limit_passes(small: httpx.AsyncClient) -> None:
    r = await small.post(CHAT, json=HELLO)
    assert r.status_code == 200


async def test_unknown_path_and_method(asgi: Client) -> None:
    client, _ = asgi
    r = await client.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = await client.get(CHAT)
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"


async def test_n_above_one_is_refused(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(CHAT, json={**HELLO, "n": 3})
    assert r.status_code == 400 and error_of(r)["param"] == "n"


async def test_too_many_stop_sequences(asgi: Client) -> None:
    client, _ = asgi
    r = await client.post(CHAT, json={**HELLO, "stop": ["a", "b", "c", "d", "e"]})
    assert r.status_code == 400 and "4 stop" in error_of(r)["message"]


# ---------------------------------------------------------------------- authentication


@dataclass
class Keyed:
    client: httpx.AsyncClient
    stack: Stack
    key_id: str
    secret: str
    revoked_secret: str


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Keyed]:
    """A stack with one live key of tenant ``acme`` and one revoked key: keys are now required."""
    app = make_app(tmp_path)
    async with app.router.lifespan_context(app):
        stack = stack_of(app)
        record, secret = stack.keys.create(tenant="acme", name="ci")
        old, revoked_secret = stack.keys.create(tenant="acme", name="old")
        stack.keys.revoke(old.id)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Keyed(client, stack, record.id, secret, revoked_secret)


@pytest.mark.parametrize("which", ["none", "wrong", "revoked"])
async def test_missing_bad_or_revoked_key_is_401(keyed: Keyed, which: str) -> None:
    headers = {
        "none": {},
        "wrong": {"authorization": "Bearer aie-not-a-key"},
        "revoked": {"authorization": f"Bearer {keyed.revoked_secret}"},
    }[which]
    for path, body in ((CHAT, HELLO), ("/v1/embeddings", {"model": "fake-embed", "input": "x"})):
        r = await keyed.client.post(path, json=body, headers=headers)
        assert r.status_code == 401
        error = error_of(r)
        assert error["type"] == "authentication_error"
        assert ("revoked" in error["message"]) == (which == "revoked")
    assert (await keyed.client.get("/v1/models", headers=headers)).status_code == 401


async def test_key_and_tenant_reach_the_exchange(keyed: Keyed) -> None:
    r = await keyed.client.post(CHAT, json=HELLO, headers={"authorization": f"Bearer {keyed.secret}"})
    assert r.status_code == 200
    assert keyed.stack.writer.flush(timeout=10)
    record = keyed.stack.store.get_exchange(r.headers["x-aiestack-exchange-id"])
    assert record is not None
    assert (record.key_id, record.tenant) == (keyed.key_id, "acme")


async def test_admin_routes_need_the_admin_key(keyed: Keyed) -> None:
    r = await keyed.client.get("/admin/keys", headers={"authorization": f"Bearer {keyed.secret}"})
    assert r.status_code == 403 and error_of(r)["code"] == "admin_required"
    assert (await keyed.client.get("/admin/keys")).status_code == 401
    assert (await keyed.client.get("/admin/keys", headers=ADMIN)).status_code == 200


async def test_without_keys_everyone_is_anonymous(asgi: Client) -> None:
    client, app = asgi
    r = await client.post(CHAT, json=HELLO, headers={"authorization": "Bearer sk-whatever"})
    assert r.status_code == 200
    stack = stack_of(app)
    assert stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(r.headers["x-aiestack-exchange-id"])
    assert record is not None and (record.key_id, record.tenant) == (None, "default")
    r = await client.get("/admin/keys")  # anonymous is not the admin
    assert r.status_code == 403 and error_of(r)["code"] == "admin_required"


async def test_hot_routes_skip_the_middleware_stack(asgi: Client) -> None:
    """Chat answers go through the front door (FastAPI's own stack is built only for other routes)."""
    client, app = asgi
    r = await client.post(CHAT, json=HELLO)
    assert r.status_code == 200
    assert app.middleware_stack is None
    assert (await client.get("/v1/models", headers=ADMIN)).status_code == 200
    assert app.middleware_stack is not None


async def test_hot_routes_go_through_the_stack_once_fastapi_telemetry_is_on(
    asgi: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a global OpenTelemetry provider, FastAPI's telemetry middleware sees the hot routes too."""
    client, app = asgi
    seen: list[str] = []
    monkeypatch.setattr(app, "_native_telemetry", _Telemetry(seen))
    monkeypatch.setattr(app, "_telemetry_checked", -1e9)  # due for a check
    r = await client.post(CHAT, json=HELLO)
    assert r.status_code == 200
    # asked by the front (then by FastAPI, which serves it through its telemetry)
    assert seen == ["enabled", "enabled", "/v1/chat/completions"]
    r = await client.post(CHAT, json=HELLO)  # on for good: only FastAPI asks again
    assert seen[3:] == ["enabled", "/v1/chat/completions"]


class _Telemetry:
    """Stands for FastAPI's native telemetry turned on: it records what it is asked and what it serves."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def enabled(self) -> bool:
        self.seen.append("enabled")
        return True

    async def __call__(self, *, app: Any, scope: Any, receive: Any, send: Any, legacy_otel: bool = False) -> None:
        self.seen.append(scope["path"])
        await app(scope, receive, send)


async def chat_with_a_bug(app: FastAPI) -> httpx.Response:
    """A chat request to ``app`` whose stack raises an unexpected exception."""
    async with app.router.lifespan_context(app):
        stack = stack_of(app)

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("a bug")

        stack.chat = broken
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(CHAT, json=HELLO)


async def test_a_bug_on_a_hot_route_is_a_500_in_the_openai_shape(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    r = await chat_with_a_bug(app)
    assert r.status_code == 500
    error = error_of(r)
    assert error["code"] == "internal_error" and "ZeroDivisionError" in error["message"]


async def test_middleware_added_after_create_app_sees_the_hot_routes_too(tmp_path: Path) -> None:
    """An embedding application's own middleware (here a header on every response) is not skipped."""

    class Stamp:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def stamped(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
                await send(message)

            await self.app(scope, receive, stamped)

    app = make_app(tmp_path)
    app.add_middleware(Stamp)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            r = await client.post(CHAT, json=HELLO)
            assert r.status_code == 200 and r.headers["x-stamp"] == "1"
            assert (await client.get("/health")).headers["x-stamp"] == "1"


async def test_an_exception_handler_added_after_create_app_answers_a_bug_on_a_hot_route(tmp_path: Path) -> None:
    from starlette.responses import PlainTextResponse

    app = make_app(tmp_path)

    async def mine(request: Any, exc: Exception) -> Any:
        return PlainTextResponse("mine", status_code=500)

    app.add_exception_handler(Exception, mine)
    r = await chat_with_a_bug(app)
    assert (r.status_code, r.text) == (500, "mine")
