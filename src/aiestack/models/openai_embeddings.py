"""Embeddings from any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI, ...).

Texts are sent in batches of ``batch_size`` (servers cap the inputs per request), up to
``concurrency`` batches at a time, and every answer is put back in input order by its ``index``
(the API does not promise to keep the order). The vector size is learned from the first answer
unless given; a given size that the upstream does not produce is an error, because vectors of
the wrong size would corrupt a vector index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from aiestack.errors import ProviderError
from aiestack.models import http

_PROBE_TEXT = "dimension probe"


class OpenAIEmbeddingModel:
    """An :class:`~aiestack.models.base.EmbeddingModel` over an OpenAI-compatible API.

    ``name`` is the upstream model id (it also keys the embedding cache). ``dim`` is 0 until
    known: pass it, call :meth:`ensure_dim`, or embed something first.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 64,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        api_key_env: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.name = model
        self.dim: int = dim or 0
        self.base_url = base_url.rstrip("/")
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._upstream = http.Upstream(
            provider=self.provider,
            base_url=self.base_url,
            timeout_s=timeout_s,
            api_key_env=api_key_env,
            secret=api_key,
        )
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = http.make_client(
            base_url=self.base_url,
            timeout_s=timeout_s,
            headers={**auth, **(headers or {})},
            max_connections=max_connections,
            transport=transport,
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in the order of ``texts``."""
        if not texts:
            return []
        batches = [texts[i : i + self._batch_size] for i in range(0, len(texts), self._batch_size)]
        gate = asyncio.Semaphore(self._concurrency)

        async def run(batch: Sequence[str]) -> list[list[float]]:
            async with gate:
                return await self._embed_batch(batch)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run(b)) for b in batches]
        except BaseExceptionGroup as failures:
            # The first failure says what went wrong; the other batches were cancelled with it.
            raise failures.exceptions[0] from None
        return [vector for task in tasks for vector in task.result()]

    async def ensure_dim(self) -> int:
        """The vector size, asking the upstream with one probe text if it is not yet known."""
        if not self.dim:
            await self.embed([_PROBE_TEXT])
        return self.dim

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _embed_batch(self, batch: Sequence[str]) -> list[list[float]]:
        answer = await http.post_json(
            self._client, "embeddings", {"model": self.name, "input": list(batch)}, self._upstream
        )
        vectors = self._vectors(answer, len(batch))
        size = len(vectors[0])
        if not self.dim:
            self.dim = size
        if any(len(v) != self.dim for v in vectors):
            raise ProviderError(
                f"{self.base_url} returned vectors of {size} dimensions for '{self.name}', expected {self.dim}.",
                provider=self.provider,
                hint="Set the embedding model's dim to what it produces, or drop it to learn the size.",
            )
        return vectors

    def _vectors(self, answer: Any, expected: int) -> list[list[float]]:
        """The answer's vectors in input order, checked to be one per input."""
        items = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(items, list) or len(items) != expected:
            got = len(items) if isinstance(items, list) else "no"
            raise ProviderError(
                f"{self.base_url} returned {got} embeddings for {expected} inputs.",
                provider=self.provider,
                hint="Check that base_url is an OpenAI-compatible API and the model is an embedding model.",
            )
        ordered = sorted(enumerate(items), key=lambda pair: int(pair[1].get("index", pair[0])))
        return [[float(x) for x in item["embedding"]] for _, item in ordered]
