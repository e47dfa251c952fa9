"""``aiestack search``, ``aiestack ask`` and ``aiestack eval retrieval``, driven through the real CLI.

The stack's document store and embedding model are swapped for an in-memory store (shared across
the invocations of one test) and a bag-of-words embedder, so these run in milliseconds; the
end-to-end path with the real stores and models is tests/integration/test_first_run_rag.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

import aiestack.build
from aiestack.cli import build_app
from aiestack.errors import AiestackError, InvalidRequest, NotFound
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings, bag_of_words_vector
from aiestack.types import Chunk, Document

pytestmark = pytest.mark.unit

TINY_BEIR = Path(__file__).parents[1] / "context" / "data" / "beir_tiny"
CORPUS = (
    ("docs/cats.md", "Cats", "Cats purr when they are content and sleep most of the day."),
    ("docs/tea.md", "Tea", "Green tea is brewed at 80 degrees; black tea at boiling temperature."),
    ("docs/gateway.md", "Gateway", "The gateway limits requests per minute per key."),
)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, fake_config: Path) -> MemoryDocumentStore:
    store = MemoryDocumentStore()
    store.create_collection("kb", embedding_model="bag-of-words", dim=64)
    for i, (source, title, text) in enumerate(CORPUS):
        meta = {"source": source, "title": title, "start": 0, "end": len(text), "lang": "en" if i else "fr"}
        chunk = Chunk(f"ch_{i}", f"doc_{i}", text, 0, meta)
        store.put_document("kb", Document(f"doc_{i}", text, source, title), [chunk], [bag_of_words_vector(text)])
    store.close = lambda: None  # type: ignore[method-assign]  # shared by the invocations of a test
    monkeypatch.setattr(aiestack.build, "build_documents", lambda settings, extra=None: store)
    # Guardrails off: the context-injection guard's verdicts on this corpus are the guardrails' to test.
    monkeypatch.setenv("AIESTACK_GUARDS__ENABLED", "false")
    monkeypatch.setattr(aiestack.build, "build_embeddings", lambda settings, s: BagOfWordsEmbeddings())
    return store


def run(*args: str) -> tuple[int, str, str, BaseException | None]:
    result = CliRunner().invoke(build_app(), list(args))
    error = result.exception if result.exception and not isinstance(result.exception, SystemExit) else None
    if error is not None and not isinstance(error, AiestackError):
        raise error
    return result.exit_code, result.stdout, result.stderr, error


def test_search_prints_ranked_hits_with_scores_and_sources(store: MemoryDocumentStore) -> None:
    code, out, _, _ = run("search", "green tea temperature", "-c", "kb")
    assert code == 0
    positions = {s: out.find(s) for s in ("docs/tea.md", "docs/cats.md", "docs/gateway.md") if s in out}
    assert min(positions, key=lambda s: positions[s]) == "docs/tea.md"
    assert "hybrid" in out and "score" in out


def test_search_json_modes_k_and_filter(store: MemoryDocumentStore) -> None:
    for mode in ("bm25", "vector", "hybrid"):
        code, out, _, _ = run("search", "cats purr", "-c", "kb", "--mode", mode, "--k", "2", "--json")
        assert code == 0, mode
        hits = [json.loads(line) for line in out.splitlines()]
        assert 1 <= len(hits) <= 2 and hits[0]["source"] == "docs/cats.md" and hits[0]["rank"] == 1
        assert all(isinstance(h["score"], float) for h in hits)
    flt = json.dumps({"field": "lang", "op": "eq", "value": "en"})
    code, out, _, _ = run("search", "cats purr tea", "-c", "kb", "--filter", flt, "--json", "--k", "5")
    assert code == 0
    assert {json.loads(line)["source"] for line in out.splitlines()} <= {"docs/tea.md", "docs/gateway.md"}


def test_search_errors_say_what_to_do(store: MemoryDocumentStore) -> None:
    _, _, _, error = run("search", "q", "-c", "nope")
    assert isinstance(error, NotFound) and "aiestack ingest" in (error.hint or "") and "kb" in error.message
    _, _, _, error = run("search", "q", "-c", "kb", "--filter", "{not json")
    assert isinstance(error, InvalidRequest) and "--filter" in error.message
    _, _, _, error = run("search", "q", "-c", "kb", "--mode", "fuzzy")
    assert isinstance(error, InvalidRequest) and "bm25" in (error.hint or "")


def test_ask_streams_the_answer_then_numbered_sources(store: MemoryDocumentStore) -> None:
    code, out, _, _ = run("ask", "how hot should green tea be", "-c", "kb")
    assert code == 0
    answer, sources = out.split("\nSources\n")
    # the fake model echoes its prompt: the question and the numbered sources reached it
    assert "Question: how hot should green tea be" in answer and "[1] Tea" in answer
    lines = [line for line in sources.splitlines() if line.strip()]
    assert lines[0].lstrip("* ").startswith("[1] docs/tea.md")
    assert any(line.lstrip("* ").startswith("[2] ") for line in lines)


def test_eval_retrieval_on_a_tiny_beir_set(store: MemoryDocumentStore) -> None:
    code, out, _, _ = run("eval", "retrieval", "--beir", str(TINY_BEIR), "--mode", "bm25", "--json")
    assert code == 0
    (row,) = json.loads(out)
    # q1, q2 perfect; q3 finds d5 first but never d2 (see tests/context/test_retrieval_beir.py)
    assert row["mode"] == "bm25" and row["queries"] == 3
    assert row["ndcg@10"] == pytest.approx((2 + 1 / (1 + 1 / 1.5849625007)) / 3, abs=1e-6)
    assert row["recall@10"] == pytest.approx(2.5 / 3) and row["recall@100"] == pytest.approx(2.5 / 3)
    assert row["mrr@10"] == 1.0
    code, out, _, _ = run("eval", "retrieval", "--beir", str(TINY_BEIR), "--mode", "bm25", "--mode", "hybrid")
    assert code == 0 and "nDCG@10" in out and "bm25" in out and "hybrid" in out
    _, _, _, error = run("eval", "retrieval", "--beir", str(TINY_BEIR), "--split", "dev")
    assert isinstance(error, InvalidRequest) and "dev" in error.message


class LazyEmbeddings(BagOfWordsEmbeddings):
    """Loads its weights (a second) on the first embed unless ``load`` ran first, as the local models do."""

    LOAD_S = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.loaded = False

    async def load(self) -> None:
        if not self.loaded:
            await asyncio.sleep(self.LOAD_S)
            self.loaded = True

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        await self.load()
        return await super().embed(texts)


def test_search_and_eval_time_the_search_not_the_model_load(
    store: MemoryDocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiestack.build, "build_embeddings", lambda settings, s: LazyEmbeddings())
    code, out, _, _ = run("search", "cats purr", "-c", "kb", "--mode", "vector", "--local")
    assert code == 0
    (ms,) = re.findall(r"· ([\d.]+) ms ·", out)
    assert float(ms) < LazyEmbeddings.LOAD_S * 1000, out
    code, out, _, _ = run("eval", "retrieval", "--beir", str(TINY_BEIR), "--mode", "vector", "--split", "train", "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["queries"] == 1 and row["p50_ms"] < LazyEmbeddings.LOAD_S * 1000, row


def test_search_piped_shows_whole_sources(store: MemoryDocumentStore) -> None:
    # Piped, rich drew 80 columns and cut the source: "/work/wt/walk-core/docs/feed…".
    source = "/home/someone/projects/handbook/docs/operations/gateway-rate-limits-and-budgets.md"
    text = "Budgets per key reset every UTC day; rate limits count requests per minute."
    chunk = Chunk("ch_long", "doc_long", text, 0, {"source": source, "title": "Limits", "start": 0, "end": len(text)})
    store.put_document("kb", Document("doc_long", text, source, "Limits"), [chunk], [bag_of_words_vector(text)])
    code, out, _, _ = run("search", "budgets per key", "-c", "kb", "--mode", "bm25", "--local")
    assert code == 0 and source in out, out
