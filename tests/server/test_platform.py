"""/health, /ready, /metrics, stored exchanges, and the admin API on the real key service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aiestack.build import Stack
from aiestack.errors import StoreError

from .conftest import ADMIN, make_app, stack_of

pytestmark = pytest.mark.unit

Client = tuple[httpx.AsyncClient, FastAPI]
HELLO = {"model": "fake", "messages": [{"role": "user", "content": "hello world"}]}


async def test_health(asgi: Client) -> None:
    client, _ = asgi
    r = await client.get("/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_ready_when_store_answers(asgi: Client) -> None:
    client, _ = asgi
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"models": 2, "store": "ok"}}


async def test_not_ready_when_store_ping_fails(asgi: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    client, app = asgi

    def down() -> None:
        raise StoreError("The store at sqlite:///x cannot be reached.", hint="Check the disk.")

    monkeypatch.setattr(stack_of(app).store, "ping", down)
    r = await client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    assert "cannot be reached" in body["checks"]["store"]
    assert body["problems"] == ["the store is unreachable"]


async def test_metrics_after_a_request(asgi: Client) -> None:
    client, _ = asgi
    before = (await client.get("/metrics")).text
    assert 'gen_ai_server_request_duration_seconds_count{model="fake"' not in before
    assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'gen_ai_server_request_duration_seconds_count{model="fake",outcome="ok",provider="fake",route="none"} 1.0'
        in text
    )
    assert (
        'gen_ai_client_token_usage_count{model="fake",provider="fake",route="none",token_type="output"} 1.0'
        in text
    )
    assert "aiestack_gateway_overhead_seconds_count" in text


async def test_exchanges_are_stored_with_their_ids(asgi: Client) -> None:
    client, app = asgi
    ok = await client.post("/v1/chat/completions", json=HELLO)
    streamed = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
    missing = await client.post("/v1/chat/completions", json={**HELLO, "model": "nope"})
    assert "data: [DONE]" in streamed.text
    ids = [r.headers["x-aiestack-exchange-id"] for r in (ok, streamed, missing)]
    stack = stack_of(app)
    assert stack.writer.flush(timeout=10)
    records = {r.id: r for r in stack.store.list_exchanges(limit=10)}
    assert set(ids) <= set(records)
    assert (records[ids[0]].outcome, records[ids[0]].stream, records[ids[0]].output_tokens) == (
        "ok",
        False,
        2,
    )
    assert (records[ids[1]].outcome, records[ids[1]].stream) == ("ok", True)
    assert (records[ids[2]].outcome, records[ids[2]].error_type) == ("error", "ModelNotFound")


async def test_openapi_schema_describes_the_bodies(asgi: Client) -> None:
    client, _ = asgi
    schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "messages" in schema["components"]["schemas"]["ChatCompletionRequest"]["required"]
    assert "MessageIn" in schema["components"]["schemas"]


# ---------------------------------------------------------------------- the admin API, real key service


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Stack]]:
    app = make_app(tmp_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, stack_of(app)


async def test_key_lifecycle_through_the_admin_api(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, stack = keyed
    assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200  # no keys yet: open

    r = await client.post("/admin/keys", json={"tenant": "acme", "name": "ci", "rpm": 60}, headers=ADMIN)
    assert r.status_code == 201
    created = r.json()
    secret, key_id = created["key"], created["id"]
    assert secret.startswith("aie-") and "secret_hash" not in created
    assert (created["tenant"], created["rpm"], created["revoked"]) == ("acme", 60, False)

    assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 401  # a key exists now
    used = await client.post(
        "/v1/chat/completions", json=HELLO, headers={"authorization": f"Bearer {secret}"}
    )
    assert used.status_code == 200

    listing = (await client.get("/admin/keys", headers=ADMIN)).json()["data"]
    assert [k["id"] for k in listing] == [key_id]

    stack.writer.flush(timeout=10)
    usage = await client.get("/admin/usage", params={"by": "key,model", "since": "2000-01-01"}, headers=ADMIN)
    assert usage.status_code == 200
    rows = usage.json()["data"]
    assert {(row["key_id"], row["model"], row["requests"]) for row in rows} >= {(key_id, "fake", 1)}

    revoked = await client.delete(f"/admin/keys/{key_id}", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    after = await client.post(
        "/v1/chat/completions", json=HELLO, headers={"authorization": f"Bearer {secret}"}
    )
    assert after.status_code == 401 and "revoked" in after.json()["error"]["message"]
    assert (await client.delete("/admin/keys/key_nope", headers=ADMIN)).status_code == 404


async def test_admin_api_rejects_bad_input(keyed: tuple[httpx.AsyncClient, Stack]) -> None:
    client, _ = keyed
    r = await client.post("/admin/keys", json={"tenant": "acme", "rmp": 5}, headers=ADMIN)
    assert r.status_code == 400 and "rmp" in r.json()["error"]["message"]
    r = await client.get("/admin/usage", params={"by": "colour"}, headers=ADMIN)
    assert r.status_code == 400 and "colour" in r.json()["error"]["message"]
    r = await client.get("/admin/usage", params={"since": "last tuesday"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "since"
    r = await client.get("/admin/usage", params={"since": str(time.time())}, headers=ADMIN)
    assert r.status_code == 200
