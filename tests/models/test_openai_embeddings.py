"""The OpenAI-compatible embeddings provider against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aiestack.errors import ProviderConnectionError, ProviderError, ProviderRateLimited
from aiestack.models.base import EmbeddingModel
from aiestack.models.openai_embeddings import OpenAIEmbeddingModel

pytestmark = pytest.mark.unit

BASE = "http://embed.test/v1"


def vector(text: str, dim: int = 3) -> list[float]:
    """A deterministic vector that identifies its text: [len, first char code, dim-2 zeros]."""
    return [float(len(text)), float(ord(text[0]) if text else 0), *([0.0] * (dim - 2))]


class EmbeddingServer:
    """Answers /embeddings with vectors in *reversed* order (as the API allows), remembering inputs."""

    def __init__(self, dim: int = 3, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.dim = dim
        self.status = status
        self.headers = headers or {}
        self.inputs: list[list[str]] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        self.inputs.append(body["input"])
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "slow down"}}, headers=self.headers)
        data = [
            {"object": "embedding", "index": i, "embedding": vector(t, self.dim)}
            for i, t in enumerate(body["input"])
        ]
        return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": body["model"]})


def model(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> OpenAIEmbeddingModel:
    return OpenAIEmbeddingModel("emb-1", base_url=BASE, transport=httpx.MockTransport(handler), **kwargs)


async def test_batches_preserve_input_order_and_learn_dim() -> None:
    server = EmbeddingServer(dim=4)
    emb = model(server, batch_size=2, api_key="k")
    assert isinstance(emb, EmbeddingModel)
    assert emb.dim == 0
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]

    vectors = await emb.embed(texts)

    assert vectors == [vector(t, 4) for t in texts]
    assert sorted(server.inputs) == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert emb.dim == 4
    sent = server.requests[0]
    assert sent.url == httpx.URL(f"{BASE}/embeddings")
    assert sent.headers["authorization"] == "Bearer k"
    assert json.loads(sent.content)["model"] == "emb-1"
    await emb.aclose()


async def test_sequential_batches_with_concurrency_one() -> None:
    server = EmbeddingServer()
    emb = model(server, batch_size=3, concurrency=1)
    texts = [f"t{i}" * (i + 1) for i in range(7)]
    assert await emb.embed(texts) == [vector(t) for t in texts]
    assert server.inputs == [texts[0:3], texts[3:6], texts[6:7]]


async def test_empty_input_makes_no_request() -> None:
    server = EmbeddingServer()
    assert await model(server).embed([]) == []
    assert server.requests == []


async def test_ensure_dim_probes_once() -> None:
    server = EmbeddingServer(dim=5)
    emb = model(server)
    assert await emb.ensure_dim() == 5
    assert await emb.ensure_dim() == 5
    assert len(server.requests) == 1
    known = model(EmbeddingServer(), dim=3)
    assert await known.ensure_dim() == 3


async def test_a_given_dim_that_the_upstream_does_not_produce_is_an_error() -> None:
    emb = model(EmbeddingServer(dim=3), dim=384)
    with pytest.raises(ProviderError, match="expected 384"):
        await emb.embed(["x"])


async def test_wrong_number_of_vectors_is_an_error() -> None:
    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"index": 0, "embedding": [1.0]}]})

    with pytest.raises(ProviderError, match="returned 1 embeddings for 2 inputs"):
        await model(short).embed(["a", "b"])


async def test_http_errors_map_like_chat() -> None:
    emb = model(EmbeddingServer(status=429, headers={"retry-after": "2"}), batch_size=1)
    with pytest.raises(ProviderRateLimited) as info:
        await emb.embed(["a", "b", "c"])
    assert info.value.retry_after == 2.0
    assert "slow down" in str(info.value)

    def refuse(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(ProviderConnectionError, match="Is the server"):
        await model(refuse).embed(["a"])


async def test_non_json_answer_is_an_error() -> None:
    with pytest.raises(ProviderError, match="not JSON"):
        await model(lambda _: httpx.Response(200, content=b"<html>hello</html>")).embed(["a"])


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OpenAIEmbeddingModel("m", batch_size=0)
