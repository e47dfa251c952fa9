"""Shared test kit for retrieval and RAG tests: a bag-of-words embedder and a small corpus in a memory store."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings, bag_of_words_vector
from aiestack.types import Chunk, Document

DIM = 64


def bow_vector(text: str) -> list[float]:
    return bag_of_words_vector(text, DIM)


class BowEmbeddings(BagOfWordsEmbeddings):
    def __init__(self) -> None:
        super().__init__(DIM, "bow")


#: (source, title, text): one chunk per document.
CORPUS: tuple[tuple[str, str, str], ...] = (
    ("docs/cats.md", "Cats", "Cats are small carnivorous mammals that purr and sleep most of the day."),
    ("docs/dogs.md", "Dogs", "Dogs are loyal companions that bark and need daily walks."),
    ("docs/tea.md", "Tea", "Green tea is brewed at 80 degrees; black tea at boiling temperature."),
    ("docs/gateway.md", "Gateway", "The gateway limits requests per minute and tokens per minute per key."),
    ("docs/rag.md", "RAG", "Retrieval augmented generation cites numbered sources in its answers."),
    ("docs/cats2.md", "More cats", "Cats purr when content and sleep up to sixteen hours a day."),
)


def chunk_of(source: str, title: str, text: str, position: int = 0) -> Chunk:
    doc_id = "doc_" + hashlib.sha256(source.encode()).hexdigest()[:16]
    cid = "ch_" + hashlib.sha256(f"{doc_id}{position}{text}".encode()).hexdigest()[:16]
    meta = {"source": source, "title": title, "position": position, "start": 0, "end": len(text)}
    return Chunk(cid, doc_id, text, position, meta)


def fill(store: MemoryDocumentStore, collection: str = "kb", *, tenant: str = "default",
         corpus: Sequence[tuple[str, str, str]] = CORPUS) -> MemoryDocumentStore:
    store.create_collection(collection, tenant=tenant, embedding_model="bow", dim=DIM)
    for source, title, text in corpus:
        chunk = chunk_of(source, title, text)
        doc = Document(id=chunk.document_id, text=text, source=source, title=title)
        store.put_document(collection, doc, [chunk], [bow_vector(text)])
    return store


def memory_store(collection: str = "kb", *, tenant: str = "default") -> MemoryDocumentStore:
    return fill(MemoryDocumentStore(), collection, tenant=tenant)
