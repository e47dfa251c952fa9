"""Dynamic in-context learning (AI Engineering, ch. 5 and 10): a route that shows the model the past
examples most like the request.

``[routes.NAME.dicl]`` names a chat dataset — typically the route's own exchanges with positive
feedback (``aiestack datasets build support-good --route support --min-feedback 0.75``) — and the
:class:`Dicl` stage puts its ``k`` rows most similar to the request's last user message (cosine of
the stack's embeddings, at least ``min_similarity``) before the conversation, as user/assistant turns
after the system prompt: the most similar last, next to the question. Optimisation without training:
a better dataset version makes a better route, and the eval gate says whether it did.

    [routes.support.dicl]
    dataset = "support-good"        # NAME (its newest version, re-read every refresh_s) or NAME@VERSION
    k = 3                           # examples per request
    min_similarity = 0.3            # leave out examples less similar than this
    refresh_s = 60                  # how often a NAME without a version looks for a newer one
    max_example_chars = 2000        # an example longer than this is left out

The dataset's prompts are embedded once per version (in batches, off the event loop's thread where
the model runs) and kept in memory; a request costs one embedding and a matrix-vector product. The
exchange records ``aiestack.dicl.dataset`` (the version used) and ``aiestack.dicl.examples`` (the
row ids shown), so an exchange's answer can be traced to the examples it saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiestack.datasets.rows import answers, prompt_messages
from aiestack.errors import AiestackError, ConfigError
from aiestack.models.base import EmbeddingModel
from aiestack.pipeline import Next
from aiestack.settings import config_error
from aiestack.stores.datasets import DatasetStore, DatasetVersion
from aiestack.types import Exchange, Message, last_user_text

DICL_DATASET_ATTR = "aiestack.dicl.dataset"
DICL_EXAMPLES_ATTR = "aiestack.dicl.examples"
_EMBED_BATCH = 256


class DiclUnavailable(AiestackError):
    """The route's example dataset does not exist (or is not a chat dataset): the operator must build it."""

    code = "dicl_unavailable"


