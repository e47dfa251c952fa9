"""``POST /v1/feedback`` for an exchange not stored yet (issue #13, defect 7): 202 pending, then stored
once the exchange is written; the tenant check and the masking of feedback text still apply."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from aiestack.stores.base import ExchangeRecord
from aiestack.types import new_id

from .conftest import ADMIN, stack_of

pytestmark = pytest.mark.unit

Client = tuple[httpx.AsyncClient, FastAPI]


async def settled(app: FastAPI, exchange_id: str) -> None:
    """Wait (bounded) until the app's settler has left no pending item for ``exchange_id``."""
    store = stack_of(app).store
    for _ in range(300):
        if not any(i.exchange_id == exchange_id for i in store.list_pending_feedback()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pending feedback on {exchange_id} was never settled")


async def counted(app: FastAPI, outcome: str) -> float | None:
    """The settler's count of ``outcome``, once it has counted its round (bounded wait): the round
    removes the items in its thread and counts them after, so the store can be settled a moment
    before the metric is."""
    registry = stack_of(app).metrics.registry
    for _ in range(100):
        value = registry.get_sample_value("aiestack_pending_feedback_total", {"outcome": outcome})
        if value is not None:
            return value
        await asyncio.sleep(0.05)
    return None


def written(app: FastAPI, exchange_id: str, tenant: str) -> None:
    """What another process's write batch does: the exchange lands in the shared store."""
    stack_of(app).store.write_exchanges(
        [ExchangeRecord(id=exchange_id, created_at=1.0, model="fake", outcome="ok", tenant=tenant, route="r")]
    )


async def test_feedback_sent_before_the_exchange_is_written_is_stored_when_it_lands(asgi: Client) -> None:
    client, app = asgi
    _, key = stack_of(app).keys.create(tenant="acme")
    exchange_id = new_id("ex")  # answered by another process, still in its write batch
    response = await client.post(
        "/v1/feedback", headers={"authorization": f"Bearer {key}"},
        json={"exchange_id": "chatcmpl-" + exchange_id[3:], "thumbs": "up", "comment": "thanks"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["exchange_id"]) == ("pending", exchange_id)
    assert body["expires_at"] > 0 and body["id"].startswith("fb_")
    written(app, exchange_id, "acme")
    await settled(app, exchange_id)
    (record,) = stack_of(app).store.list_feedback(exchange_id=exchange_id)
    assert (record.id, record.tenant, record.route, record.thumbs, record.comment) == (body["id"], "acme", "r", 1, "thanks")
    metrics = stack_of(app).metrics.registry
    assert metrics.get_sample_value("aiestack_pending_feedback_total", {"outcome": "accepted"}) == 1
    assert await counted(app, "stored") == 1


async def test_pending_feedback_on_another_tenants_exchange_is_dropped(asgi: Client) -> None:
    client, app = asgi
    keys = stack_of(app).keys
    _, globex = keys.create(tenant="globex")
    exchange_id = new_id("ex")
    response = await client.post("/v1/feedback", headers={"authorization": f"Bearer {globex}"},
                                 json={"exchange_id": exchange_id, "thumbs": "down"})
    assert response.status_code == 202, response.text
    written(app, exchange_id, "acme")
    await settled(app, exchange_id)
    assert stack_of(app).store.list_feedback(exchange_id=exchange_id) == []
    assert await counted(app, "dropped_tenant") == 1


async def test_pending_feedback_text_is_masked_before_it_is_kept(asgi: Client) -> None:
    """Redaction (docs/security.md) applies to pending items: the store never holds the raw text."""
    client, app = asgi
    exchange_id = new_id("ex")
    email, secret = "jane.doe@example.com", "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    response = await client.post("/v1/feedback", headers=ADMIN, json={
        "exchange_id": exchange_id, "thumbs": "down", "comment": f"mail {email}", "correction": f"use {secret}",
        "tags": [email], "user": email,
    })
    assert response.status_code == 202, response.text
    store = stack_of(app).store
    (item,) = [i for i in store.list_pending_feedback() if i.exchange_id == exchange_id]
    assert email not in repr(item) and secret not in repr(item)
    assert (item.body["comment"], item.body["correction"]) == ("mail <EMAIL>", "use <OPENAI_KEY>")
    assert item.tenant is None  # the admin key: any tenant's exchange
    written(app, exchange_id, "default")
    await settled(app, exchange_id)
    (record,) = store.list_feedback(exchange_id=exchange_id)
    assert email not in repr(record) and secret not in repr(record) and record.user == "<EMAIL>"


async def test_a_malformed_unknown_id_is_still_a_404_and_bad_feedback_a_400(asgi: Client) -> None:
    client, _ = asgi
    assert (await client.post("/v1/feedback", headers=ADMIN, json={"exchange_id": "ex_nope", "thumbs": "up"})).status_code == 404
    response = await client.post("/v1/feedback", headers=ADMIN, json={"exchange_id": new_id("ex"), "rating": 9})
    assert response.status_code == 400
