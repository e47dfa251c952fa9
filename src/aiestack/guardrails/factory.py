"""Building the guard stages from settings: what the composition root calls.

:func:`build_guardrails` validates ``[guards]`` and every ``[routes.NAME.guards]``, loads the packaged
classifier, connects it to the stack's embedding model (asked only by the MiniLM heads a policy counts,
and used only when that is all-MiniLM-L6-v2, the model they were trained on; otherwise their lexical
fallbacks are used; the default ``static`` head and the ``lexical`` head never ask), resolves judge models,
and returns the stages and the trace redactor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiestack.errors import ConfigError, ModelNotFound
from aiestack.guardrails.features import Pooling
from aiestack.guardrails.injection import EMBEDDING_MODEL, Embed, InjectionClassifier, Judge, ModelJudge
from aiestack.guardrails.input import ContextGuard, InputGuard
from aiestack.guardrails.output import OutputGuard
from aiestack.guardrails.table import GuardTable, build_guard_table
from aiestack.models.base import EmbeddingModel
from aiestack.models.registry import ModelRegistry
from aiestack.monitoring import Metrics
from aiestack.sidecalls import SideCalls

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Guardrails:
    table: GuardTable
    input: InputGuard
    output: OutputGuard
    context: ContextGuard

    def redact(self, text: str) -> str:
        """Masks PII and secrets in recorded content (the Trace stage's ``redact``)."""
        return self.table.redact_for_trace(text)


def classifier_embed(get: Callable[[], EmbeddingModel], dim: int) -> Embed:
    """An :data:`Embed` over the stack's embedding model, or ``None`` results if it is another model.

    The check happens on first use (the stack builds its embedding model lazily); a store-backed
    embedding cache in front of the model is bypassed (prompts need not be kept).
    """
    state: dict[str, EmbeddingModel | None] = {}

    async def embed(texts: Sequence[str]) -> list[list[float]] | None:
        if "model" not in state:
            model = get()
            inner = getattr(model, "inner", model)  # CachedEmbeddings wraps the model
            name = str(getattr(inner, "name", "")).rsplit("/", 1)[-1]
            state["model"] = inner if name == EMBEDDING_MODEL and inner.dim == dim else None
        chosen = state["model"]
        return None if chosen is None else await chosen.embed(texts)

    return embed


def build_guardrails(
    defaults: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    *,
    registry: ModelRegistry,
    embeddings: Callable[[], EmbeddingModel] | None = None,
    metrics: Metrics | None = None,
    side_calls: SideCalls | None = None,
    static: Pooling | None = None,
) -> Guardrails:
    """The guard stages for ``defaults`` (the ``[guards]`` settings) and the routes' ``guards`` tables.

    A judge model is called through ``side_calls`` (the stack's seam: routes, pricing against the
    request's key, a child span); without it (guardrails used on their own), its provider directly.
    ``static``: the static embedder the injection guard's ``static`` head reads (the stack passes the
    semantic cache's); without it the classifier opens its own on first use.
    """
    try:
        classifier: InjectionClassifier | None = InjectionClassifier(static=static)
    except (OSError, KeyError, ValueError):  # a broken install: the heuristics still run
        _log.warning("the packaged injection classifier could not be loaded; using heuristics only", exc_info=True)
        classifier = None
    embed = None
    if embeddings is not None and classifier is not None:
        embed = classifier_embed(embeddings, classifier.embedding_dim)

    def judge(name: str) -> Judge:
        try:
            entry = registry.resolve(name)
        except ModelNotFound:
            raise ConfigError(
                "guards.injection.judge", f"{name!r} is not a configured model", "name a model from [models] (or remove the judge)"
            ) from None
        if side_calls is not None:
            return ModelJudge(side_calls.model(name, purpose="guard.injection_judge"), name)
        return ModelJudge(entry.provider, entry.upstream)

    table = build_guard_table(defaults, routes, classifier=classifier, embed=embed, judge=judge)
    return Guardrails(table, InputGuard(table, metrics=metrics), OutputGuard(table, metrics=metrics), ContextGuard(table))
