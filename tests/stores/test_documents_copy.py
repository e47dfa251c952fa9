"""Copying a collection between stores: vectors kept, resumable, verified by counts and a checksum."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aiestack.cli import build_app
from aiestack.stores.documents import DocumentItem, DocumentStore
from aiestack.stores.documents_copy import collection_checksum, copy_collection
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.documents_postgres import PostgresDocumentStore
from aiestack.testing.documents import fill
from aiestack.types import Chunk, Document

WORDS = ["alpha", "beta", "gamma", "delta", "protein", "cell", "cells", "running", "runs", "heart", "blood", "study", "the", "of", "and"]


def _items(count: int, seed: int = 3) -> list[DocumentItem]:
    rng = random.Random(seed)
    items: list[DocumentItem] = []
    for d in range(count):
        chunks = [
            Chunk(id=f"k{d}-{p}", document_id=f"id{d}", text=" ".join(rng.choices(WORDS, k=rng.randint(3, 30))), position=p,
                  metadata={"n": d, "tags": ["x"] if d % 2 else []})
            for p in range(rng.randint(1, 3))
        ]
        vectors = [[rng.uniform(-1, 1) for _ in range(4)] for _ in chunks]
        items.append((Document(id=f"id{d}", text="", source=f"s{d:03}.md", title=f"T{d}", metadata={"d": d}), chunks, vectors))
    return items


def _filled(store: DocumentStore, count: int = 40) -> DocumentStore:
    store.migrate()
    fill(store)
    assert all(store.put_documents("docs", _items(count)))
    return store


class _Interrupted(RuntimeError):
    pass


class _FailsAfter:
    """A destination whose put_documents fails after ``calls`` successful calls (a crash mid-copy)."""

    def __init__(self, inner: DocumentStore, calls: int) -> None:
        self._inner, self._calls = inner, calls

    def put_documents(self, collection: str, items: Sequence[DocumentItem]) -> list[bool]:
        if self._calls == 0:
            raise _Interrupted("killed")
        self._calls -= 1
        return self._inner.put_documents(collection, items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_copy_keeps_everything_and_is_verified(tmp_path: Path) -> None:
    source = _filled(EmbeddedDocumentStore(f"sqlite:///{tmp_path / 'a.db'}"))
    destination = MemoryDocumentStore()
    report = copy_collection(source, destination, "docs", batch=7)
    assert report.verified and report.problem == ""
    assert (report.documents, report.copied, report.skipped) == (43, 43, 0)
    assert report.checksum == collection_checksum(destination, "docs") == collection_checksum(source, "docs")
    for query in ("cat", "protein cells", "running heart"):
        assert [(h.chunk.id, round(h.score, 4)) for h in source.term_search("docs", query)] == [
            (h.chunk.id, round(h.score, 4)) for h in destination.term_search("docs", query)
        ]
    probe = [0.3, -0.2, 0.9, 0.1]
    assert [(h.chunk.id, h.score) for h in source.vector_search("docs", probe, k=20)] == [
        (h.chunk.id, h.score) for h in destination.vector_search("docs", probe, k=20)
    ]
    source.close()


def test_an_interrupted_copy_resumes(tmp_path: Path) -> None:
    source = _filled(MemoryDocumentStore())
    destination = EmbeddedDocumentStore(f"sqlite:///{tmp_path / 'b.db'}")
    destination.migrate()
    with pytest.raises(_Interrupted):
        copy_collection(source, _FailsAfter(destination, 2), "docs", batch=10)  # type: ignore[arg-type]
    info = destination.get_collection("docs")
    assert info is not None and info.documents == 20  # two whole batches, nothing of the third
    report = copy_collection(source, destination, "docs", batch=10)
    assert report.verified and (report.copied, report.skipped) == (23, 20)
    again = copy_collection(source, destination, "docs", batch=10)
    assert again.verified and (again.copied, again.skipped) == (0, 43)
    destination.close()


def test_extra_documents_fail_the_verification_unless_pruned() -> None:
    source = _filled(MemoryDocumentStore())
    destination = _filled(MemoryDocumentStore(), count=45)  # 5 documents the source does not have
    report = copy_collection(source, destination, "docs")
    assert not report.verified and "destination 48" in report.problem
    pruned = copy_collection(source, destination, "docs", prune=True)
    assert pruned.verified and pruned.removed == 5


@pytest.mark.integration
def test_embedded_to_postgres_ranks_the_same(tmp_path: Path, pgvector_url: str) -> None:
    source = _filled(EmbeddedDocumentStore(f"sqlite:///{tmp_path / 'c.db'}"), count=80)
    destination = PostgresDocumentStore(pgvector_url)
    destination.migrate()
    report = copy_collection(source, destination, "docs", to="moved")
    assert report.verified and report.copied == 83
    for query in ("cat", "protein cells", "running heart blood", "the study of alpha"):
        expected = source.term_search("docs", query, k=5)
        got = destination.term_search("moved", query, k=5)
        assert [round(h.score, 4) for h in got] == [round(h.score, 4) for h in expected]
    probe = [0.3, -0.2, 0.9, 0.1]
    assert [h.chunk.id for h in destination.vector_search("moved", probe, k=5)] == [
        h.chunk.id for h in source.vector_search("docs", probe, k=5)
    ]
    source.close()
    destination.close()


def test_the_cli_copies_and_verifies(tmp_path: Path) -> None:
    source_url, destination_url = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'd' / 'd.db'}"
    _filled(EmbeddedDocumentStore(source_url)).close()
    runner = CliRunner()
    result = runner.invoke(build_app(), ["collections", "copy", "--from", source_url, "--to", destination_url])
    assert result.exit_code == 0, result.output
    assert "docs: 43 documents" in result.output and "verified" in result.output
    result = runner.invoke(build_app(), ["collections", "copy", "--from", source_url, "--to", destination_url, "-c", "docs"])
    assert result.exit_code == 0 and "copied 0, already there 43" in result.output
    result = runner.invoke(build_app(), ["collections", "copy", "--from", source_url, "--to", source_url])
    assert result.exit_code != 0


def test_current_versions_are_copied_when_both_ends_are() -> None:
    from aiestack.stores.documents_copy import copy_pointers
    from aiestack.testing.documents import DIM

    source, destination = MemoryDocumentStore(), MemoryDocumentStore()
    fill(source)
    source.create_collection("docs.v2", embedding_model="tuned", dim=DIM)
    source.set_pointer("docs", "docs.v2")
    source.set_pointer("latest", "docs.v2")  # a name that is no collection
    for name in ("docs", "docs.v2"):
        copy_collection(source, destination, name)
    assert copy_pointers(source, destination, ["docs"]) == {}  # docs.v2 was not among those copied
    assert copy_pointers(source, destination, ["docs", "docs.v2"]) == {"docs": "docs.v2", "latest": "docs.v2"}
    assert destination.pointers() == {"docs": "docs.v2", "latest": "docs.v2"}
