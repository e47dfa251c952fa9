"""A scratch collection for the red team's collection probe, in a stack's own document store.

:class:`StoreCollections` ingests the probe's planted documents through the ordinary ingestion path
(loader, chunker, the embedding model retrieval uses), so the attack reaches the model the way any
retrieved document would, and drops the collection when the run is over.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aiestack.context.ingest import IngestOptions, ingest
from aiestack.models.base import EmbeddingModel
from aiestack.stores.documents import DocumentStore


class StoreCollections:
    """Creates collections in ``documents`` (embedded with ``embeddings``) for ``tenant``, and drops them."""

    def __init__(self, documents: DocumentStore, embeddings: EmbeddingModel, *, tenant: str = "default") -> None:
        self._documents = documents
        self._embeddings = embeddings
        self._tenant = tenant

    async def create(self, name: str, documents: Sequence[tuple[str, str]]) -> None:
        with tempfile.TemporaryDirectory(prefix="aiestack-redteam-") as folder:
            for source, text in documents:
                path = Path(folder) / source
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            await ingest([folder], name, self._documents, self._embeddings, options=IngestOptions(tenant=self._tenant))

    async def drop(self, name: str) -> None:
        await asyncio.to_thread(self._documents.drop_collection, name)
