"""Long-term memory (book ch. 6): facts written to and recalled from a collection, per tenant.

``Agent(..., long_term_memory=LongTermMemory(stack.resources))`` gives the agent two tools,
``remember(fact)`` and ``recall(query)``, and (``auto_recall``) recalls the facts closest to the
task before the first step and shows them to the model (a :class:`~aiestack.agents.events.MemoryRecalled`
event). Applications write facts themselves with :meth:`LongTermMemory.remember`.

Each tenant's facts live in a collection of its own, ``{collection}--{tenant}`` (a tenant id that
is not a valid collection name is hashed), owned by that tenant like any collection: a run only ever
reads and writes its own tenant's facts, and a collection of that name owned by another tenant is
refused. A fact is one document (one chunk), embedded with the stack's embedding model and found by
the retriever of RAG (``mode``: ``hybrid`` by default, ``bm25`` or ``vector``); the same fact written
twice is stored once. Facts are ordinary documents, so ``aiestack collections`` lists them and
dropping the collection forgets them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiestack.agents.events import AgentEvent, MemoryRecalled
from aiestack.agents.tools import FunctionTool, ToolContext, ToolOutcome
from aiestack.errors import AiestackError
from aiestack.types import Message

if TYPE_CHECKING:
    from aiestack.agents.loop import _Run
    from aiestack.context.retrieval import Mode
    from aiestack.resources import Resources

_TENANT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: How recalled facts are shown to the model (a user message after the task).
RECALLED = "Facts remembered from earlier runs (they may help):\n{facts}"
MAX_FACT_CHARS = 2000


@dataclass(frozen=True)
class LongTermMemory:
    """Facts per tenant in a collection (see the module doc).

    ``recall_k``: how many facts a recall returns; ``min_score``: drop weaker hits (the retriever's
    score for ``mode``); ``auto_recall``: recall for the task before the first step; ``tools``: offer
    ``remember`` and ``recall`` to the model.
    """

    resources: Resources = field(repr=False)
    collection: str = "memory"
    recall_k: int = 3
    mode: Mode = "hybrid"
    min_score: float | None = None
    auto_recall: bool = True
    tools_enabled: bool = True

    def __post_init__(self) -> None:
        if self.recall_k < 1:
            raise ValueError(f"recall_k must be at least 1, got {self.recall_k}")
        self.collection_for("default")  # a bad base name fails here, not in the middle of a run

    def collection_for(self, tenant: str) -> str:
        """The collection that holds ``tenant``'s facts."""
        from aiestack.stores.documents_common import check_collection_name

        slug = tenant if _TENANT_NAME.match(tenant) and ".." not in tenant else hashlib.sha256(tenant.encode()).hexdigest()[:16]
        return check_collection_name(f"{self.collection}--{slug}")

    async def remember(self, fact: str, *, tenant: str = "default", metadata: Mapping[str, Any] | None = None) -> bool:
        """Store ``fact`` for ``tenant``; False when it was already stored. ``ValueError`` for an empty fact."""
        from aiestack.context.chunking import chunk_id
        from aiestack.types import Chunk, Document

        text = " ".join(fact.split())
        if not text:
            raise ValueError("the fact is empty: say what to remember")
        if len(text) > MAX_FACT_CHARS:
            raise ValueError(f"the fact is {len(text)} characters long (at most {MAX_FACT_CHARS}): remember it in parts")
        name = self.collection_for(tenant)
        embeddings = await asyncio.to_thread(self.resources.get_embeddings)  # loading one takes seconds
        vector = (await embeddings.embed([text]))[0]
        doc_id = hashlib.sha256(text.encode()).hexdigest()
        meta = {"tenant": tenant, "remembered_at": time.time(), **dict(metadata or {})}
        document = Document(doc_id, text, source=f"fact:{doc_id[:16]}", title="fact", metadata=meta)
        chunk = Chunk(chunk_id(doc_id, 0, text), doc_id, text, 0, meta)

        def write() -> bool:
            store = self.resources.documents
            self._owned(store.get_collection(name), tenant)
            store.create_collection(name, tenant=tenant, embedding_model=embeddings.name, dim=len(vector))
            return store.put_document(name, document, [chunk], [vector])

        return await asyncio.to_thread(write)

    async def recall(self, query: str, *, tenant: str = "default", k: int | None = None) -> list[str]:
        """The facts of ``tenant`` closest to ``query``, best first (none when nothing is stored)."""
        from aiestack.context.retrieval import Retriever, SearchOptions

        if not query.strip():
            return []
        name = self.collection_for(tenant)
        store = self.resources.documents
        info = await asyncio.to_thread(store.get_collection, name)
        if info is None or info.chunks == 0:
            return []
        self._owned(info, tenant)
        options = SearchOptions(mode=self.mode, k=k or self.recall_k, min_score=self.min_score)
        embeddings = await asyncio.to_thread(self.resources.get_embeddings) if self.mode != "bm25" else None
        found = await Retriever(store, embeddings).search(name, query, options)
        return [hit.chunk.text for hit in found.hits]

    def _owned(self, info: Any, tenant: str) -> None:
        if info is not None and info.tenant != tenant:
            raise PermissionError(f"the memory collection {info.name!r} belongs to another tenant")

    def tools(self) -> tuple[FunctionTool, ...]:
        """``remember`` and ``recall`` for the model (none when ``tools_enabled`` is off)."""
        if not self.tools_enabled:
            return ()
        memory = self

        async def remember(fact: str, context: ToolContext) -> ToolOutcome:
            try:
                new = await memory.remember(fact, tenant=context.tenant, metadata={"run_id": context.run_id})
            except (ValueError, PermissionError, AiestackError) as exc:
                return ToolOutcome(f"Error: {exc}", error=str(exc))
            return ToolOutcome("Remembered." if new else "I already knew that.")

        remember.__doc__ = """Remember a fact for later runs (one short self-contained sentence).

        Args:
            fact: the fact, e.g. "Ana's favourite colour is green"
        """

        async def recall(query: str, context: ToolContext) -> ToolOutcome:
            try:
                facts = await memory.recall(query, tenant=context.tenant)
            except (PermissionError, AiestackError) as exc:
                return ToolOutcome(f"Error: {exc}", error=str(exc))
            return ToolOutcome("\n".join(f"- {f}" for f in facts) if facts else "Nothing remembered about that.")

        recall.__doc__ = """Recall facts remembered in earlier runs.

        Args:
            query: what to recall, in words
        """
        return FunctionTool(remember, name="remember"), FunctionTool(recall, name="recall")

    async def recall_into(self, run: _Run) -> AsyncGenerator[AgentEvent, None]:
        """Recall facts for the task and add them to the conversation after it (when there are any)."""
        started = time.perf_counter()
        try:
            facts, error = await self.recall(run.task, tenant=run.tenant), None
        except (PermissionError, AiestackError) as exc:  # the run goes on without memories, and says why
            facts, error = [], str(exc)
        if facts:  # before the first step the conversation ends with the task: the facts follow it
            run.messages.append(Message("user", RECALLED.format(facts="\n".join(f"- {f}" for f in facts))))
        yield MemoryRecalled(run.id, run.step, run.task, tuple(facts), (time.perf_counter() - started) * 1000, error)
