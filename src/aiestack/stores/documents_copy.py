"""Copy a collection from one document store to another, vectors included (no re-embedding).

:func:`copy_collection` reads documents in batches (:meth:`DocumentStore.read_documents`) and writes
each batch with one :meth:`DocumentStore.put_documents` (one transaction). It is resumable: a
document already stored in the destination with the same id is skipped without being read, so
running the copy again after an interruption finishes the job. It ends with a verification: the
document and chunk counts and a checksum (:func:`collection_checksum`) of both sides must agree.

The checksum is a SHA-256 over every document in source order: its source, id, title, metadata
and, per chunk in position order, its id, position, text, metadata and float32 vector bytes. Two
stores holding the same collection give the same checksum whatever their backends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from aiestack.errors import InvalidRequest, NotFound
from aiestack.stores.documents import DocumentItem, DocumentStore

#: Documents per read and per write transaction.
BATCH = 256


@dataclass(frozen=True, slots=True)
class CopyReport:
    collection: str
    documents: int  # in the source
    chunks: int
    copied: int  # documents written by this run
    skipped: int  # already in the destination
    removed: int  # destination documents absent from the source, deleted (prune)
    checksum: str
    verified: bool
    problem: str = ""


def collection_checksum(store: DocumentStore, collection: str, *, batch: int = BATCH, vectors: bool = True) -> str:
    """The checksum of the module docstring; ``vectors=False`` leaves the vectors out (the same chunks
    embedded by another model: a re-indexed version, :mod:`aiestack.context.versions`)."""
    digest = hashlib.sha256()
    sources = [d.source for d in store.documents(collection)]
    for start in range(0, len(sources), batch):
        for item in store.read_documents(collection, sources[start : start + batch]):
            _update(digest, item, with_vectors=vectors)
    return digest.hexdigest()


def _update(digest: hashlib._Hash, item: DocumentItem, *, with_vectors: bool = True) -> None:
    document, chunks, vectors = item
    head = [document.source, document.id, document.title, dict(document.metadata)]
    digest.update(orjson.dumps(head, option=orjson.OPT_SORT_KEYS))
    for chunk, vector in zip(chunks, vectors, strict=True):
        digest.update(orjson.dumps([chunk.id, chunk.position, chunk.text, dict(chunk.metadata)], option=orjson.OPT_SORT_KEYS))
        if with_vectors:
            digest.update(np.asarray(vector, dtype="<f4").tobytes())


def copy_collection(
    source: DocumentStore,
    destination: DocumentStore,
    collection: str,
    *,
    to: str | None = None,
    prune: bool = False,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Copy ``collection`` (as ``to``, default the same name) and verify it; see the module docstring.

    ``prune`` deletes destination documents whose source is not in the source collection (without
    it they make the verification fail: the destination would not be a copy).
    """
    if batch < 1:
        raise InvalidRequest(f"batch must be at least 1, got {batch}.", hint="Use the default (256).")
    info = source.get_collection(collection)
    if info is None:
        known = ", ".join(c.name for c in source.list_collections()) or "none"
        raise NotFound(f"The collection {collection!r} is not in the source store (collections: {known}).")
    target = to or collection
    destination.create_collection(
        target, tenant=info.tenant, embedding_model=info.embedding_model, dim=info.dim, metadata=info.metadata
    )
    wanted = source.documents(collection)
    present = {d.source: d.id for d in destination.documents(target)}
    todo = [d.source for d in wanted if present.get(d.source) != d.id]
    removed = 0
    extra = [doc_id for src, doc_id in present.items() if src not in {d.source for d in wanted}]
    if prune and extra:
        removed = destination.delete_documents(target, extra)
    copied = 0
    with destination.bulk_load(target, len(todo)):  # a large copy builds the vector index once, at the end
        for start in range(0, len(todo), batch):
            items = source.read_documents(collection, todo[start : start + batch])
            copied += sum(destination.put_documents(target, items))
            if progress is not None:
                progress(min(start + batch, len(todo)), len(todo))
    return _verify(source, destination, collection, target, copied, len(wanted) - len(todo), removed, batch)


def copy_pointers(source: DocumentStore, destination: DocumentStore, collections: Sequence[str]) -> dict[str, str]:
    """Set in ``destination`` the source's pointers (collections' current versions) among ``collections``
    (both ends copied); return them."""
    chosen = set(collections)
    copied = {name: target for name, target in source.pointers().items() if target in chosen and (name in chosen or source.get_collection(name) is None)}
    for name, target in copied.items():
        destination.set_pointer(name, target)
    return copied


def _verify(
    source: DocumentStore,
    destination: DocumentStore,
    collection: str,
    target: str,
    copied: int,
    skipped: int,
    removed: int,
    batch: int,
) -> CopyReport:
    before, after = source.get_collection(collection), destination.get_collection(target)
    assert before is not None and after is not None
    expected, got = collection_checksum(source, collection, batch=batch), collection_checksum(destination, target, batch=batch)
    problem = ""
    if (before.documents, before.chunks) != (after.documents, after.chunks):
        problem = (
            f"the source has {before.documents} documents and {before.chunks} chunks, "
            f"the destination {after.documents} and {after.chunks}"
        )
    elif expected != got:
        problem = "the checksums differ (a document changed in the source during the copy?)"
    return CopyReport(target, before.documents, before.chunks, copied, skipped, removed, expected, not problem, problem)

