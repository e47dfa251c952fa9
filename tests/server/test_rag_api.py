"""RAG through the HTTP API: a route with a collection answers with [n] markers and a ``citations`` field.

The unmodified OpenAI SDK reads such answers (the extra field is ignored, and reachable through
``model_extra``); streams carry the citations on their final chunk; keys see only their tenant's
collections, the admin key sees all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from openai import OpenAI, PermissionDeniedError

from aiestack.build import Stack, build_stack
from aiestack.server.app import create_app
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings, bag_of_words_vector
from aiestack.types import Chunk, Document

from .conftest import ADMIN_KEY, Live, serve, settings

pytestmark = pytest.mark.integration

CORPUS = (
    ("docs/cats.md", "Cats", "Cats purr when they are content and sleep most of the day."),
    ("docs/tea.md", "Tea", "Green tea is brewed at 80 degrees; black tea at boiling temperature."),
    ("docs/gateway.md", "Gateway", "The gateway limits requests per minute per key."),
)


def fill(store: MemoryDocumentStore, collection: str, tenant: str) -> None:
    store.create_collection(collection, tenant=tenant, embedding_model="bag-of-words", dim=64)
    for source, title, text in CORPUS:
        doc_id = "doc_" + hashlib.sha256(source.encode()).hexdigest()[:16]
        meta = {"source": source, "title": title, "start": 0, "end": len(text)}
        chunk = Chunk("ch_" + doc_id[4:], doc_id, text, 0, meta)
        store.put_document(collection, Document(doc_id, text, source, title), [chunk], [bag_of_words_vector(text)])


def rag_app(tmp_path: Path) -> FastAPI:
    def factory() -> Stack:
        routes = {
            "docs": {"deployments": ["fake"], "collection": "kb", "rag": {"k": 2}},
            "acme-docs": {"deployments": ["fake"], "collection": "acme-kb", "rag": {"k": 1, "mode": "bm25"}},
        }
        # Guardrails off: these tests pin the RAG API itself (the context-injection guard that may drop
        # retrieved chunks is the guardrails' to test; the Context stage's hook is tested in tests/context).
        stack = build_stack(settings(tmp_path, routes=routes, guards={"enabled": False}))
        store = MemoryDocumentStore()
        fill(store, "kb", "default")
        fill(store, "acme-kb", "acme")
        stack.resources.use(documents=store)
        stack.resources.use(embeddings=BagOfWordsEmbeddings())
        return stack

    return create_app(factory)


@pytest.fixture
def rag(tmp_path: Path) -> Iterator[Live]:
    with serve(rag_app(tmp_path)) as server:
        yield server


def client(live: Live, key: str = "sk-anything") -> OpenAI:
    return OpenAI(base_url=live.base_url, api_key=key, max_retries=0, timeout=20)


def test_sdk_gets_a_cited_answer_and_the_citations(rag: Live) -> None:
    rag.fake.enqueue(["Cats purr when content [1]."])
    reply = client(rag).chat.completions.create(
        model="docs", messages=[{"role": "user", "content": "why do cats purr"}]
    )
    assert reply.choices[0].message.content == "Cats purr when content [1]."
    citations = (reply.model_extra or {})["citations"]
    assert [c["index"] for c in citations] == [1, 2]
    first = citations[0]
    assert first["source"] == "docs/cats.md" and first["title"] == "Cats" and first["cited"] is True
    assert first["chunk_id"].startswith("ch_") and first["score"] > 0
    assert first["text"].startswith("Cats purr") and (first["start"], first["end"]) == (0, len(first["text"]))
    assert citations[1]["cited"] is False
    # the model was given both sources, numbered, and the question
    prompt = rag.fake.requests[-1].messages[-1].text
    assert "[1] Cats" in prompt and "[2] " in prompt and "Question: why do cats purr" in prompt


def test_streamed_answer_has_citations_on_its_final_chunk(rag: Live) -> None:
    rag.fake.enqueue(["Brew green tea at 80 degrees [1]."])
    chunks = list(
        client(rag).chat.completions.create(
            model="docs", messages=[{"role": "user", "content": "green tea temperature"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Brew green tea at 80 degrees [1]."
    with_citations = [c for c in chunks if (c.model_extra or {}).get("citations") is not None]
    assert len(with_citations) == 1 and with_citations[0].choices[0].finish_reason == "stop"
    (first, _second) = with_citations[0].model_extra["citations"]  # type: ignore[index]
    assert first["source"] == "docs/tea.md" and first["cited"] is True


def test_a_plain_model_answer_has_no_citations_field(rag: Live) -> None:
    reply = client(rag).chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
    assert "citations" not in (reply.model_extra or {})


def test_keys_see_only_their_tenants_collections(rag: Live) -> None:
    stack = rag.stack
    _, acme = stack.keys.create(tenant="acme")
    _, globex = stack.keys.create(tenant="globex")
    question = [{"role": "user", "content": "green tea temperature"}]
    reply = client(rag, acme).chat.completions.create(model="acme-docs", messages=question)
    assert (reply.model_extra or {})["citations"][0]["source"] == "docs/tea.md"
    with pytest.raises(PermissionDeniedError) as info:
        client(rag, globex).chat.completions.create(model="acme-docs", messages=question)
    assert "another tenant" in str(info.value)
    # "kb" belongs to the default tenant: acme cannot read it either
    with pytest.raises(PermissionDeniedError):
        client(rag, acme).chat.completions.create(model="docs", messages=question)
    admin = client(rag, ADMIN_KEY).chat.completions.create(model="acme-docs", messages=question)
    assert len((admin.model_extra or {})["citations"]) == 1
