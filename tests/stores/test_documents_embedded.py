"""The embedded DocumentStore (SQLite + tantivy + usearch): conformance, persistence, crash recovery."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aiestack.errors import NotFound, StoreError
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.stores.documents_sql import SqlRecords
from aiestack.testing.documents import DocumentStoreConformance
from aiestack.types import Chunk, Document

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once per module (migrating takes ~0.5 s): tests start from copies."""
    path = tmp_path_factory.mktemp("template") / "aiestack.db"
    store = EmbeddedDocumentStore(f"sqlite:///{path}")
    store.migrate()
    store.close()
    return path


@pytest.fixture
def url(tmp_path: Path, migrated_db: Path) -> str:
    (tmp_path / "data").mkdir()
    shutil.copyfile(migrated_db, tmp_path / "data" / "aiestack.db")
    return f"sqlite:///{tmp_path / 'data' / 'aiestack.db'}"


class TestEmbeddedDocumentStore(DocumentStoreConformance):
    @pytest.fixture
    def store(self, url: str) -> Iterator[EmbeddedDocumentStore]:
        store = EmbeddedDocumentStore(url)
        store.migrate()
        yield store
        store.close()


def test_it_implements_the_protocol(url: str) -> None:
    store = EmbeddedDocumentStore(url)
    assert isinstance(store, DocumentStore)
    store.close()


def _doc(source: str, doc_id: str, text: str, vector: list[float]) -> tuple[Document, list[Chunk], list[list[float]]]:
    chunk = Chunk(id=f"{doc_id}-0", document_id=doc_id, text=text, metadata={"source_name": source})
    return Document(id=doc_id, text=text, source=source), [chunk], [vector]


_CRASHING_WRITER = """
import os, sys
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.types import Chunk, Document

def doc(source, doc_id, text, vector):
    return Document(id=doc_id, text=text, source=source), [Chunk(id=doc_id + "-0", document_id=doc_id, text=text)], [vector]

url = sys.argv[1]
store = EmbeddedDocumentStore(url)
store.migrate()
store.create_collection("docs", embedding_model="m", dim=3)
store.put_document("docs", *doc("a.md", "a1", "aardvarks eat ants", [1.0, 0.0, 0.0]))
store.term_search("docs", "ants")  # commits the term index
store.close()

store = EmbeddedDocumentStore(url)
store.put_document("docs", *doc("b.md", "b1", "badgers dig burrows", [0.0, 1.0, 0.0]))
# The next write commits its records, then the process dies before touching the indexes.
EmbeddedDocumentStore._apply = lambda *args: os._exit(17)
store.put_document("docs", *doc("a.md", "a2", "anteaters replace aardvarks", [0.0, 0.0, 1.0]))
"""


