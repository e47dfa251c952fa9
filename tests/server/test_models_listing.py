"""``/v1/models`` lists the chat models, the routes and the embedding model, matched exactly."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from aiestack.server.routes_models import EMBEDDINGS_OWNER

Client = tuple[httpx.AsyncClient, FastAPI]


@pytest.mark.unit
async def test_the_embedding_model_is_listed_and_can_be_named(asgi: Client) -> None:
    client, _ = asgi
    listing = (await client.get("/v1/models")).json()["data"]
    owners = {entry["id"]: entry["owned_by"] for entry in listing}
    assert owners["fake-embed"] == EMBEDDINGS_OWNER
    assert "fake" in owners and owners["fake"] != EMBEDDINGS_OWNER
    one = await client.get("/v1/models/fake-embed")
    assert one.status_code == 200 and one.json()["owned_by"] == EMBEDDINGS_OWNER
    embedded = await client.post("/v1/embeddings", json={"model": "fake-embed", "input": "hello"})
    assert embedded.status_code == 200, embedded.text


@pytest.mark.unit
async def test_model_names_match_exactly_case_included(asgi: Client) -> None:
    client, _ = asgi
    wrong_case = await client.get("/v1/models/FAKE-EMBED")
    assert wrong_case.status_code == 404
    assert "fake-embed" in wrong_case.json()["error"]["message"] + str(wrong_case.json()["error"].get("hint", ""))
    chat = await client.post("/v1/chat/completions", json={"model": "FAKE", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 404
