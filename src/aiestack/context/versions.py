"""Versions of a collection: the same chunks embedded by another model, and a switch between them.

A collection ``docs`` is its own version 1. :func:`reindex_collection` writes version N as a new
collection ``docs.vN`` holding the same documents and chunks (nothing is re-chunked) embedded by
another model, typically a finetuned one (``aiestack finetune embeddings``); the new collection's
metadata says what it is: ``{"version_of": "docs", "version": N, "lineage": {...}}``.
:func:`switch_collection` makes one version current: it points the name ``docs`` at ``docs.vN``
(:meth:`DocumentStore.set_pointer`, one write), so every search, RAG answer and ingestion naming
``docs`` uses that version — and its embedding model, which the collection records — from its next
call on. Switching to version 1 removes the pointer. The flywheel's promotion step calls
:func:`switch_collection`; ``aiestack collections versions|switch`` are the same functions.

New documents ingested into ``docs`` go into its current version only: a version switched away from
keeps what it had.

:func:`reindex_collection` is resumable like a copy (:mod:`aiestack.stores.documents_copy`): a
document already in the new version with the same id is skipped, so running it again after an
interruption finishes the job; it ends by checking that both versions hold the same documents and
chunks (counts, and the copy checksum without the vectors).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiestack.errors import InvalidRequest, NotFound
from aiestack.models.base import EmbeddingModel
from aiestack.stores.documents import CollectionInfo, DocumentStore
from aiestack.stores.documents_copy import BATCH, collection_checksum

VERSION_OF = "version_of"


@dataclass(frozen=True, slots=True)
class CollectionVersion:
    """One version of a collection: ``collection`` is where it is stored (``docs`` or ``docs.vN``)."""

    name: str  # the name people use, ``docs``
    version: int
    collection: str
    embedding_model: str
    dim: int
    documents: int
    chunks: int
    created_at: float
    current: bool
    lineage: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReindexReport:
    version: CollectionVersion
    embedded: int  # documents embedded by this run
    skipped: int  # already there (a resumed run)
    chunks: int  # chunks embedded by this run
    seconds: float


def base_name(store: DocumentStore, name: str) -> str:
    """The name a version belongs to: ``docs`` for ``docs`` and for ``docs.v2`` (and for a name pointing at them)."""
    info = store.get_collection(store.resolve(name))
    if info is None:
        raise _missing(store, name)
    return str(info.metadata.get(VERSION_OF) or info.name)


def collection_versions(store: DocumentStore, name: str) -> list[CollectionVersion]:
    """Every version of ``name`` (a collection, or a version of one), oldest first, with the current one marked."""
    base = base_name(store, name)
    current = store.resolve(base)
    infos = [i for i in store.list_collections() if i.name == base or i.metadata.get(VERSION_OF) == base]
    if not any(i.name == base for i in infos):
        raise _missing(store, base)
    return sorted((_version(base, i, current) for i in infos), key=lambda v: v.version)


def switch_collection(store: DocumentStore, name: str, version: int) -> CollectionVersion:
    """Make ``version`` of ``name`` the current one (one pointer write); return it.

    Every reader that names ``name`` (searches, RAG routes, ingestion) uses that version and its
    embedding model from its next call. Raises :class:`NotFound` listing the versions that exist.
    """
    versions = collection_versions(store, name)
    chosen = next((v for v in versions if v.version == version), None)
    if chosen is None:
        raise NotFound(
            f"{versions[0].name!r} has no version {version} (versions: {', '.join(str(v.version) for v in versions)}).",
            hint=f"List them with `aiestack collections versions {versions[0].name}`.",
        )
    store.set_pointer(chosen.name, chosen.collection)
    return _version(chosen.name, _require(store, chosen.collection), chosen.collection)


async def reindex_collection(
    store: DocumentStore,
    name: str,
    embeddings: EmbeddingModel,
    *,
    lineage: Mapping[str, Any] | None = None,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> ReindexReport:
    """Embed the chunks of ``name``'s current version with ``embeddings`` into a new version (not made current).

    A version of ``name`` already embedded by the same model that is unfinished (an interrupted run)
    is completed instead of starting another one. Raises :class:`InvalidRequest` when the check at
    the end finds the new version different from its source.
    """
    started = time.perf_counter()
    base = base_name(store, name)
    source = _require(store, store.resolve(base))
    versions = collection_versions(store, base)
    dim = embeddings.dim or len((await embeddings.embed(["dimension probe"]))[0])
    resumable = [
        v for v in versions
        if v.embedding_model == embeddings.name and v.collection != source.name and v.documents < source.documents
    ]
    if resumable:
        target = resumable[-1].collection
    else:
        number = max(v.version for v in versions) + 1
        target = f"{base}.v{number}"
        meta = {VERSION_OF: base, "version": number, "source": source.name, "lineage": dict(lineage or {})}
        await asyncio.to_thread(
            store.create_collection, target, tenant=source.tenant, embedding_model=embeddings.name, dim=dim, metadata=meta
        )
    wanted = await asyncio.to_thread(store.documents, source.name)
    present = {d.source: d.id for d in await asyncio.to_thread(store.documents, target)}
    todo = [d.source for d in wanted if present.get(d.source) != d.id]
    embedded = chunks = 0
    bulk = store.bulk_load(target, len(todo))  # PostgreSQL builds the new version's HNSW index once, at the end
    await asyncio.to_thread(bulk.__enter__)
    try:
        for start in range(0, len(todo), batch):
            items = await asyncio.to_thread(store.read_documents, source.name, todo[start : start + batch])
            texts = [c.text for _, cs, _ in items for c in cs]
            vectors = await embeddings.embed(texts) if texts else []
            if len(vectors) != len(texts):
                raise InvalidRequest(f"The embedding model returned {len(vectors)} vectors for {len(texts)} texts.")
            out, offset = [], 0
            for document, cs, _ in items:
                out.append((document, cs, vectors[offset : offset + len(cs)]))
                offset += len(cs)
            embedded += sum(await asyncio.to_thread(store.put_documents, target, out))
            chunks += len(texts)
            if progress is not None:
                progress(min(start + batch, len(todo)), len(todo))
    finally:
        await asyncio.shield(asyncio.to_thread(bulk.__exit__, None, None, None))
    await asyncio.to_thread(_verify, store, source.name, target, batch)
    version = _version(base, _require(store, target), store.resolve(base))
    return ReindexReport(version, embedded, len(wanted) - len(todo), chunks, time.perf_counter() - started)


def _verify(store: DocumentStore, source: str, target: str, batch: int) -> None:
    before, after = _require(store, source), _require(store, target)
    if (before.documents, before.chunks) != (after.documents, after.chunks):
        raise InvalidRequest(
            f"The new version {target!r} holds {after.documents} documents and {after.chunks} chunks, "
            f"{source!r} {before.documents} and {before.chunks}.",
            hint="Run the re-index again (it resumes); documents ingested during it make the counts differ.",
        )
    if collection_checksum(store, source, batch=batch, vectors=False) != collection_checksum(store, target, batch=batch, vectors=False):
        raise InvalidRequest(
            f"The new version {target!r} does not hold the same chunks as {source!r}.",
            hint="A document changed during the re-index: run it again.",
        )


def _version(base: str, info: CollectionInfo, current: str) -> CollectionVersion:
    meta = info.metadata
    number = int(meta.get("version", 1)) if meta.get(VERSION_OF) == base else 1
    return CollectionVersion(
        name=base,
        version=number,
        collection=info.name,
        embedding_model=info.embedding_model,
        dim=info.dim,
        documents=info.documents,
        chunks=info.chunks,
        created_at=info.created_at,
        current=info.name == current,
        lineage=dict(meta.get("lineage") or {}),
    )


def _require(store: DocumentStore, name: str) -> CollectionInfo:
    info = store.get_collection(name)
    if info is None:
        raise _missing(store, name)
    return info


def _missing(store: DocumentStore, name: str) -> NotFound:
    known = ", ".join(c.name for c in store.list_collections()) or "none yet"
    return NotFound(
        f"The collection {name!r} does not exist (collections: {known}).",
        hint=f"Create it with: aiestack ingest PATH --collection {name}",
    )
