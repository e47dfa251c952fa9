"""``[routes.NAME.rag]``: how a route with a ``collection`` retrieves and prompts, validated at start.

Example::

    [routes.docs]
    deployments = ["gemma-3-270m"]
    collection = "docs"
    [routes.docs.rag]
    mode = "hybrid"          # bm25 | vector | hybrid
    k = 5                    # sources given to the model (default: 5, or 3 for a small model)
    candidates = 50          # depth of each retriever's list before fusion
    fusion = "weighted"      # weighted | rrf
    norm = "max"             # weighted fusion: max | minmax | z
    rrf_k = 20
    vector_weight = 0.5      # the vector list's share in the fusion
    rerank = "off"           # off | llm | cross-encoder
    rerank_model = ""        # llm: a configured model; cross-encoder: a local model directory
    mmr = 0.7                # MMR lambda (leave out for no diversification)
    rewrite_model = ""       # a configured model that rewrites follow-up questions
    min_score = 0.0          # drop hits scoring below this (in the final score's scale)
    template = "..."         # a Jinja2 template (see aiestack.context.prompt), or template_file
    max_source_chars = 1500  # each source cut to this (default: 1500, or 600 for a small model)
    fallback = "extractive"  # extractive | off: quote the sources when the answer is not usable

A *small model* is one whose context window is at most ``SMALL_WINDOW`` (4,096) tokens, as the
embedded Gemma 3 270M's is: a route that sets neither ``k`` nor ``max_source_chars`` gives it
fewer and shorter sources (3 of at most 600 characters, the most relevant sentences of each:
:func:`aiestack.context.prompt.sources_of`) — measured in bench/README.md (rag_small_model).
A route whose deployments or fallbacks include a small model is sized for it.

Every error names the key (``routes.NAME.rag.KEY``) and the fix. The same table's defaults apply
to a request that names a collection itself (``metadata = {"aiestack.collection": "NAME"}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiestack.context.fusion import Norm
from aiestack.context.prompt import DEFAULT_TEMPLATE, PromptTemplate
from aiestack.context.rerank import CrossEncoderReranker, LLMReranker, Reranker
from aiestack.context.retrieval import Fusion, Mode, SearchOptions
from aiestack.context.rewrite import LLMRewriter, QueryRewriter
from aiestack.errors import ConfigError, InvalidRequest
from aiestack.models.base import ChatModel
from aiestack.models.registry import ModelRegistry
from aiestack.settings import config_error
from aiestack.sidecalls import SideCalls
from aiestack.stores.filters import parse_filter

#: The retrieval defaults, defined once by :class:`SearchOptions`; a ``[rag]`` table's keys default to them.
_SEARCH = SearchOptions()


class RagConfig(BaseModel):
    """A ``[routes.NAME.rag]`` table."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(default="hybrid", description="bm25, vector or hybrid retrieval.")
    k: int | None = Field(default=None, ge=1, le=50, description="Sources given to the model (empty: 5, or 3 for a small model).")
    candidates: int = Field(default=_SEARCH.candidates, ge=1, le=1000, description="Depth of each retriever's list.")
    fusion: Fusion = Field(default=_SEARCH.fusion, description="Hybrid fusion: weighted or rrf.")
    rrf_k: float = Field(default=_SEARCH.rrf_k, ge=0, description="The RRF constant.")
    vector_weight: float = Field(default=_SEARCH.vector_weight, ge=0, le=1, description="Vector share in the fusion.")
    norm: Norm = Field(default=_SEARCH.norm, description="Score normalisation of weighted fusion: max, minmax or z.")
    rerank: Literal["off", "llm", "cross-encoder"] = Field(default="off", description="Reranker.")
    rerank_model: str = Field(default="", description="llm: a configured model; cross-encoder: a local path.")
    rerank_depth: int = Field(default=_SEARCH.rerank_depth, ge=1, le=200, description="Candidates reranked (and MMR's pool).")
    mmr: float | None = Field(default=None, ge=0, le=1, description="MMR lambda; empty: no diversification.")
    rewrite_model: str = Field(default="", description="A configured model that rewrites the query.")
    min_score: float | None = Field(default=None, description="Drop hits scoring below this.")
    filter: dict[str, Any] | None = Field(default=None, description="A metadata filter (portable grammar).")
    template: str | None = Field(default=None, description="A Jinja2 prompt template.")
    template_file: Path | None = Field(default=None, description="A file holding the Jinja2 prompt template.")
    max_source_chars: int | None = Field(
        default=None, ge=50, description="Each source is cut to this many characters (empty: 1500, or 600 for a small model)."
    )
    stop: list[str] | None = Field(
        default=None, max_length=4, description="Stop sequences for requests with none (default: the template's)."
    )
    fallback: Literal["extractive", "off"] = Field(
        default="extractive",
        description="When the answer is not usable (empty, or not from the sources): add quoted source sentences, labelled.",
    )

    def options(self) -> SearchOptions:
        return SearchOptions(
            mode=self.mode,
            k=self.k or DEFAULT_K,
            candidates=self.candidates,
            fusion=self.fusion,
            rrf_k=self.rrf_k,
            vector_weight=self.vector_weight,
            norm=self.norm,
            rerank_depth=self.rerank_depth,
            mmr_lambda=self.mmr,
            min_score=self.min_score,
            filter=self.filter,
        )


#: Sources and characters per source when the route sets none, for most models and for small ones.
DEFAULT_K, DEFAULT_SOURCE_CHARS = 5, 1500
SMALL_K, SMALL_SOURCE_CHARS = 3, 600
#: A model with a context window of at most this many tokens is small (the embedded Gemma 3 270M: 4,096).
SMALL_WINDOW = 4096


