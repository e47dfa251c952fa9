"""What every DocumentStore backend shares: argument checks, errors that say what to do and
vector normalisation (the analyser and BM25 are :mod:`aiestack.stores.analysis`).

Backends differ in where records and indexes live, never in what they accept or how they fail,
so the checks live here once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aiestack.errors import InvalidRequest, NotFound
from aiestack.stores.documents import CollectionInfo
from aiestack.types import Chunk, Document

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InvalidRequest(
            f"Invalid collection name {name!r}.",
            hint="Use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit (e.g. 'docs').",
        )
    return name


def check_new_collection(name: str, tenant: str, embedding_model: str, dim: int) -> None:
    check_collection_name(name)
    if not isinstance(tenant, str) or not tenant:
        raise InvalidRequest("A collection needs a non-empty tenant.", hint="Pass tenant='default' or a tenant id.")
    if not isinstance(embedding_model, str) or not embedding_model:
        raise InvalidRequest(
            "A collection needs the name of its embedding model.",
            hint="Pass embedding_model= the model that embeds its chunks (e.g. 'all-MiniLM-L6-v2').",
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 16_000:
        raise InvalidRequest(
            f"Invalid embedding dimension {dim!r} for collection {name!r}.",
            hint="Pass dim= the size of the embedding model's vectors (e.g. 384 for all-MiniLM-L6-v2).",
        )


def check_existing(info: CollectionInfo, tenant: str, embedding_model: str, dim: int) -> CollectionInfo:
    """``info`` if a create with these arguments is a no-op; InvalidRequest naming the difference."""
    differences = [
        f"{what} {theirs!r} (asked for {ours!r})"
        for what, theirs, ours in (
            ("tenant", info.tenant, tenant),
            ("embedding model", info.embedding_model, embedding_model),
            ("dimension", info.dim, dim),
        )
        if theirs != ours
    ]
    if differences:
        raise InvalidRequest(
            f"Collection {info.name!r} already exists with " + ", ".join(differences) + ".",
            hint="Use another collection name, or drop the collection first to rebuild it with the new settings.",
        )
    return info


def check_pointer(
    name: str, target: CollectionInfo | None, named: CollectionInfo | None, pointers: Mapping[str, str]
) -> None:
    """What :meth:`DocumentStore.set_pointer` checks on every backend (``pointers``: the current
    ones): a valid name, an existing target, one hop only (the target points nowhere, no other name
    points at ``name``), and one tenant for both when ``name`` is a collection too."""
    check_collection_name(name)
    if target is None:
        raise NotFound(
            "The collection to point at does not exist.",
            hint="Create it first (a new version of a collection: `aiestack finetune embeddings`).",
        )
    if target.name == name:
        return  # removing the pointer
    onward = pointers.get(target.name)
    if onward is not None:
        raise InvalidRequest(
            f"Collection {target.name!r} itself points at {onward!r}; pointers are one hop.",
            hint=f"Point {name!r} at {onward!r} directly.",
        )
    pointing = sorted(k for k, v in pointers.items() if v == name)
    if pointing:
        raise InvalidRequest(
            f"{', '.join(map(repr, pointing))} points at {name!r}; pointers are one hop.",
            hint=f"Point {pointing[0]!r} at {target.name!r} instead.",
        )
    if named is not None and named.tenant != target.tenant:
        raise InvalidRequest(
            f"Collection {name!r} belongs to tenant {named.tenant!r} and {target.name!r} to {target.tenant!r}.",
            hint="A name may only point at a collection of the same tenant.",
        )


def missing_collection(name: str) -> NotFound:
    return NotFound(
        f"Collection {name!r} does not exist.",
        hint="Create it first (DocumentStore.create_collection, or `aiestack ingest PATH --collection NAME`).",
    )


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidRequest(f"k must be a positive integer, got {k!r}.", hint="Ask for k=10 results, say.")
    return k


def check_put(
    info: CollectionInfo, document: Document, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]
) -> np.ndarray:
    """Validate a put_document call; the vectors as a float32 matrix (one row per chunk)."""
    if not document.id:
        raise InvalidRequest("A document needs an id (the hash of its content).", hint="Set Document.id.")
    if not document.source:
        raise InvalidRequest(
            f"Document {document.id!r} has no source.",
            hint="Set Document.source to its path or URL: put_document replaces documents by source.",
        )
    if len(vectors) != len(chunks):
        raise InvalidRequest(
            f"Document {document.source!r} has {len(chunks)} chunks but {len(vectors)} vectors.",
            hint="Pass exactly one embedding per chunk, in the same order.",
        )
    for chunk in chunks:
        if chunk.document_id != document.id:
            raise InvalidRequest(
                f"Chunk {chunk.id!r} belongs to document {chunk.document_id!r}, not {document.id!r}.",
                hint="Build the chunks of a document with document_id=document.id.",
            )
        if not chunk.id:
            raise InvalidRequest("A chunk needs an id (the hash of its content).", hint="Set Chunk.id.")
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(chunks), -1) if chunks else np.zeros((0, info.dim), np.float32)
    if matrix.shape[1] != info.dim:
        raise InvalidRequest(
            f"Collection {info.name!r} holds {info.dim}-dimensional vectors, got {matrix.shape[1]}.",
            hint=f"Embed with the collection's model ({info.embedding_model}), or use another collection.",
        )
    if not np.isfinite(matrix).all():
        raise InvalidRequest(
            f"Document {document.source!r} has an embedding with NaN or infinite values.",
            hint="Check the embedding model's output.",
        )
    return matrix


def check_query_vector(info: CollectionInfo, vector: Sequence[float]) -> np.ndarray:
    """The query as a unit float32 vector (zero stays zero)."""
    query = np.asarray(vector, dtype=np.float32)
    if query.ndim != 1 or query.shape[0] != info.dim:
        raise InvalidRequest(
            f"Collection {info.name!r} holds {info.dim}-dimensional vectors, got a query of shape {query.shape}.",
            hint=f"Embed the query with the collection's model ({info.embedding_model}).",
        )
    if not np.isfinite(query).all():
        raise InvalidRequest("The query vector has NaN or infinite values.", hint="Check the embedding model.")
    return normalize(query[None, :])[0]


def normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32.

    Rows already of unit length (within float32 rounding) are kept bit for bit, so a vector read
    from one store and written to another (``aiestack collections copy``) stays the same.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms = np.where(np.abs(norms - 1.0) <= 1e-6, np.float32(1.0), norms)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """What a JSON column gives back: a fresh dict of JSON values (tuples become lists)."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return copied


def chunk_fields(chunk_metadata: Mapping[str, Any], source: str, document_id: str) -> dict[str, Any]:
    """The fields a filter sees: the chunk's metadata, then the built-in source and document_id."""
    return {**chunk_metadata, "source": source, "document_id": document_id}
