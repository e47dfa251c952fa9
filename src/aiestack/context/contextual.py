"""Contextual retrieval (Anthropic, 2024): a model situates each chunk within its document before indexing.

A chunk such as "Revenue grew 3% over the previous quarter" is hard to find by "ACME Q2 2023 revenue":
the company and the quarter are elsewhere in the document. :class:`Contextualizer` asks a model, given
the whole document and one chunk, for a short context ("This chunk is from ACME's Q2 2023 filing, on
revenue.") and ingestion prepends it to the chunk's text, so both the term and the vector index see it.
The chunk keeps the context in ``metadata["context"]``; :func:`display_text` gives the original text
back for showing and citing.

Contexts are cached by (model, document content hash, chunk text hash) in a :class:`ContextCache`, so
ingesting the same document again (after a crash, into a second collection, with another chunk size
that leaves some chunks equal) does not ask the model again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from aiestack.models.base import ChatModel
from aiestack.stores.context_cache import ContextCache
from aiestack.stores.context_cache_memory import MemoryContextCache
from aiestack.types import ChatRequest, Chunk, Message, Params

PROMPT = """<document>
{document}
</document>
Here is the chunk we want to situate within the whole document:
<chunk>
{chunk}
</chunk>
Give a short, succinct context (one or two sentences) that situates this chunk within the overall \
document, to improve search retrieval of the chunk. Answer only with the context and nothing else."""

#: What separates the context from the chunk's own text in the indexed text.
SEPARATOR = "\n\n"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def window(document: str, start: int, end: int, max_chars: int) -> str:
    """``document`` cut to about ``max_chars`` around ``[start, end)`` (whole when short enough)."""
    if len(document) <= max_chars:
        return document
    room = max(0, max_chars - (end - start))
    lo = max(0, start - room // 2)
    hi = min(len(document), lo + max(max_chars, end - start))
    lo = max(0, hi - max_chars)
    return ("…" if lo else "") + document[lo:hi] + ("…" if hi < len(document) else "")


class Contextualizer:
    """Writes (or finds in the cache) a situating context for each chunk of a document.

    ``model`` is the provider and ``upstream`` the model name it expects; ``name`` identifies the
    model in the cache (default ``upstream``). At most ``concurrency`` requests run at once.
    """

    def __init__(
        self,
        model: ChatModel,
        upstream: str,
        *,
        name: str | None = None,
        cache: ContextCache | None = None,
        max_tokens: int = 96,
        concurrency: int = 4,
        max_document_chars: int = 12_000,
    ) -> None:
        self.model = model
        self.upstream = upstream
        self.name = name or upstream
        self.cache: ContextCache = cache if cache is not None else MemoryContextCache()
        self.max_tokens = max_tokens
        self.max_document_chars = max_document_chars
        self._semaphore = asyncio.Semaphore(concurrency)
        self.generated = 0
        self.cached = 0

    async def contexts(self, document: str, chunks: Sequence[Chunk]) -> list[str]:
        """One context per chunk, in order; chunks carry ``start``/``end`` offsets in their metadata."""
        doc_hash = _hash(document)
        keys = [f"{doc_hash}:{_hash(c.text)}" for c in chunks]
        found = await asyncio.to_thread(self.cache.get_contexts, self.name, list(dict.fromkeys(keys)))
        missing = {k: c for k, c in zip(keys, chunks, strict=True) if k not in found}
        self.cached += sum(1 for k in keys if k in found)
        if missing:
            texts = await asyncio.gather(*(self._one(document, c) for c in missing.values()))
            fresh = dict(zip(missing, texts, strict=True))
            self.generated += len(fresh)
            await asyncio.to_thread(self.cache.put_contexts, self.name, fresh)
            found = {**found, **fresh}
        return [found[k] for k in keys]

    async def _one(self, document: str, chunk: Chunk) -> str:
        start = int(chunk.metadata.get("start", 0))
        end = int(chunk.metadata.get("end", start + len(chunk.text)))
        prompt = PROMPT.format(
            document=window(document, start, end, self.max_document_chars), chunk=chunk.text
        )
        request = ChatRequest(
            model=self.upstream,
            messages=(Message(role="user", content=prompt),),
            params=Params(temperature=0.0, max_tokens=self.max_tokens),
        )
        parts: list[str] = []
        async with self._semaphore:
            async for delta in self.model.stream(request):
                parts.append(delta.text)
        return " ".join("".join(parts).split())


def with_context(chunk: Chunk, context: str) -> Chunk:
    """``chunk`` with ``context`` prepended to its text and kept in ``metadata["context"]``."""
    from dataclasses import replace

    if not context:
        return chunk
    return replace(
        chunk, text=f"{context}{SEPARATOR}{chunk.text}", metadata={**chunk.metadata, "context": context}
    )


def display_text(chunk: Chunk) -> str:
    """The chunk's own text, without the situating context ingestion prepended for indexing."""
    context = chunk.metadata.get("context")
    prefix = f"{context}{SEPARATOR}" if isinstance(context, str) and context else ""
    return chunk.text[len(prefix) :] if prefix and chunk.text.startswith(prefix) else chunk.text
