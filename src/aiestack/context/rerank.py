"""Rerankers: a second, slower and better judgement of the retrieved candidates.

A :class:`Reranker` takes the query and the candidate hits and returns them re-scored, best first.
Two come built in:

- :class:`LLMReranker` — pointwise relevance by any chat model: one short call per candidate asking
  for a 0–10 score (a yes/no answer counts as 10/0). The reply is parsed leniently (the first
  number, a fraction like ``7/10``, or yes/no); a reply with neither keeps a neutral 5, so a model
  that rambles never throws a good hit out. Calls run concurrently, ``concurrency`` at a time.
- :class:`CrossEncoderReranker` — a sentence-transformers ``CrossEncoder`` loaded from a local
  directory or the local Hugging Face cache only (never downloaded at run time).

Both keep the original order among equal scores.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aiestack.errors import ProviderUnavailable
from aiestack.models.base import ChatModel
from aiestack.types import ChatRequest, Hit, Message, Params

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

LLM_RERANK_PROMPT = (
    "Rate how relevant the passage is to the query, from 0 (unrelated) to 10 (answers it fully).\n\n"
    "Query: {query}\n\n"
    "Passage: {passage}\n\n"
    "Reply with one number from 0 to 10.\n"
    "Relevance score:"
)
NEUTRAL_SCORE = 5.0
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+))?")
_YES = re.compile(r"^\W*(yes|relevant)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|not relevant|irrelevant)\b", re.IGNORECASE)


@runtime_checkable
class Reranker(Protocol):
    """Re-scores candidate hits for a query; returns them best first."""

    name: str

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]: ...


def parse_relevance(reply: str) -> float | None:
    """A 0–10 score from a model's reply: a number (``8``, ``7.5``, ``7/10``, ``3 out of 5``) or yes/no.

    Returns ``None`` when the reply holds neither. Numbers are clamped to 0–10; ``x/n`` and
    ``x out of n`` are rescaled to 10.
    """
    text = reply.strip()
    if _NO.match(text):
        return 0.0
    if _YES.match(text):
        return 10.0
    m = _NUMBER.search(text)
    if m is None:
        return None
    value = float(m.group(1))
    if m.group(2):
        scale = float(m.group(2))
        value = value * 10.0 / scale if scale > 0 else value
    return max(0.0, min(10.0, value))


def _reordered(hits: Sequence[Hit], scores: Sequence[float], retriever: str) -> list[Hit]:
    order = sorted(range(len(hits)), key=lambda i: -scores[i])  # sorted() is stable: ties keep order
    return [Hit(chunk=hits[i].chunk, score=float(scores[i]), retriever=retriever) for i in order]


class LLMReranker:
    """Pointwise relevance by a chat model (``upstream`` is the name the provider is asked for)."""

    name = "llm"

    def __init__(
        self,
        model: ChatModel,
        upstream: str,
        *,
        prompt: str = LLM_RERANK_PROMPT,
        concurrency: int = 4,
        max_passage_chars: int = 2000,
    ) -> None:
        if "{query}" not in prompt or "{passage}" not in prompt:
            raise ValueError("the rerank prompt must contain {query} and {passage}")
        self._model = model
        self._upstream = upstream
        self._prompt = prompt
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._max_chars = max_passage_chars

    async def score(self, query: str, passage: str) -> float | None:
        """The model's 0–10 relevance of ``passage`` to ``query`` (``None`` if it gave none)."""
        text = self._prompt.replace("{query}", query).replace("{passage}", passage[: self._max_chars])
        request = ChatRequest(
            model=self._upstream,
            messages=(Message(role="user", content=text),),
            params=Params(temperature=0.0, max_tokens=8),
        )
        async with self._limit:
            parts = [d.text async for d in self._model.stream(request)]
        return parse_relevance("".join(parts))

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        if not hits:
            return []
        raw = await asyncio.gather(*(self.score(query, h.chunk.text) for h in hits))
        scores = [NEUTRAL_SCORE if s is None else s for s in raw]
        return _reordered(hits, [s / 10.0 for s in scores], "rerank:llm")


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from a local directory (or the local HF cache), on one thread.

    The weights load on first use. ``model`` is a path to a model directory, or a model name already
    present in the local Hugging Face cache; nothing is downloaded.
    """

    name = "cross-encoder"

    def __init__(self, model: str, *, batch_size: int = 32, max_length: int = 512) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_length = max_length
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiestack-rerank")
        self._encoder: CrossEncoder | None = None

    def _load(self) -> CrossEncoder:
        if self._encoder is not None:
            return self._encoder
        try:
            from sentence_transformers import CrossEncoder
        except ImportError:
            raise ProviderUnavailable(
                "sentence-transformers is not installed, so a CrossEncoder reranker cannot run.",
                provider="cross-encoder",
                hint="Install it with: pip install 'aiestack[local]'.",
            ) from None
        kwargs: dict[str, Any] = {"max_length": self.max_length, "device": "cpu"}
        if not Path(self.model).expanduser().is_dir():
            kwargs["local_files_only"] = True
        try:
            self._encoder = CrossEncoder(str(Path(self.model).expanduser()), **kwargs)
        except (OSError, ValueError) as exc:
            raise ProviderUnavailable(
                f"The cross-encoder {self.model!r} could not be loaded ({exc}).",
                provider="cross-encoder",
                hint="Point rerank_model at a local sentence-transformers CrossEncoder directory "
                "(aiestack never downloads weights at run time).",
            ) from None
        return self._encoder

    def _predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        scores = self._load().predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in scores]

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        if not hits:
            return []
        pairs = [(query, h.chunk.text) for h in hits]
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._executor, self._predict, pairs)
        return _reordered(hits, scores, "rerank:cross-encoder")

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
