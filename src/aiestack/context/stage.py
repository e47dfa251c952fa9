"""The Context stage: retrieval-augmented generation for routes with a collection.

On the way in, for a request whose route plan carries a RAG plan (a route with ``collection =
"NAME"``, compiled by :func:`~aiestack.context.config.build_rag_routes` at build time), or that
names a collection itself in ``metadata["aiestack.collection"]``, the stage:

1. checks the collection exists and belongs to the caller's tenant (the admin tenant sees all);
2. retrieves for the last user turn (:class:`~aiestack.context.retrieval.Retriever`, with the
   route's mode, rerank, MMR and rewrite settings);
3. passes the hits through ``check_context`` when one is given (the guardrails' indirect prompt
   injection check: it may drop hits and returns verdicts);
4. renders the route's prompt template with the numbered sources in place of the last user turn,
   adds stop sequences when the request has none, and calls the next stage;
5. on the way out, when the answer is not usable (empty, or not drawn from the sources), adds an
   extractive answer, labelled as such (:mod:`aiestack.context.extractive`; ``fallback = "off"``
   switches it off).

The hits go into :attr:`Exchange.hits` (numbered like the prompt's sources; the server turns them
into the response's ``citations``) and a compact summary (chunk ids, sources, scores, timings —
never texts) into the exchange attributes. On the way out the exchange carries the request as
the client sent it, so outer stages (cache, output guards, tracing) see what they saw going in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiestack.context.config import RagRoute, rag_route
from aiestack.context.extractive import RAG_EXTRACTIVE, with_fallback
from aiestack.context.prompt import default_stop, sources_of
from aiestack.context.retrieval import Retriever
from aiestack.errors import NotFound, PermissionDenied
from aiestack.models.registry import ModelRegistry
from aiestack.pipeline import Next
from aiestack.resources import Resources
from aiestack.stores.documents import CollectionInfo
from aiestack.types import Exchange, Hit, Message, Verdict, last_user_index

if TYPE_CHECKING:
    from aiestack.hookspecs import PluginRetriever

CheckContext = Callable[[Exchange, Sequence[Hit]], Awaitable[tuple[Sequence[Hit], Sequence[Verdict]]]]

#: Request metadata naming a collection to answer from (for requests without a RAG route).
COLLECTION_METADATA = "aiestack.collection"
# Exchange attributes the stage sets.
RAG_COLLECTION = "aiestack.rag.collection"
RAG_HITS = "aiestack.rag.hits"  # [{chunk_id, document_id, source, score, retriever}], numbered as the prompt
RAG_TIMINGS = "aiestack.rag.timings"  # {embed_ms, search_ms, rerank_ms, ..., total_ms}
RAG_DROPPED = "aiestack.rag.dropped"  # hits removed by check_context


class Context:
    """RAG for routes with a collection; other requests pass through untouched."""

    name = "context"

    def __init__(
        self,
        resources: Resources,
        *,
        check_context: CheckContext | None = None,
        admin_tenant: str = "admin",
        retrievers: Sequence[PluginRetriever] = (),
        window: Callable[[Exchange], int | None] | None = None,
    ) -> None:
        self._resources = resources
        self._retrievers = tuple(retrievers)
        self._check_context = check_context
        self._admin_tenant = admin_tenant
        self._default = rag_route("", {}, ModelRegistry())
        # The smallest context window (tokens) of the models that may answer an exchange, if known.
        self._window = window or (lambda ex: None)

    def rag(self, ex: Exchange) -> RagRoute | None:
        """The RAG plan for ``ex``: its route plan's, else the collection its metadata names, else none."""
        planned = ex.plan.part(RagRoute) if ex.plan is not None else None
        if planned is not None:
            return planned
        named = ex.request.metadata.get(COLLECTION_METADATA)
        if named:
            return dataclasses.replace(self._default, collection=str(named))
        return None

    def collection(self, ex: Exchange, name: str) -> CollectionInfo:
        """The collection ``name`` (through its pointer: its current version) if ``ex``'s tenant may read it;
        else a clear error."""
        documents = self._resources.documents
        info = documents.get_collection(documents.resolve(name))
        if info is None:
            raise NotFound(
                f"The collection '{name}' does not exist.",
                hint=f"Ingest documents into it first: `aiestack ingest PATH --collection {name}`.",
            )
        if info.tenant != ex.tenant and ex.tenant != self._admin_tenant:
            raise PermissionDenied(
                f"The collection '{name}' belongs to another tenant.",
                hint="Use a key of the tenant that owns it, or a collection of your own tenant.",
            )
        return info

    def passes(self, ex: Exchange) -> bool:
        """No collection for this exchange: nothing to retrieve (the pipeline then skips this stage)."""
        return self.rag(ex) is None

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        plan = self.rag(ex)
        if plan is not None:
            plan = plan.for_window(self._window(ex))  # fewer, shorter sources for a small model
        at = last_user_index(ex.request.messages)
        question = ex.request.messages[at].text if at is not None else ""
        if plan is None or at is None or not question.strip():
            return await call_next(ex)
        self.collection(ex, plan.collection)
        retriever = Retriever(
            self._resources.documents,
            self._resources.embeddings if plan.options.mode != "bm25" or plan.options.mmr_lambda is not None else None,
            reranker=plan.reranker,
            rewriter=plan.rewriter,
            extra=self._retrievers,
            models=self._resources.embeddings_for,
        )
        history = ex.request.messages[:at]
        found = await retriever.search(plan.collection, question, plan.options, history=history)
        hits: Sequence[Hit] = found.hits
        verdicts: Sequence[Verdict] = ()
        if self._check_context is not None and hits:
            hits, verdicts = await self._check_context(ex, hits)
        kept = tuple(hits)
        sources = sources_of(kept, max_chars=plan.max_source_chars, question=question)
        prompt = plan.template.render(question, sources, collection=plan.collection)
        messages = list(ex.request.messages)
        messages[at] = Message(role="user", content=prompt, name=messages[at].name)
        params = ex.request.params
        if not params.stop:
            stop = plan.stop if plan.stop is not None else default_stop(len(sources))
            if stop:
                params = dataclasses.replace(params, stop=stop)
        attributes: dict[str, Any] = {
            **ex.attributes,
            RAG_COLLECTION: plan.collection,
            RAG_HITS: [_summary(h) for h in kept],
            RAG_TIMINGS: {k: round(v, 3) for k, v in found.timings.items()},
        }
        if len(kept) < len(found.hits):
            attributes[RAG_DROPPED] = len(found.hits) - len(kept)
        inner = dataclasses.replace(
            ex,
            request=dataclasses.replace(ex.request, messages=tuple(messages), params=params),
            hits=kept,
            verdicts=(*ex.verdicts, *verdicts),
            attributes=attributes,
        )
        out = await call_next(inner)
        if plan.extractive_fallback and out.completion is not None:
            completion, used = with_fallback(out.completion, question, kept)
            extra = {RAG_EXTRACTIVE: True} if used else {}
            out = dataclasses.replace(out, completion=completion, attributes={**out.attributes, **extra})
        return dataclasses.replace(out, request=ex.request)


def _summary(hit: Hit) -> dict[str, Any]:
    return {
        "chunk_id": hit.chunk.id,
        "document_id": hit.chunk.document_id,
        "source": str(hit.chunk.metadata.get("source") or hit.chunk.document_id),
        "score": round(float(hit.score), 6),
        "retriever": hit.retriever,
    }
