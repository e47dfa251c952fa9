"""Semantic routing: a request naming the router model (``auto``) goes to the route its meaning matches.

Routes declare example utterances and, optionally, a threshold::

    [router]
    model = "auto"              # requests naming this model are routed by meaning
    default_route = "chat"      # when no route is close enough (empty: default_model)
    method = "max"              # score a route by its closest example ("centroid": their mean)

    [routes.billing]
    deployments = ["gpt-4o-mini"]
    examples = ["Why was I charged twice?", "I need a copy of my invoice"]
    threshold = 0.45

The last user turn is embedded and compared (cosine) with each route's examples; the best-scoring
route whose score reaches its threshold wins, else the default route. ``[router] embedder`` picks the
embedder: the ``[embeddings]`` model (default) or the packaged static one the cache uses (about
0.25 ms a request instead of milliseconds; bench/routing.py has both, with their accuracies). The choice, its score and
whether it matched are recorded on the exchange. ``aiestack routes fit FILE`` tunes the thresholds
on labelled utterances (:func:`fit_thresholds`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from aiestack.errors import ConfigError, InvalidRequest
from aiestack.gateway.routes import RouteTable
from aiestack.models.base import EmbeddingModel, LazyEmbeddings
from aiestack.pipeline import Next
from aiestack.plans import RoutePlans
from aiestack.settings import RouterSettings
from aiestack.types import Exchange, last_user_text

#: Exchange attributes set by the Route stage.
ROUTER_ROUTE = "aiestack.router.route"
ROUTER_SCORE = "aiestack.router.score"
ROUTER_MATCHED = "aiestack.router.matched"

Method = Literal["max", "centroid"]

#: Thresholds tried by :func:`fit_thresholds`: 0.05 to 0.95 in steps of 0.01.
GRID: tuple[float, ...] = tuple(round(0.05 + 0.01 * step, 2) for step in range(91))


@dataclass(frozen=True, slots=True)
class RouteChoice:
    route: str
    matched: bool  # False: no route reached its threshold, the default was taken
    score: float | None  # the best route's score
    scores: Mapping[str, float]


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def choose(scores: Mapping[str, float], thresholds: Mapping[str, float], default_route: str) -> RouteChoice:
    """The best route whose score reaches its threshold, else ``default_route``."""
    best_route, best = None, None
    for route, score in scores.items():
        if score >= thresholds[route] and (best is None or score > best):
            best_route, best = route, score
    top = max(scores.values(), default=None)
    if best_route is None:
        return RouteChoice(default_route, False, top, scores)
    return RouteChoice(best_route, True, best, scores)


class SemanticRouter:
    """Scores a text against each route's examples; embeds the examples once, on first use."""

    def __init__(
        self,
        examples: Mapping[str, Sequence[str]],
        embeddings: EmbeddingModel | Callable[[], EmbeddingModel],
        *,
        default_route: str,
        thresholds: Mapping[str, float | None] | None = None,
        default_threshold: float = 0.5,
        method: Method = "max",
    ) -> None:
        self.examples = {route: list(texts) for route, texts in examples.items() if texts}
        self._embeddings = LazyEmbeddings(embeddings)
        self.default_route = default_route
        given = thresholds or {}
        self.thresholds = {
            route: t if (t := given.get(route)) is not None else default_threshold for route in self.examples
        }
        self.method: Method = method
        self._matrices: dict[str, np.ndarray] | None = None
        self._lock = asyncio.Lock()

    @property
    def embeddings(self) -> EmbeddingModel:
        return self._embeddings.get()

    async def warm(self) -> None:
        """Load a ready-made embedder (the static one) and embed the examples now, not on a first request.

        An embedder built on first use (the shared ``[embeddings]`` model) is left to load lazily."""
        model = self._embeddings.ready
        if model is None:
            return
        load = getattr(model, "load", None)
        if load is not None:
            await load()
        await self._ready()

    async def _ready(self) -> dict[str, np.ndarray]:
        if self._matrices is not None:
            return self._matrices
        async with self._lock:
            if self._matrices is None:
                routes = list(self.examples)
                texts = [t for r in routes for t in self.examples[r]]
                vectors = _unit(np.asarray(await self.embeddings.embed(texts), dtype=np.float32))
                matrices: dict[str, np.ndarray] = {}
                start = 0
                for route in routes:
                    block = vectors[start : start + len(self.examples[route])]
                    start += len(self.examples[route])
                    matrices[route] = (
                        _unit(block.mean(axis=0, keepdims=True)) if self.method == "centroid" else block
                    )
                self._matrices = matrices
        return self._matrices

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(np.asarray(await self.embeddings.embed(list(texts)), dtype=np.float32))

    async def scores(self, text: str) -> dict[str, float]:
        (vector,) = await self.embed([text])
        return self.scores_of(vector, await self._ready())

    def scores_of(self, vector: np.ndarray, matrices: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {route: float(np.max(m @ vector)) for route, m in matrices.items()}

    async def batch_scores(self, texts: Sequence[str], *, leave_out: bool = False) -> list[dict[str, float]]:
        """Scores of many texts; ``leave_out`` ignores an example identical to the text (for fitting on examples)."""
        matrices = await self._ready()
        vectors = await self.embed(texts)
        out = []
        for text, vector in zip(texts, vectors, strict=True):
            scores = {}
            for route, m in matrices.items():
                sims = m @ vector
                if leave_out and self.method == "max" and text in self.examples[route]:
                    sims = np.delete(sims, self.examples[route].index(text))
                scores[route] = float(np.max(sims)) if sims.size else -1.0
            out.append(scores)
        return out

    async def route(self, text: str) -> RouteChoice:
        return choose(await self.scores(text), self.thresholds, self.default_route)


def accuracy(
    scores: Sequence[Mapping[str, float]], labels: Sequence[str | None], thresholds: Mapping[str, float]
) -> float:
    """Share of texts routed to their label (``None``: to no route, i.e. the default)."""
    if not scores:
        return 0.0
    right = 0
    for s, label in zip(scores, labels, strict=True):
        choice = choose(s, thresholds, "")
        predicted = choice.route if choice.matched else None
        right += predicted == label
    return right / len(scores)


def fit_thresholds(
    scores: Sequence[Mapping[str, float]],
    labels: Sequence[str | None],
    routes: Collection[str],
    *,
    grid: Sequence[float] = GRID,
    passes: int = 3,
    min_gain: float = 0.02,
) -> dict[str, float]:
    """Per-route thresholds maximising routing accuracy on labelled texts (coordinate ascent).

    Starts from the best single threshold for every route, then moves one route's threshold at
    a time to its best grid value, a few passes over all routes. A move must fix at least
    ``min_gain`` of the texts: on a small labelled set, per-route thresholds otherwise fit its
    noise (bench/routing.py measures one threshold beating overfitted per-route ones on held-out data).
    """
    routes = list(routes)

    def uniform(t: float) -> dict[str, float]:
        return dict.fromkeys(routes, t)

    best_global = max(grid, key=lambda t: (accuracy(scores, labels, uniform(t)), -abs(t - 0.5)))
    thresholds = uniform(best_global)
    current = accuracy(scores, labels, thresholds)
    for _ in range(passes):
        changed = False
        for route in routes:
            for t in grid:
                trial = {**thresholds, route: t}
                value = accuracy(scores, labels, trial)
                if value >= current + min_gain:
                    thresholds, current, changed = trial, value, True
        if not changed:
            break
    return thresholds


@dataclass(frozen=True, slots=True)
class FitResult:
    thresholds: dict[str, float]
    before: float  # accuracy with the router's current thresholds
    after: float  # accuracy with the fitted ones
    examples: int


def load_labelled(path: Path, *, split: str | None = None) -> list[tuple[str, str | None]]:
    """``{"text": ..., "route": ... | null}`` per line (null or "": no route should match)."""
    rows: list[tuple[str, str | None]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, route = str(row["text"]), row.get("route") or None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(
                f"{path}:{number} is not a labelled utterance ({exc}).",
                hint='Write one JSON object per line: {"text": "...", "route": "billing"} (route null: none).',
            ) from None
        if split is None or row.get("split") == split:
            rows.append((text, route))
    return rows


async def fit(router: SemanticRouter, rows: Sequence[tuple[str, str | None]]) -> FitResult:
    """Thresholds for ``router``'s routes that route ``rows`` best (an example is never its own match)."""
    unknown = sorted({label for _, label in rows if label is not None and label not in router.examples})
    if unknown:
        raise InvalidRequest(
            f"The labelled file names routes without examples: {', '.join(unknown)}.",
            hint=f"Label with one of {', '.join(router.examples)} (or null), or give those routes examples.",
        )
    texts, labels = [t for t, _ in rows], [label for _, label in rows]
    scores = await router.batch_scores(texts, leave_out=True)
    thresholds = fit_thresholds(scores, labels, router.examples)
    return FitResult(
        thresholds,
        accuracy(scores, labels, router.thresholds),
        accuracy(scores, labels, thresholds),
        len(rows),
    )


class RouteStage:
    """Routes requests that name ``model`` (``auto``) with a :class:`SemanticRouter`; others pass through.

    The request then names the chosen route, and the exchange carries that route's plan (from
    ``plans``): the one place a plan is replaced after the exchange entered the pipeline.
    """

    name = "route"

    def __init__(self, router: SemanticRouter, *, model: str = "auto", plans: RoutePlans | None = None) -> None:
        self.router = router
        self.model = model
        self._plans = plans

    async def warm(self) -> None:
        """Called by ``Stack.warm`` at start (``aiestack serve``)."""
        await self.router.warm()

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        if ex.request.model != self.model:
            return await call_next(ex)
        text = last_user_text(ex.request.messages)
        if text.strip():
            choice = await self.router.route(text)
        else:
            choice = RouteChoice(self.router.default_route, False, None, {})
        attributes = {
            **ex.attributes,
            ROUTER_ROUTE: choice.route,
            ROUTER_MATCHED: choice.matched,
        }
        if choice.score is not None:
            attributes[ROUTER_SCORE] = round(choice.score, 4)
        request = dataclasses.replace(ex.request, model=choice.route)
        plan = self._plans.for_name(choice.route) if self._plans is not None else ex.plan
        return await call_next(dataclasses.replace(ex, request=request, attributes=attributes, plan=plan))


def build_route_stage(
    settings: RouterSettings,
    routes: RouteTable,
    embeddings: EmbeddingModel | Callable[[], EmbeddingModel],
    *,
    default_model: str,
    models: Collection[str],
    plans: RoutePlans | None = None,
) -> RouteStage | None:
    """The Route stage for the routes that declare ``examples``; None when none does.

    ``plans`` are the stack's route plans: the stage sets the chosen route's on the exchange.
    """
    examples = {name: routes.config(name).examples for name in routes if routes.config(name).examples}
    if not examples:
        return None
    if settings.model in routes or settings.model in models:
        raise ConfigError(
            "router.model",
            f"'{settings.model}' is already a configured model or route",
            'choose another name for the semantic router\'s model (e.g. "auto")',
        )
    default = settings.default_route or default_model
    if default not in routes and default not in models:
        raise ConfigError(
            "router.default_route",
            f"{default!r} is not a configured route or model",
            f"name one of {', '.join([*routes.names, *sorted(models)])}",
        )
    router = SemanticRouter(
        examples,
        embeddings,
        default_route=default,
        thresholds={name: routes.config(name).threshold for name in examples},
        default_threshold=settings.threshold,
        method=settings.method,
    )
    return RouteStage(router, model=settings.model, plans=plans)
