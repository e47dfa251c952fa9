"""Conformance tests every DocumentStore backend passes, as a mixin a test suite subclasses.

Subclass in a test class whose name starts with ``Test`` and provide a ``store`` fixture that
yields a migrated, empty store (and cleans it up afterwards)::

    import pytest
    from aiestack.testing.documents import DocumentStoreConformance

    class TestMyDocumentStore(DocumentStoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            store = MyDocumentStore(tmp_path)
            store.migrate()
            yield store
            store.close()

The tests pin what the context wing relies on beyond the protocol's signatures: collections per
tenant, idempotent creation, replace-by-source and no-op re-puts, version counting, chunk order,
BM25 and cosine rankings on a small fixed corpus (chosen so that stemming or not gives the same
answer), every filter operator with its exact semantics (kinds never mix; ``ne``/``nin``/``not``
match chunks without the field), and the errors a caller can act on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from aiestack.errors import InvalidRequest, NotFound
from aiestack.stores.documents import BULK_MIN_DOCUMENTS, DocumentStore
from aiestack.types import Chunk, Document

DIM = 4
MODEL = "test-embedder"

#: (source, document id, title, [(chunk id, text, vector, metadata)])
CORPUS: tuple[tuple[str, str, str, tuple[tuple[str, str, tuple[float, ...], dict[str, Any]], ...]], ...] = (
    (
        "a.md",
        "doc-a",
        "Alpha",
        (
            ("a0", "the cat sat on the mat", (1.0, 0.0, 0.0, 0.0),
             {"lang": "en", "year": 2020, "tags": ["red", "blue"], "draft": False, "title": "Cats"}),
            ("a1", "a garden with roses and tulips", (0.9, 0.1, 0.0, 0.0),
             {"lang": "en", "year": 2022, "tags": ["blue"], "draft": False}),
        ),
    ),
    (
        "b.md",
        "doc-b",
        "Beta",
        (
            ("b0", "a quick brown fox jumps over the lazy hound", (0.0, 1.0, 0.0, 0.0),
             {"lang": "de", "year": 2021, "tags": ["green"], "draft": True}),
            ("b1", "cat cat cat food reviews", (0.0, 0.0, 1.0, 0.0),
             {"lang": "en", "year": 2019.5, "draft": True}),
        ),
    ),
    (
        "c.md",
        "doc-c",
        "Gamma",
        (
            ("c0", "unrelated text about databases", (0.0, 0.0, 0.1, 1.0),
             {"lang": "fr", "year": "2020", "tags": "reddish"}),
        ),
    ),
)
ALL_CHUNKS = frozenset(c[0] for _, _, _, chunks in CORPUS for c in chunks)


def make_document(
    source: str, doc_id: str, title: str, chunks: Sequence[tuple[str, str, Sequence[float], Mapping[str, Any]]]
) -> tuple[Document, list[Chunk], list[list[float]]]:
    document = Document(
        id=doc_id,
        text="\n".join(text for _, text, _, _ in chunks),
        source=source,
        title=title,
        metadata={"origin": "test", "size": len(chunks)},
    )
    built = [
        Chunk(id=cid, document_id=doc_id, text=text, position=i, metadata=dict(meta))
        for i, (cid, text, _, meta) in enumerate(chunks)
    ]
    return document, built, [list(vector) for _, _, vector, _ in chunks]


def fill(store: DocumentStore, name: str = "docs", tenant: str = "default") -> None:
    store.create_collection(name, tenant=tenant, embedding_model=MODEL, dim=DIM)
    for source, doc_id, title, chunks in CORPUS:
        assert store.put_document(name, *make_document(source, doc_id, title, chunks)) is True


def matching(store: DocumentStore, spec: Mapping[str, Any]) -> set[str]:
    """The chunk ids a filter selects, through vector search (every chunk has a vector) and term search."""
    by_vector = {hit.chunk.id for hit in store.vector_search("docs", [1.0, 1.0, 1.0, 1.0], k=100, filter=spec)}
    by_terms = {hit.chunk.id for hit in store.term_search("docs", "cat", k=100, filter=spec)}
    assert by_terms <= by_vector, "term search with a filter returned a chunk the filter excludes"
    assert by_terms == by_vector & {"a0", "b1"}, "term search with a filter lost a matching chunk"
    return by_vector


def cond(field: Any, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


#: (filter, the chunk ids it selects): worked out by hand from CORPUS.
FILTER_CASES: tuple[tuple[dict[str, Any], set[str]], ...] = (
    (cond("lang", "eq", "en"), {"a0", "a1", "b1"}),
    (cond("year", "eq", 2020), {"a0"}),
    (cond("year", "eq", "2020"), {"c0"}),
    (cond("draft", "eq", True), {"b0", "b1"}),
    (cond("draft", "eq", 1), set()),
    (cond("year", "eq", 2019.5), {"b1"}),
    (cond("lang", "ne", "en"), {"b0", "c0"}),
    (cond("draft", "ne", False), {"b0", "b1", "c0"}),
    (cond("missing", "eq", "x"), set()),
    (cond("missing", "ne", "x"), set(ALL_CHUNKS)),
    (cond("year", "gt", 2020), {"a1", "b0"}),
    (cond("year", "gte", 2020), {"a0", "a1", "b0"}),
    (cond("year", "lt", 2020), {"b1"}),
    (cond("year", "lte", 2020), {"a0", "b1"}),
    (cond("year", "gt", 2019.75), {"a0", "a1", "b0"}),
    (cond("lang", "gt", "de"), {"a0", "a1", "b1", "c0"}),
    (cond("lang", "lt", "en"), {"b0"}),
    (cond("lang", "lte", "en"), {"a0", "a1", "b0", "b1"}),
    (cond("year", "gte", "2020"), {"c0"}),
    (cond("lang", "in", ["de", "fr"]), {"b0", "c0"}),
    (cond("lang", "nin", ["de", "fr"]), {"a0", "a1", "b1"}),
    (cond("year", "in", [2020, 2021]), {"a0", "b0"}),
    (cond("draft", "nin", [True]), {"a0", "a1", "c0"}),
    (cond("tags", "contains", "blue"), {"a0", "a1"}),
    (cond("tags", "contains", "red"), {"a0", "c0"}),
    (cond("title", "contains", "Cat"), {"a0"}),
    (cond("title", "contains", "cat"), set()),
    (cond("source", "eq", "b.md"), {"b0", "b1"}),
    (cond("source", "in", ["a.md", "c.md"]), {"a0", "a1", "c0"}),
    (cond("source", "ne", "a.md"), {"b0", "b1", "c0"}),
    (cond("source", "gt", "a.md"), {"b0", "b1", "c0"}),
    (cond("source", "contains", "c."), {"c0"}),
    (cond("document_id", "eq", "doc-c"), {"c0"}),
    (cond("document_id", "nin", ["doc-a"]), {"b0", "b1", "c0"}),
    ({"and": [cond("lang", "eq", "en"), cond("year", "gte", 2020)]}, {"a0", "a1"}),
    ({"or": [cond("lang", "eq", "de"), cond("draft", "eq", False)]}, {"a0", "a1", "b0"}),
    ({"not": cond("lang", "eq", "en")}, {"b0", "c0"}),
    ({"not": cond("year", "gt", 2020)}, {"a0", "b1", "c0"}),
    (
        {"and": [{"or": [cond("lang", "eq", "en"), cond("lang", "eq", "fr")]}, {"not": cond("tags", "contains", "blue")}]},
        {"b1", "c0"},
    ),
    ({"not": {"or": [cond("source", "eq", "a.md"), cond("draft", "eq", True)]}}, {"c0"}),
)

BAD_FILTERS: tuple[tuple[Any, str], ...] = (
    (cond("lang", "like", "en"), "unknown op"),
    ({"field": "lang", "op": "eq"}, "missing ['value']"),
    ({"field": "lang", "op": "eq", "value": "en", "extra": 1}, "unexpected ['extra']"),
    (cond("lang", "in", "en"), "non-empty list"),
    (cond("lang", "in", []), "non-empty list"),
    (cond("lang", "eq", {"nested": 1}), "string, number or boolean"),
    (cond("lang", "eq", None), "string, number or boolean"),
    (cond(3, "eq", "en"), "field must be"),
    (cond("draft", "gt", True), "not booleans"),
    ({"and": []}, "non-empty list"),
    ({"and": [cond("lang", "eq", "en")], "or": []}, "only key"),
    ({"not": [cond("lang", "eq", "en")]}, "expected an object"),
    ("lang = en", "expected an object"),
)


class DocumentStoreConformance:
    """The behaviour every DocumentStore backend shares. Needs a ``store`` fixture."""

    # ----------------------------------------------------------------------- collections

    def test_collections_belong_to_tenants(self, store: DocumentStore) -> None:
        store.create_collection("alpha", tenant="acme", embedding_model=MODEL, dim=DIM, metadata={"k": [1, 2]})
        store.create_collection("beta", tenant="globex", embedding_model=MODEL, dim=8)
        store.create_collection("gamma", tenant="acme", embedding_model="other", dim=DIM)
        assert [c.name for c in store.list_collections()] == ["alpha", "beta", "gamma"]
        assert [c.name for c in store.list_collections(tenant="acme")] == ["alpha", "gamma"]
        assert [c.name for c in store.list_collections(tenant="globex")] == ["beta"]
        assert store.list_collections(tenant="nobody") == []
        info = store.get_collection("alpha")
        assert info is not None
        assert (info.name, info.tenant, info.embedding_model, info.dim) == ("alpha", "acme", MODEL, DIM)
        assert (info.version, info.documents, info.chunks) == (0, 0, 0)
        assert dict(info.metadata) == {"k": [1, 2]}
        assert info.created_at > 1_600_000_000
        assert store.get_collection("missing") is None

    def test_create_is_idempotent_and_a_mismatch_says_what_differs(self, store: DocumentStore) -> None:
        first = store.create_collection("docs", tenant="acme", embedding_model=MODEL, dim=DIM)
        again = store.create_collection("docs", tenant="acme", embedding_model=MODEL, dim=DIM)
        assert again == first
        for changes, word in (
            ({"tenant": "globex"}, "tenant"),
            ({"embedding_model": "other"}, "embedding model"),
            ({"dim": 8}, "dimension"),
        ):
            arguments: dict[str, Any] = {"tenant": "acme", "embedding_model": MODEL, "dim": DIM, **changes}
            with pytest.raises(InvalidRequest, match=word):
                store.create_collection("docs", **arguments)
        assert len(store.list_collections()) == 1

    def test_invalid_collection_arguments_are_refused(self, store: DocumentStore) -> None:
        for name in ("", "../escape", "a/b", "with space", "-lead"):
            with pytest.raises(InvalidRequest, match="collection name"):
                store.create_collection(name, embedding_model=MODEL, dim=DIM)
        with pytest.raises(InvalidRequest, match="dimension"):
            store.create_collection("docs", embedding_model=MODEL, dim=0)
        assert store.list_collections() == []

    def test_a_pointer_makes_a_name_resolve_to_another_collection(self, store: DocumentStore) -> None:
        fill(store)
        store.create_collection("docs.v2", embedding_model="tuned", dim=DIM)
        assert store.resolve("docs") == "docs" and store.pointers() == {}
        store.set_pointer("docs", "docs.v2")
        assert store.resolve("docs") == "docs.v2" and store.resolve("docs.v2") == "docs.v2"
        assert store.pointers() == {"docs": "docs.v2"}
        store.set_pointer("docs", "docs.v2")  # again: the same
        assert store.pointers() == {"docs": "docs.v2"}
        store.set_pointer("docs", "docs")  # back to itself: the pointer goes
        assert store.resolve("docs") == "docs" and store.pointers() == {}
        store.set_pointer("latest", "docs")  # a name that is no collection may point too
        assert store.resolve("latest") == "docs"

    def test_pointers_are_checked_one_hop_and_per_tenant(self, store: DocumentStore) -> None:
        fill(store)
        store.create_collection("docs.v2", embedding_model="tuned", dim=DIM)
        store.create_collection("docs.v3", embedding_model="tuned", dim=DIM)
        store.create_collection("theirs", tenant="globex", embedding_model=MODEL, dim=DIM)
        with pytest.raises(NotFound, match="does not exist"):
            store.set_pointer("docs", "missing")
        with pytest.raises(InvalidRequest, match="tenant"):
            store.set_pointer("docs", "theirs")
        with pytest.raises(InvalidRequest, match="Invalid collection name"):
            store.set_pointer("no such/name", "docs")
        store.set_pointer("docs", "docs.v2")
        with pytest.raises(InvalidRequest, match="one hop"):
            store.set_pointer("alias", "docs")  # docs points on: no chains
        with pytest.raises(InvalidRequest, match="one hop"):
            store.set_pointer("docs.v2", "docs.v3")  # docs points at docs.v2
        assert store.pointers() == {"docs": "docs.v2"}
        store.set_pointer("docs", "docs.v3")  # a switch is one write
        assert store.pointers() == {"docs": "docs.v3"}

    def test_dropping_a_collection_drops_the_pointers_to_and_from_it(self, store: DocumentStore) -> None:
        fill(store)
        store.create_collection("docs.v2", embedding_model="tuned", dim=DIM)
        store.set_pointer("docs", "docs.v2")
        store.set_pointer("latest", "docs.v2")
        assert store.drop_collection("docs.v2") is True
        assert store.pointers() == {} and store.resolve("docs") == "docs"
        store.create_collection("docs.v2", embedding_model="tuned", dim=DIM)
        store.set_pointer("docs", "docs.v2")
        assert store.drop_collection("docs") is True
        assert store.pointers() == {}

    def test_drop_removes_everything(self, store: DocumentStore) -> None:
        fill(store)
        fill(store, "other")
        assert store.drop_collection("docs") is True
        assert store.drop_collection("docs") is False
        assert store.get_collection("docs") is None
        with pytest.raises(NotFound, match="does not exist"):
            store.term_search("docs", "cat")
        with pytest.raises(NotFound):
            store.vector_search("docs", [1.0, 0.0, 0.0, 0.0])
        store.create_collection("docs", embedding_model=MODEL, dim=DIM)
        assert store.term_search("docs", "cat") == []
        assert store.vector_search("docs", [1.0, 0.0, 0.0, 0.0]) == []
        assert store.get_chunks("docs", ["a0"]) == []
        assert [h.chunk.id for h in store.term_search("other", "cat")] == ["b1", "a0"]

    def test_operations_on_a_missing_collection_raise_not_found(self, store: DocumentStore) -> None:
        document, chunks, vectors = make_document(*CORPUS[0])
        with pytest.raises(NotFound, match="create"):
            store.put_document("nope", document, chunks, vectors)
        with pytest.raises(NotFound):
            store.documents("nope")
        with pytest.raises(NotFound):
            store.get_chunks("nope", ["a0"])
        with pytest.raises(NotFound):
            store.delete_documents("nope", ["doc-a"])

    # ----------------------------------------------------------------------- documents

    def test_documents_and_counts(self, store: DocumentStore) -> None:
        fill(store)
        stored = store.documents("docs")
        assert [(d.source, d.id, d.title, d.chunks) for d in stored] == [
            ("a.md", "doc-a", "Alpha", 2),
            ("b.md", "doc-b", "Beta", 2),
            ("c.md", "doc-c", "Gamma", 1),
        ]
        assert all(d.collection == "docs" and d.ingested_at > 1_600_000_000 for d in stored)
        assert dict(stored[0].metadata) == {"origin": "test", "size": 2}
        assert [d.id for d in store.documents("docs", source="b.md")] == ["doc-b"]
        assert store.documents("docs", source="zzz.md") == []
        info = store.get_collection("docs")
        assert info is not None and (info.documents, info.chunks, info.version) == (3, 5, 3)

    def test_get_chunks_in_the_order_asked(self, store: DocumentStore) -> None:
        fill(store)
        chunks = store.get_chunks("docs", ["b1", "a0", "missing", "a1"])
        assert [c.id for c in chunks] == ["b1", "a0", "a1"]
        assert chunks[0] == Chunk(
            id="b1", document_id="doc-b", text="cat cat cat food reviews", position=1,
            metadata={"lang": "en", "year": 2019.5, "draft": True},
        )
        assert dict(chunks[1].metadata) == {"lang": "en", "year": 2020, "tags": ["red", "blue"], "draft": False, "title": "Cats"}
        assert store.get_chunks("docs", []) == []

    def test_put_replaces_by_source_and_identical_content_is_a_no_op(self, store: DocumentStore) -> None:
        fill(store)
        document, chunks, vectors = make_document(*CORPUS[0])
        assert store.put_document("docs", document, chunks, vectors) is False
        info = store.get_collection("docs")
        assert info is not None and info.version == 3
        replaced, new_chunks, new_vectors = make_document(
            "a.md", "doc-a2", "Alpha 2",
            [("a9", "penguins on the ice shelf", (0.0, 0.0, 0.0, 1.0), {"lang": "en"})],
        )
        assert store.put_document("docs", replaced, new_chunks, new_vectors) is True
        assert [(d.id, d.title, d.chunks) for d in store.documents("docs", source="a.md")] == [("doc-a2", "Alpha 2", 1)]
        assert store.get_chunks("docs", ["a0", "a1", "a9"]) == new_chunks
        assert [h.chunk.id for h in store.term_search("docs", "cat")] == ["b1"]
        assert [h.chunk.id for h in store.term_search("docs", "penguins")] == ["a9"]
        assert [h.chunk.id for h in store.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=100)][-1] != "a0"
        assert "a0" not in {h.chunk.id for h in store.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=100)}
        info = store.get_collection("docs")
        assert info is not None and (info.version, info.documents, info.chunks) == (4, 3, 4)

    def test_put_documents_writes_a_batch_in_one_transaction(self, store: DocumentStore) -> None:
        store.create_collection("docs", embedding_model=MODEL, dim=DIM)
        batch = [make_document(*entry) for entry in CORPUS]
        assert store.put_documents("docs", batch) == [True, True, True]
        info = store.get_collection("docs")
        assert info is not None and (info.version, info.documents, info.chunks) == (1, 3, 5)
        assert [h.chunk.id for h in store.term_search("docs", "cat")] == ["b1", "a0"]
        assert store.vector_search("docs", [0.0, 0.0, 1.0, 0.0], k=1)[0].chunk.id == "b1"
        # Idempotent: the same batch again writes nothing and leaves the version alone.
        assert store.put_documents("docs", batch) == [False, False, False]
        assert store.put_documents("docs", []) == []
        info = store.get_collection("docs")
        assert info is not None and info.version == 1
        # A source twice in one batch ends with its last version; unchanged items say False.
        first = make_document("n.md", "doc-n1", "N", [("n1", "first penguin", (0.0, 0.0, 0.0, 1.0), {})])
        second = make_document("n.md", "doc-n2", "N", [("n2", "second penguin", (0.0, 0.0, 0.0, 1.0), {})])
        assert store.put_documents("docs", [batch[0], first, second]) == [False, True, True]
        assert [(d.id, d.chunks) for d in store.documents("docs", source="n.md")] == [("doc-n2", 1)]
        assert [h.chunk.id for h in store.term_search("docs", "penguin")] == ["n2"]
        assert store.get_chunks("docs", ["n1", "n2"])[0].id == "n2"
        info = store.get_collection("docs")
        assert info is not None and (info.version, info.documents, info.chunks) == (2, 4, 6)

    def test_put_documents_is_all_or_nothing(self, store: DocumentStore) -> None:
        store.create_collection("docs", embedding_model=MODEL, dim=DIM)
        good = make_document(*CORPUS[0])
        bad_document, bad_chunks, _ = make_document(*CORPUS[1])
        with pytest.raises(InvalidRequest, match="4-dimensional"):
            store.put_documents("docs", [good, (bad_document, bad_chunks, [[1.0, 0.0]] * len(bad_chunks))])
        assert store.documents("docs") == []
        assert store.term_search("docs", "cat") == []
        info = store.get_collection("docs")
        assert info is not None and (info.version, info.chunks) == (0, 0)
        with pytest.raises(NotFound):
            store.put_documents("nope", [good])

    def test_bulk_load_keeps_every_write_searchable(self, store: DocumentStore) -> None:
        store.create_collection("docs", embedding_model=MODEL, dim=DIM)
        batch = [make_document(*entry) for entry in CORPUS]
        with store.bulk_load("docs", BULK_MIN_DOCUMENTS):  # large enough for any store to defer its index work
            assert store.put_documents("docs", batch[:2]) == [True, True]
            assert [h.chunk.id for h in store.term_search("docs", "cat")] == ["b1", "a0"]
            assert store.vector_search("docs", [0.0, 0.0, 1.0, 0.0], k=1)[0].chunk.id == "b1"
        # After the block, incremental writes and searches work as before.
        assert store.put_documents("docs", batch[2:]) == [True]
        assert store.vector_search("docs", [0.0, 0.0, 1.0, 0.0], k=1)[0].chunk.id == "b1"
        assert store.vector_search("docs", [0.0, 0.0, 0.0, 1.0], k=1)[0].chunk.id == "c0"
        info = store.get_collection("docs")
        assert info is not None and (info.documents, info.chunks) == (3, 5)
        with pytest.raises(NotFound), store.bulk_load("nope", BULK_MIN_DOCUMENTS):
            pass

    def test_read_documents_gives_back_what_put_documents_takes(self, store: DocumentStore) -> None:
        fill(store)
        items = store.read_documents("docs", ["b.md", "nope", "a.md"])
        assert [d.source for d, _, _ in items] == ["b.md", "a.md"]
        document, chunks, vectors = items[1]
        expected, expected_chunks, expected_vectors = make_document(*CORPUS[0])
        assert (document.id, document.title, dict(document.metadata)) == (expected.id, expected.title, expected.metadata)
        assert document.text == "\n".join(c.text for c in expected_chunks)
        assert chunks == expected_chunks
        for got, sent in zip(vectors, expected_vectors, strict=True):
            norm = math.sqrt(sum(x * x for x in sent))
            assert [round(x, 6) for x in got] == [round(x / norm, 6) for x in sent]
        # Written elsewhere and read again, a document is the same, vectors bit for bit.
        store.create_collection("copy", embedding_model=MODEL, dim=DIM)
        assert store.put_documents("copy", items) == [True, True]
        again = store.read_documents("copy", ["b.md", "a.md"])
        assert [(d.id, c, [list(v) for v in vs]) for d, c, vs in again] == [(d.id, c, [list(v) for v in vs]) for d, c, vs in items]
        assert store.read_documents("docs", []) == []

    def test_delete_documents(self, store: DocumentStore) -> None:
        fill(store)
        assert store.delete_documents("docs", ["doc-b", "nope"]) == 1
        assert [d.source for d in store.documents("docs")] == ["a.md", "c.md"]
        assert store.get_chunks("docs", ["b0", "b1", "a0"])[0].id == "a0"
        assert [h.chunk.id for h in store.term_search("docs", "cat")] == ["a0"]
        assert {h.chunk.id for h in store.vector_search("docs", [0.0, 1.0, 0.0, 0.0], k=100)} == {"a0", "a1", "c0"}
        info = store.get_collection("docs")
        assert info is not None and (info.version, info.documents, info.chunks) == (4, 2, 3)
        assert store.delete_documents("docs", ["doc-b"]) == 0
        assert store.delete_documents("docs", []) == 0
        info = store.get_collection("docs")
        assert info is not None and info.version == 4

    def test_put_checks_its_arguments(self, store: DocumentStore) -> None:
        store.create_collection("docs", embedding_model=MODEL, dim=DIM)
        document, chunks, vectors = make_document(*CORPUS[0])
        with pytest.raises(InvalidRequest, match="4-dimensional"):
            store.put_document("docs", document, chunks, [[1.0, 0.0]] * len(chunks))
        with pytest.raises(InvalidRequest, match="2 chunks but 1 vectors"):
            store.put_document("docs", document, chunks, vectors[:1])
        other = Chunk(id="x", document_id="someone-else", text="x")
        with pytest.raises(InvalidRequest, match="belongs to document"):
            store.put_document("docs", document, [other], [vectors[0]])
        assert store.documents("docs") == []
        info = store.get_collection("docs")
        assert info is not None and info.version == 0

    def test_collections_are_isolated(self, store: DocumentStore) -> None:
        fill(store)
        store.create_collection("empty", embedding_model=MODEL, dim=DIM)
        assert store.term_search("empty", "cat") == []
        assert store.vector_search("empty", [1.0, 0.0, 0.0, 0.0]) == []
        assert store.documents("empty") == []
        assert store.get_chunks("empty", ["a0"]) == []

    # ----------------------------------------------------------------------- search

    def test_term_search_ranks_by_bm25(self, store: DocumentStore) -> None:
        fill(store)
        hits = store.term_search("docs", "cat")
        assert [h.chunk.id for h in hits] == ["b1", "a0"]  # three occurrences beat one
        assert all(h.retriever == "bm25" for h in hits)
        assert hits[0].score > hits[1].score > 0
        assert hits[0].chunk == store.get_chunks("docs", ["b1"])[0]
        assert [h.chunk.id for h in store.term_search("docs", "cat food")] == ["b1", "a0"]
        assert [h.chunk.id for h in store.term_search("docs", "quick fox")] == ["b0"]
        assert [h.chunk.id for h in store.term_search("docs", "roses, tulips!")] == ["a1"]
        assert [h.chunk.id for h in store.term_search("docs", "cat", k=1)] == ["b1"]
        assert store.term_search("docs", "xylophone") == []
        assert store.term_search("docs", "   ") == []

    def test_vector_search_ranks_by_cosine(self, store: DocumentStore) -> None:
        fill(store)
        hits = store.vector_search("docs", [2.0, 0.0, 0.0, 0.0], k=2)
        assert [h.chunk.id for h in hits] == ["a0", "a1"]
        assert all(h.retriever == "vector" for h in hits)
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[1].score == pytest.approx(0.9 / (0.82**0.5), abs=1e-5)
        hits = store.vector_search("docs", [0.0, 0.0, 1.0, 0.2], k=3)
        assert [h.chunk.id for h in hits][:2] == ["b1", "c0"]
        assert hits[0].score == pytest.approx(1 / (1.04**0.5), abs=1e-5)
        assert len(store.vector_search("docs", [1.0, 1.0, 1.0, 1.0], k=100)) == 5
        with pytest.raises(InvalidRequest, match="4-dimensional"):
            store.vector_search("docs", [1.0, 0.0])

    def test_k_must_be_positive(self, store: DocumentStore) -> None:
        fill(store)
        with pytest.raises(InvalidRequest, match="k must be"):
            store.term_search("docs", "cat", k=0)
        with pytest.raises(InvalidRequest, match="k must be"):
            store.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=-1)

    def test_version_grows_on_every_change(self, store: DocumentStore) -> None:
        store.create_collection("docs", embedding_model=MODEL, dim=DIM)
        versions = []
        for entry in CORPUS:
            store.put_document("docs", *make_document(*entry))
            info = store.get_collection("docs")
            assert info is not None
            versions.append(info.version)
        store.delete_documents("docs", ["doc-a"])
        info = store.get_collection("docs")
        assert info is not None
        versions.append(info.version)
        assert versions == [1, 2, 3, 4]

    # ----------------------------------------------------------------------- filters

    def test_filter_semantics(self, store: DocumentStore) -> None:
        fill(store)
        wrong = {
            str(spec): (got, expected)
            for spec, expected in FILTER_CASES
            if (got := matching(store, spec)) != expected
        }
        assert wrong == {}, "filters selecting the wrong chunks: {filter: (got, expected)}"

    def test_filtered_search_keeps_the_ranking(self, store: DocumentStore) -> None:
        fill(store)
        hits = store.vector_search("docs", [0.3, 1.0, 0.0, 0.0], k=1, filter=cond("source", "ne", "b.md"))
        assert [h.chunk.id for h in hits] == ["a1"]
        hits = store.vector_search("docs", [0.0, 0.0, 1.0, 0.2], k=2, filter=cond("lang", "in", ["fr", "de"]))
        assert [h.chunk.id for h in hits] == ["c0", "b0"]
        hits = store.term_search("docs", "cat", k=1, filter=cond("year", "gte", 2020))
        assert [h.chunk.id for h in hits] == ["a0"]

    def test_bad_filters_say_what_is_wrong(self, store: DocumentStore) -> None:
        fill(store)
        for spec, message in BAD_FILTERS:
            with pytest.raises(InvalidRequest, match="Invalid filter") as caught:
                store.term_search("docs", "cat", filter=spec)
            assert message in str(caught.value), (spec, str(caught.value))
            assert '"op": "eq"' in str(caught.value)  # the hint shows the grammar
            with pytest.raises(InvalidRequest, match="Invalid filter"):
                store.vector_search("docs", [1.0, 0.0, 0.0, 0.0], filter=spec)
