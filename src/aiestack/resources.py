"""What the stages share and open on first use: built before the stages, handed down to them.

The composition root (:mod:`aiestack.build`) builds one :class:`Resources` from the settings and
gives it to every stage or wing that needs one of its parts: the Context stage (documents,
embeddings), the Cache stage (embeddings, and whether they are loaded), the guardrails' classifier
(embeddings), the semantic router (embeddings). Each part is opened on first use (loading an
embedding model takes seconds; a stack that never retrieves never opens the document store), and
closed with the stack. Nothing below the stack holds a reference back up to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from aiestack.models.base import EmbeddingModel
from aiestack.stores.context_cache import ContextCache
from aiestack.stores.documents import DocumentStore

_T = TypeVar("_T")


class _Lazy(Generic[_T]):
    """A value built by ``factory`` on first use, then kept."""

    __slots__ = ("_factory", "value")

    def __init__(self, factory: Callable[[], _T]) -> None:
        self._factory = factory
        self.value: _T | None = None

    def get(self) -> _T:
        if self.value is None:
            self.value = self._factory()
        return self.value


class Resources:
    """The embedding models, the document store and the context cache, each opened on first use.

    ``batch_embeddings`` is the embedding model for batch work (ingestion on a ``[compute]``
    runner); without a factory for it, it is :attr:`embeddings` itself. ``versions`` opens a
    registered embedding model version by its name (None for a name that is not one): the model a
    collection re-indexed with a finetuned version records (:meth:`embeddings_for`).
    """

    def __init__(
        self,
        *,
        embeddings: Callable[[], EmbeddingModel],
        documents: Callable[[], DocumentStore],
        context_cache: Callable[[], ContextCache] | None = None,
        batch_embeddings: Callable[[], EmbeddingModel] | None = None,
        versions: Callable[[str], EmbeddingModel | None] | None = None,
    ) -> None:
        self._embeddings = _Lazy(embeddings)
        self._documents = _Lazy(documents)
        self._context_cache = _Lazy(context_cache) if context_cache is not None else None
        self._batch_embeddings = _Lazy(batch_embeddings) if batch_embeddings is not None else None
        self._versions = versions
        self._opened: dict[str, EmbeddingModel] = {}

    def use(self, *, embeddings: EmbeddingModel | None = None, documents: DocumentStore | None = None) -> None:
        """Use these ready-made parts instead of building them (tests; a model loaded another way)."""
        if embeddings is not None:
            self._embeddings.value = embeddings
        if documents is not None:
            self._documents.value = documents

    @property
    def embeddings(self) -> EmbeddingModel:
        """The configured embedding model, built on first use (loading it takes a moment)."""
        return self._embeddings.get()

    def get_embeddings(self) -> EmbeddingModel:
        """:attr:`embeddings` as a callable, for the wings that take a lazy ``Callable[[], EmbeddingModel]``."""
        return self._embeddings.get()

    def embeddings_for(self, model: str) -> EmbeddingModel:
        """The embedding model for a collection that records ``model`` as its ``embedding_model``.

        A registered embedding model version (a finetuned model, :mod:`aiestack.models.embedding_versions`)
        is opened on first use and kept; any other name gets the configured model (:attr:`embeddings`),
        as before versions existed. Queries and new documents of a collection must be embedded by
        the model that embedded its chunks, so the context wing asks here per collection.
        """
        version = self.embedding_version(model)
        return self.embeddings if version is None else version

    def embedding_version(self, model: str) -> EmbeddingModel | None:
        """The registered embedding model version named ``model``, opened on first use and kept; None
        when ``model`` is not one."""
        opened = self._opened.get(model)
        if opened is not None:
            return opened
        version = self._versions(model) if self._versions is not None and model else None
        if version is not None:
            self._opened[model] = version
        return version

    @property
    def embeddings_built(self) -> bool:
        """Whether the embedding model exists yet (built by ``serve``, RAG or the router): until then
        the cache looks up exactly only, so no request waits for a model to load."""
        return self._embeddings.value is not None

    @property
    def batch_embeddings(self) -> EmbeddingModel:
        """The embedding model for batch work: on the ``[compute]`` runner when one is configured, else :attr:`embeddings`."""
        return self._batch_embeddings.get() if self._batch_embeddings is not None else self.embeddings

    @property
    def documents(self) -> DocumentStore:
        """The document store (collections, chunks, term and vector indexes), opened and migrated on first use."""
        return self._documents.get()

    @property
    def context_cache(self) -> ContextCache:
        """Where contextual retrieval keeps the contexts it generated, opened on first use."""
        if self._context_cache is None:
            raise LookupError("these resources have no context cache")
        return self._context_cache.get()

    async def warm(self) -> None:
        """Load the embedding model's weights now, if it was built and loads them lazily."""
        load = getattr(self._embeddings.value, "load", None)
        if load is not None:
            await load()

    async def aclose(self) -> None:
        """Close what was opened (models first, then stores). Idempotent for what was never opened."""
        for model in (self._embeddings, self._batch_embeddings):
            if model is not None and model.value is not None:
                value, model.value = model.value, None
                await value.aclose()
        opened, self._opened = self._opened, {}
        for version in opened.values():
            await version.aclose()
        documents, self._documents.value = self._documents.value, None
        if documents is not None:
            documents.close()
        if self._context_cache is not None and self._context_cache.value is not None:
            cache, self._context_cache.value = self._context_cache.value, None
            cache.close()