def test_a_crash_between_the_record_commit_and_the_index_update_loses_nothing(url: str) -> None:
    crashed = subprocess.run([sys.executable, "-c", _CRASHING_WRITER, url], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 17, crashed.stderr
    store = EmbeddedDocumentStore(url)
    store.migrate()
    try:
        assert [(d.source, d.id) for d in store.documents("docs")] == [("a.md", "a2"), ("b.md", "b1")]
        assert [h.chunk.id for h in store.term_search("docs", "aardvarks")] == ["a2-0"]
        assert [h.chunk.id for h in store.term_search("docs", "ants")] == []  # the replaced text is gone
        assert [h.chunk.id for h in store.term_search("docs", "burrows")] == ["b1-0"]
        assert [h.chunk.id for h in store.vector_search("docs", [0.0, 0.0, 1.0], k=10)] == ["a2-0", "b1-0"]
        assert {h.chunk.id for h in store.vector_search("docs", [1.0, 0.0, 0.0], k=10)} == {"a2-0", "b1-0"}
    finally:
        store.close()


def test_a_failed_record_write_changes_nothing(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedDocumentStore(url)
    store.migrate()
    store.create_collection("docs", embedding_model="m", dim=3)
    store.put_document("docs", *_doc("a.md", "a1", "aardvarks eat ants", [1.0, 0.0, 0.0]))

    def fail(*args: object) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(SqlRecords, "_bump", staticmethod(fail))
    with pytest.raises(RuntimeError, match="disk full"):
        store.put_document("docs", *_doc("a.md", "a2", "anteaters", [0.0, 1.0, 0.0]))
    monkeypatch.undo()
    assert [d.id for d in store.documents("docs")] == ["a1"]
    assert [h.chunk.id for h in store.term_search("docs", "aardvarks ants anteaters")] == ["a1-0"]
    assert [h.chunk.id for h in store.vector_search("docs", [0.0, 1.0, 0.0])] == ["a1-0"]
    store.close()


def test_indexes_persist_and_a_lost_index_is_rebuilt_from_the_records(url: str, tmp_path: Path) -> None:
    store = EmbeddedDocumentStore(url)
    store.migrate()
    store.create_collection("docs", embedding_model="m", dim=3)
    for i in range(30):
        store.put_document("docs", *_doc(f"{i}.md", f"d{i}", f"word{i} common", [1.0, float(i), 0.0]))
    store.delete_documents("docs", ["d3"])
    store.close()
    index_dir = tmp_path / "data" / "indexes" / "docs"
    assert (index_dir / "vectors.usearch").is_file() and (index_dir / "tantivy").is_dir()

    reopened = EmbeddedDocumentStore(url)
    assert [h.chunk.id for h in reopened.term_search("docs", "word7")] == ["d7-0"]
    assert len(reopened.term_search("docs", "common", k=100)) == 29
    assert reopened.vector_search("docs", [1.0, 7.0, 0.0], k=1)[0].chunk.id == "d7-0"
    reopened.close()

    shutil.rmtree(index_dir)
    rebuilt = EmbeddedDocumentStore(url)
    assert [h.chunk.id for h in rebuilt.term_search("docs", "word7")] == ["d7-0"]
    assert rebuilt.term_search("docs", "word3") == []
    assert len(rebuilt.vector_search("docs", [1.0, 0.0, 0.0], k=100)) == 29
    rebuilt.close()


def test_only_sqlite_files_are_accepted() -> None:
    with pytest.raises(StoreError, match="needs a SQLite file"):
        EmbeddedDocumentStore("sqlite://")
    with pytest.raises(StoreError, match="needs a SQLite file"):
        EmbeddedDocumentStore("postgresql://localhost/db")


def test_filtered_vector_search_over_a_large_collection_is_exact(url: str) -> None:
    rng = np.random.default_rng(3)
    store = EmbeddedDocumentStore(url)
    store.migrate()
    store.create_collection("big", embedding_model="m", dim=8)
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)
    for start in range(0, 3000, 500):
        document = Document(id=f"d{start}", text="", source=f"{start}.md")
        chunks = [
            Chunk(id=f"c{i}", document_id=document.id, text=f"chunk {i}", position=i, metadata={"parity": i % 2, "i": i})
            for i in range(start, start + 500)
        ]
        store.put_document("big", document, chunks, vectors[start : start + 500].tolist())
    query = rng.normal(size=8).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    for spec, allowed in (
        ({"field": "parity", "op": "eq", "value": 1}, np.arange(3000) % 2 == 1),  # 1500 candidates: exact
        ({"field": "i", "op": "lt", "value": 2900}, np.arange(3000) < 2900),  # 2900: oversampled HNSW
    ):
        expected = [f"c{i}" for i in np.argsort(-np.where(allowed, scores, -np.inf))[:10]]
        got = [h.chunk.id for h in store.vector_search("big", query.tolist(), k=10, filter=spec)]
        assert len(got) == 10 and all(allowed[int(c[1:])] for c in got)
        assert len(set(got) & set(expected)) >= 9  # HNSW recall
    store.close()


def test_instances_see_each_others_writes_and_take_turns_writing(url: str) -> None:
    writer = EmbeddedDocumentStore(url)
    writer.migrate()
    writer.create_collection("docs", embedding_model="m", dim=3)
    writer.put_document("docs", *_doc("a.md", "a1", "aardvarks eat ants", [1.0, 0.0, 0.0]))
    reader = EmbeddedDocumentStore(url)  # another process, as far as the indexes know
    assert [h.chunk.id for h in reader.term_search("docs", "aardvarks")] == []  # the writer has not committed
    assert [h.chunk.id for h in reader.vector_search("docs", [1.0, 0.0, 0.0])] == ["a1-0"]
    writer.put_document("docs", *_doc("b.md", "b1", "badgers dig burrows", [0.0, 1.0, 0.0]))
    writer.term_search("docs", "burrows")  # the writer commits its term index
    assert {h.chunk.id for h in reader.term_search("docs", "burrows aardvarks")} == {"a1-0", "b1-0"}
    assert [h.chunk.id for h in reader.vector_search("docs", [0.0, 1.0, 0.0], k=1)] == ["b1-0"]
    writer.delete_documents("docs", ["a1"])
    assert [h.chunk.id for h in reader.vector_search("docs", [1.0, 0.0, 0.0])] == ["b1-0"]
    assert [h.chunk.id for h in reader.term_search("docs", "aardvarks")] == []
    # Writers take turns: a commit (here on the writer's next search) releases the writer lock.
    with pytest.raises(StoreError, match="one writer at a time"):
        reader.put_document("docs", *_doc("c.md", "c1", "cormorants catch fish", [0.0, 0.0, 1.0]))
    writer.term_search("docs", "aardvarks")
    assert writer.put_document("docs", *_doc("b.md", "b1", "badgers dig burrows", [0.0, 1.0, 0.0])) is False
    assert writer.delete_documents("docs", ["nothing"]) == 0  # no-ops leave the lock free
    reader.put_document("docs", *_doc("c.md", "c1", "cormorants catch fish", [0.0, 0.0, 1.0]))
    assert [h.chunk.id for h in reader.term_search("docs", "cormorants")] == ["c1-0"]
    assert [h.chunk.id for h in writer.term_search("docs", "cormorants")] == ["c1-0"]
    assert [h.chunk.id for h in writer.vector_search("docs", [0.0, 0.0, 1.0], k=1)] == ["c1-0"]
    writer.drop_collection("docs")
    with pytest.raises(NotFound):
        reader.term_search("docs", "burrows")
    reader.close()
    writer.close()
