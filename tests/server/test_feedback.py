"""``POST /v1/feedback``: stored records, the OpenAI error shape, and tenants kept apart."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiestack.build import build_stack
from aiestack.feedback import export_feedback
from aiestack.server.app import create_app

from .conftest import ADMIN, fake_of, settings, stack_of

pytestmark = pytest.mark.unit

Client = tuple[httpx.AsyncClient, FastAPI]


async def chat(client: httpx.AsyncClient, text: str = "hello", headers: dict[str, str] | None = None) -> httpx.Response:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": text}]},
        headers=headers or {},
    )
    assert response.status_code == 200, response.text
    return response


async def feedback(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return await client.post("/v1/feedback", json=body, headers=headers or {})


async def test_feedback_is_stored_and_returned(asgi: Client) -> None:
    client, app = asgi
    exchange_id = (await chat(client)).headers["x-aiestack-exchange-id"]
    response = await feedback(client, exchange_id=exchange_id, thumbs="up", comment="  great  ", tags=["fast", "fast"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert {k: body[k] for k in ("exchange_id", "kind", "source", "tenant", "thumbs", "value", "comment", "tags")} == {
        "exchange_id": exchange_id,
        "kind": "thumbs",
        "source": "explicit",
        "tenant": "default",
        "thumbs": 1,
        "value": 1.0,
        "comment": "great",
        "tags": ["fast"],
    }
    stored = stack_of(app).store.list_feedback(exchange_id=exchange_id)
    assert [(f.id, f.kind, f.value) for f in stored] == [(body["id"], "thumbs", 1.0)]


async def test_the_response_id_names_the_exchange_too(asgi: Client) -> None:
    client, _ = asgi
    completion = (await chat(client)).json()
    response = await feedback(client, exchange_id=completion["id"], rating=2, correction="The answer is 4.")
    assert response.status_code == 201, response.text
    assert response.json()["exchange_id"].startswith("ex_")
    assert (response.json()["kind"], response.json()["value"], response.json()["correction"]) == ("rating", 0.25, "The answer is 4.")


async def test_an_unknown_exchange_is_a_404_in_the_openai_shape(asgi: Client) -> None:
    client, _ = asgi
    response = await feedback(client, exchange_id="ex_doesnotexist", thumbs="down")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
    assert "ex_doesnotexist" in error["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "says nothing"),
        ({"rating": 6}, "rating"),
        ({"score": 1.5}, "score"),
        ({"thumbs": "sideways"}, "thumbs"),
        ({"thumbs": "up", "stars": 5}, "stars"),
    ],
)
async def test_invalid_feedback_is_a_400_saying_what_is_wrong(asgi: Client, body: dict[str, Any], needle: str) -> None:
    client, _ = asgi
    exchange_id = (await chat(client)).headers["x-aiestack-exchange-id"]
    response = await feedback(client, exchange_id=exchange_id, **body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]


async def test_a_key_sees_only_its_own_tenants_exchanges(asgi: Client) -> None:
    client, app = asgi
    keys = stack_of(app).keys
    _, acme = keys.create(tenant="acme")
    _, globex = keys.create(tenant="globex")
    as_acme = {"authorization": f"Bearer {acme}"}
    as_globex = {"authorization": f"Bearer {globex}"}
    exchange_id = (await chat(client, headers=as_acme)).headers["x-aiestack-exchange-id"]
    # Another tenant's exchange is answered like one not stored yet (ids cannot be probed); never stored.
    other = await feedback(client, as_globex, exchange_id=exchange_id, thumbs="down")
    assert other.status_code == 202 and other.json()["status"] == "pending"
    assert (await feedback(client, exchange_id=exchange_id, thumbs="down")).status_code == 401  # no key at all
    mine = await feedback(client, as_acme, exchange_id=exchange_id, thumbs="down")
    assert mine.status_code == 201 and mine.json()["tenant"] == "acme" and mine.json()["value"] == 0.0
    assert (await feedback(client, ADMIN, exchange_id=exchange_id, score=0.9)).status_code == 201


async def test_feedback_given_over_http_becomes_a_finetuning_line(tmp_path: Path) -> None:
    """End to end: content tracing on, an answer, a correction, then the SFT and preference exports."""
    app = create_app(lambda: build_stack(settings(tmp_path, tracing={"content": True})))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            fake_of(app).enqueue(["Lyon."])
            exchange_id = (await chat(client, "Capital of France?")).headers["x-aiestack-exchange-id"]
            response = await feedback(client, exchange_id=exchange_id, thumbs="down", correction="Paris.")
            assert response.status_code == 201, response.text
            store = stack_of(app).store
            sft, preference = io.StringIO(), io.StringIO()
            export_feedback(store, store, sft, format="sft")
            export_feedback(store, store, preference, format="preference")
    line = json.loads(sft.getvalue())
    assert line["messages"][-2:] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    pair = json.loads(preference.getvalue())
    assert (pair["chosen"][0]["content"], pair["rejected"][0]["content"]) == ("Paris.", "Lyon.")


def test_the_feedback_body_is_in_the_openapi_schema(tmp_path: Path) -> None:
    schema = create_app(lambda: build_stack(settings(tmp_path))).openapi()
    body = schema["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = body["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][name]["properties"]) >= {"exchange_id", "thumbs", "rating", "correction"}


async def test_text_in_feedback_is_stored_redacted(asgi: Client) -> None:
    """Comments, corrections, tags and user ids are what people write: PII and secrets are masked."""
    client, app = asgi
    exchange_id = (await chat(client)).headers["x-aiestack-exchange-id"]
    email, key = "jane.doe@example.com", "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4"
    response = await feedback(client, exchange_id=exchange_id, thumbs="down", comment=f"mail {email}",
                              correction=f"use {key}", tags=[email], user=email)
    assert response.status_code == 201, response.text
    (stored,) = stack_of(app).store.list_feedback(exchange_id=exchange_id)
    assert email not in repr(stored) and key not in repr(stored)
    assert stored.comment == "mail <EMAIL>" and stored.correction == "use <OPENAI_KEY>"
    assert email not in response.text