@dataclass(frozen=True, slots=True)
class RagRoute:
    """Everything the Context stage needs for one route (or one request naming a collection).

    ``sized_k`` / ``sized_chars``: the route left ``k`` / ``max_source_chars`` to the model's size
    (:meth:`for_window`).
    """

    collection: str
    options: SearchOptions
    template: PromptTemplate
    max_source_chars: int
    stop: tuple[str, ...] | None  # None: default_stop(the number of sources)
    reranker: Reranker | None = None
    rewriter: QueryRewriter | None = None
    extractive_fallback: bool = True
    sized_k: bool = False
    sized_chars: bool = False

    def for_window(self, window: int | None) -> RagRoute:
        """This plan for a model whose context window is ``window`` tokens (None: unknown, not small)."""
        if window is None or window > SMALL_WINDOW or not (self.sized_k or self.sized_chars):
            return self
        options = dataclasses.replace(self.options, k=SMALL_K) if self.sized_k else self.options
        chars = SMALL_SOURCE_CHARS if self.sized_chars else self.max_source_chars
        return dataclasses.replace(self, options=options, max_source_chars=chars)


def rag_route(
    collection: str,
    table: Mapping[str, Any],
    models: ModelRegistry,
    *,
    key: str = "rag",
    side_calls: SideCalls | None = None,
) -> RagRoute:
    """Validate ``table`` (``key`` names it in errors) and build the route's retrieval plan.

    The reranker's and rewriter's models are called through ``side_calls`` (the stack's seam: routes,
    pricing against the request's key, a child span); without it, their providers directly.
    """
    try:
        cfg = RagConfig.model_validate(dict(table))
    except ValidationError as exc:
        raise config_error(exc, RagConfig, source="aiestack.toml", prefix=key) from None
    if cfg.filter is not None:
        try:
            parse_filter(cfg.filter)
        except InvalidRequest as exc:
            raise ConfigError(f"{key}.filter", exc.message.rstrip("."), exc.hint or "fix the filter") from None
    return RagRoute(
        collection=collection,
        options=cfg.options(),
        template=_template(cfg, key),
        max_source_chars=cfg.max_source_chars or DEFAULT_SOURCE_CHARS,
        stop=tuple(cfg.stop) if cfg.stop is not None else None,
        reranker=_reranker(cfg, models, key, side_calls),
        rewriter=_rewriter(cfg, models, key, side_calls),
        extractive_fallback=cfg.fallback == "extractive",
        sized_k=cfg.k is None,
        sized_chars=cfg.max_source_chars is None,
    )


def build_rag_routes(
    routes: Mapping[str, Any], models: ModelRegistry, *, side_calls: SideCalls | None = None
) -> dict[str, RagRoute]:
    """The RAG plan of every route with a ``collection``; a ``rag`` table without one is an error.

    ``routes`` maps route names to their validated :class:`~aiestack.gateway.routes.RouteConfig`
    (anything with ``collection`` and ``rag`` attributes).
    """
    out: dict[str, RagRoute] = {}
    for name, cfg in routes.items():
        collection, table = getattr(cfg, "collection", None), getattr(cfg, "rag", None) or {}
        if not collection:
            if table:
                raise ConfigError(
                    f"routes.{name}.rag",
                    "a rag table needs a collection to retrieve from",
                    f"set routes.{name}.collection to the name of an ingested collection",
                )
            continue
        out[name] = rag_route(collection, table, models, key=f"routes.{name}.rag", side_calls=side_calls)
    return out


def _template(cfg: RagConfig, key: str) -> PromptTemplate:
    if cfg.template is not None and cfg.template_file is not None:
        raise ConfigError(f"{key}.template", "both template and template_file are set", "keep one of them")
    text, where = DEFAULT_TEMPLATE, "template"
    if cfg.template is not None:
        text = cfg.template
    elif cfg.template_file is not None:
        where = "template_file"
        path = cfg.template_file.expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{key}.template_file", f"cannot read {path} ({exc.strerror})", "point it at a readable file") from None
    try:
        return PromptTemplate(text)
    except ValueError as exc:
        raise ConfigError(
            f"{key}.{where}",
            str(exc),
            "use the variables question, sources (n, text, title, source, heading, page) and collection",
        ) from None


def _model(
    name: str, models: ModelRegistry, key: str, what: str, side_calls: SideCalls | None, purpose: str
) -> tuple[ChatModel, str]:
    if name not in models:
        known = ", ".join(sorted(e.name for e in models)) or "none"
        raise ConfigError(key, f"unknown model {name!r}", f"name a model configured under [models] for the {what} (known: {known})")
    if side_calls is not None:
        return side_calls.model(name, purpose=purpose), name
    entry = models.resolve(name)
    return entry.provider, entry.upstream


def _reranker(cfg: RagConfig, models: ModelRegistry, key: str, side_calls: SideCalls | None) -> Reranker | None:
    if cfg.rerank == "off":
        return None
    if not cfg.rerank_model:
        raise ConfigError(
            f"{key}.rerank_model",
            f"rerank = '{cfg.rerank}' needs a rerank_model",
            "name a configured model (llm) or a local CrossEncoder directory (cross-encoder)",
        )
    if cfg.rerank == "llm":
        provider, upstream = _model(cfg.rerank_model, models, f"{key}.rerank_model", "reranker", side_calls, "rag.rerank")
        return LLMReranker(provider, upstream)
    return CrossEncoderReranker(cfg.rerank_model)


def _rewriter(cfg: RagConfig, models: ModelRegistry, key: str, side_calls: SideCalls | None) -> QueryRewriter | None:
    if not cfg.rewrite_model:
        return None
    provider, upstream = _model(cfg.rewrite_model, models, f"{key}.rewrite_model", "query rewriter", side_calls, "rag.rewrite")
    return LLMRewriter(provider, upstream)