class DiclConfig(BaseModel):
    """A ``[routes.NAME.dicl]`` table."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="A chat dataset: NAME (its newest version) or NAME@VERSION.")
    k: int = Field(default=3, ge=1, le=16, description="Examples per request.")
    min_similarity: float = Field(default=0.3, ge=-1, le=1, description="Leave out examples less similar than this (cosine).")
    refresh_s: float = Field(default=60.0, ge=0, description="How often NAME without a version looks for a newer version.")
    max_example_chars: int = Field(default=2000, ge=1, description="Leave out examples longer than this.")


@dataclass(frozen=True, slots=True)
class DiclPlan:
    """A route's DICL options, compiled once (the route plan's part)."""

    name: str
    version: int | None
    k: int
    min_similarity: float
    refresh_s: float
    max_example_chars: int


def compile_dicl(table: Mapping[str, Any], *, key: str) -> DiclPlan:
    try:
        cfg = DiclConfig.model_validate(dict(table))
    except ValidationError as exc:
        raise config_error(exc, DiclConfig, source="aiestack.toml", prefix=key) from None
    name, _, number = cfg.dataset.partition("@")
    if number and not number.isdigit():
        raise ConfigError(f"{key}.dataset", f"{cfg.dataset!r}: a version is a number", f"write {name}@2, or {name} for the newest")
    return DiclPlan(name, int(number) if number else None, cfg.k, cfg.min_similarity, cfg.refresh_s, cfg.max_example_chars)


def build_dicl_routes(routes: Mapping[str, Any]) -> dict[str, DiclPlan]:
    """The DICL plan of every route with a ``dicl`` table (``routes`` maps names to RouteConfigs)."""
    return {name: compile_dicl(cfg.dicl, key=f"routes.{name}.dicl") for name, cfg in routes.items() if getattr(cfg, "dicl", None)}


@dataclass
class _Pool:
    version: DatasetVersion
    ids: list[str]
    turns: list[tuple[str, str]]  # (the example's user text, its answer)
    vectors: np.ndarray
    checked_at: float


class Dicl:
    """Puts a route's most similar past examples into the request (see the module docstring)."""

    name = "dicl"

    def __init__(self, store: DatasetStore, embeddings: Callable[[], EmbeddingModel], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._embeddings = embeddings
        self._clock = clock
        self._pools: dict[tuple[str, int | None], _Pool] = {}
        self._locks: dict[tuple[str, int | None], asyncio.Lock] = {}

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        plan = ex.plan.part(DiclPlan) if ex.plan is not None else None
        query = last_user_text(ex.request.messages)
        if plan is None or not query:
            return await call_next(ex)
        pool = await self._pool(plan)
        chosen = await self._choose(pool, plan, query) if pool.ids else []
        attributes = {**ex.attributes, DICL_DATASET_ATTR: pool.version.ref, DICL_EXAMPLES_ATTR: [pool.ids[i] for i in chosen]}
        if not chosen:
            return await call_next(dataclasses.replace(ex, attributes=attributes))
        shots: list[Message] = []
        for i in reversed(chosen):  # the most similar last, next to the question
            user, answer = pool.turns[i]
            shots += [Message(role="user", content=user), Message(role="assistant", content=answer)]
        messages = ex.request.messages
        cut = next((n for n, m in enumerate(messages) if m.role != "system"), len(messages))
        request = dataclasses.replace(ex.request, messages=(*messages[:cut], *shots, *messages[cut:]))
        return await call_next(dataclasses.replace(ex, request=request, attributes=attributes))

    async def _choose(self, pool: _Pool, plan: DiclPlan, query: str) -> list[int]:
        (vector,) = await self._embeddings().embed([query])
        q = np.asarray(vector, dtype=np.float32)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        sims = pool.vectors @ q
        order = np.argsort(-sims)[: plan.k]
        return [int(i) for i in order if sims[i] >= plan.min_similarity]

    async def _pool(self, plan: DiclPlan) -> _Pool:
        key = (plan.name, plan.version)
        pool = self._pools.get(key)
        now = self._clock()
        if pool is not None and (plan.version is not None or now - pool.checked_at < plan.refresh_s):
            return pool
        async with self._locks.setdefault(key, asyncio.Lock()):
            pool = self._pools.get(key)
            if pool is not None and (plan.version is not None or self._clock() - pool.checked_at < plan.refresh_s):
                return pool
            version = await asyncio.to_thread(self._store.get_dataset, plan.name, plan.version)
            if version is None or version.kind != "chat":
                ref = plan.name + (f"@{plan.version}" if plan.version is not None else "")
                what = "does not exist" if version is None else f"holds {version.kind} rows, not chat rows"
                raise DiclUnavailable(f"The examples dataset {ref!r} of this route {what}.",
                                      hint=f"build it: `aiestack datasets build {plan.name} --route ROUTE --min-feedback 0.75`")
            if pool is not None and pool.version.content_hash == version.content_hash:
                pool.checked_at = self._clock()
                return pool
            pool = await self._load(version, plan)
            self._pools[key] = pool
            return pool

    async def _load(self, version: DatasetVersion, plan: DiclPlan) -> _Pool:
        from aiestack.datasets.export import iter_rows

        rows = await asyncio.to_thread(lambda: list(iter_rows(self._store, version)))
        ids, turns = [], []
        for row in rows:
            user = "\n".join(str(m.get("content") or "") for m in prompt_messages(row.data) if m.get("role") == "user")
            answer = answers(row.data)[0]
            if user and answer and len(user) + len(answer) <= plan.max_example_chars:
                ids.append(row.id)
                turns.append((user, answer))
        model = self._embeddings()
        vectors = [v for i in range(0, len(turns), _EMBED_BATCH) for v in await model.embed([u for u, _ in turns[i : i + _EMBED_BATCH]])]
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(turns), -1) if turns else np.empty((0, 1), dtype=np.float32)
        if len(matrix):
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return _Pool(version, ids, turns, matrix, self._clock())
