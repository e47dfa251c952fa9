"""Ingestion: incremental by content hash, replace on change, prune, failures reported, crash-safe, batched."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aiestack.context.chunking import RegexTokenizer
from aiestack.context.contextual import Contextualizer, display_text, window
from aiestack.context.ingest import IngestOptions, Progress, expand, ingest
from aiestack.context.urls import URLPolicy
from aiestack.errors import InvalidRequest, PermissionDenied, ProviderUnavailable
from aiestack.models.fake import FakeModel
from aiestack.stores.context_cache_memory import MemoryContextCache
from aiestack.stores.documents_memory import MemoryDocumentStore

pytestmark = pytest.mark.unit


class FakeEmbeddings:
    """Deterministic 8-dimensional vectors; records each call; fails once ``fail_after`` texts were embedded."""

    name = "fake-emb"
    dim = 8

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_after = fail_after
        self.embedded = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.fail_after is not None and self.embedded + len(texts) > self.fail_after:
            raise ProviderUnavailable("the embedding server went away", provider="fake")
        self.calls.append(list(texts))
        self.embedded += len(texts)
        out = []
        for t in texts:
            h = hashlib.sha256(t.encode()).digest()
            out.append([b / 255 for b in h[:8]])
        return out

    async def aclose(self) -> None:
        return None


@pytest.fixture
def store() -> Iterator[MemoryDocumentStore]:
    s = MemoryDocumentStore()
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "guide.md").write_text(
        "# Guide\n\n## Install\n\nRun pip install aiestack.\n\n## Use\n\nAsk it.\n", encoding="utf-8"
    )
    (root / "notes.txt").write_text("Plain notes about tea. Green tea at 80 degrees.", encoding="utf-8")
    (root / "page.html").write_text(
        "<h1>Page</h1><p>Some html text.</p><script>x()</script>", encoding="utf-8"
    )
    (root / "sub" / "tool.py").write_text('def tool():\n    """A tool."""\n    return 1\n', encoding="utf-8")
    (root / "sub" / "records.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": f"r{i}", "title": f"Record {i}", "text": f"Body of record {i}."})
            for i in range(3)
        ),
        encoding="utf-8",
    )
    (root / "broken.json").write_text("{not json", encoding="utf-8")
    (root / ".hidden.md").write_text("# hidden", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


OPTS = IngestOptions(tokenizer=RegexTokenizer())
N_DOCS = 7  # guide, notes, page, tool, three records


async def test_a_directory_is_ingested_and_a_broken_file_is_reported_not_fatal(
    store: MemoryDocumentStore, corpus: Path
) -> None:
    emb = FakeEmbeddings()
    seen: list[Progress] = []
    report = await ingest([str(corpus)], "kb", store, emb, options=OPTS, progress=seen.append)
    assert (report.added, report.updated, report.unchanged) == (N_DOCS, 0, 0)
    assert [f.source for f in report.failed] == [str((corpus / "broken.json").resolve())]
    assert "invalid JSON" in report.failed[0].reason
    docs = {
        Path(d.source.split("#")[0]).name + ("#" + d.source.split("#")[1] if "#" in d.source else "")
        for d in store.documents("kb")
    }
    assert docs == {
        "guide.md",
        "notes.txt",
        "page.html",
        "tool.py",
        "records.jsonl#r0",
        "records.jsonl#r1",
        "records.jsonl#r2",
    }
    info = store.get_collection("kb")
    assert info is not None and (info.embedding_model, info.dim, info.tenant) == ("fake-emb", 8, "default")
    assert report.chunks == info.chunks == sum(len(c) for c in emb.calls)
    assert seen[-1].written == seen[-1].total == N_DOCS and seen[-1].files_loaded == seen[-1].files == 6

    hits = store.term_search("kb", "pip install")
    assert hits and hits[0].chunk.metadata["heading_path"] == "Guide > Install"
    assert hits[0].chunk.metadata["title"] == "Guide" and hits[0].chunk.metadata["source"].endswith(
        "guide.md"
    )
    record = store.term_search("kb", "record 1")[0].chunk
    assert record.metadata["record_id"] == "r1" and record.text.startswith("Record 1")
    assert store.term_search("kb", "tool")[0].chunk.metadata["symbol"] == "tool"


async def test_re_ingesting_unchanged_files_does_nothing_and_a_changed_file_replaces_its_chunks(
    store: MemoryDocumentStore, corpus: Path
) -> None:
    await ingest([str(corpus)], "kb", store, FakeEmbeddings(), options=OPTS)
    version = store.get_collection("kb").version  # type: ignore[union-attr]
    emb = FakeEmbeddings()
    again = await ingest([str(corpus)], "kb", store, emb, options=OPTS)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, N_DOCS, 0)
    assert emb.calls == [] and store.get_collection("kb").version == version  # type: ignore[union-attr]

    guide = str((corpus / "guide.md").resolve())
    [old] = store.documents("kb", source=guide)
    (corpus / "guide.md").write_text("# Guide\n\nEverything changed: use conda.\n", encoding="utf-8")
    changed = await ingest([str(corpus)], "kb", store, FakeEmbeddings(), options=OPTS)
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, N_DOCS - 1)
    [new] = store.documents("kb", source=guide)
    assert new.id != old.id
    assert store.term_search("kb", "pip") == [] and store.term_search("kb", "conda")


async def test_a_different_chunk_size_re_chunks_unchanged_files(
    store: MemoryDocumentStore, corpus: Path
) -> None:
    await ingest([str(corpus / "notes.txt")], "kb", store, FakeEmbeddings(), options=OPTS)
    small = IngestOptions(tokenizer=RegexTokenizer(), chunk_size=5)
    report = await ingest([str(corpus / "notes.txt")], "kb", store, FakeEmbeddings(), options=small)
    assert report.updated == 1 and report.chunks >= 2


async def test_prune_removes_documents_of_deleted_files_and_records(
    store: MemoryDocumentStore, corpus: Path
) -> None:
    await ingest([str(corpus)], "kb", store, FakeEmbeddings(), options=OPTS)
    (corpus / "notes.txt").unlink()
    rows = [json.dumps({"_id": "r0", "title": "Record 0", "text": "Body of record 0."})]
    (corpus / "sub" / "records.jsonl").write_text("\n".join(rows), encoding="utf-8")
    kept = await ingest([str(corpus)], "kb", store, FakeEmbeddings(), options=OPTS)
    assert kept.pruned == 0 and len(store.documents("kb")) == N_DOCS
    pruned = await ingest(
        [str(corpus)],
        "kb",
        store,
        FakeEmbeddings(),
        options=IngestOptions(tokenizer=RegexTokenizer(), prune=True),
    )
    assert pruned.pruned == 3 and len(store.documents("kb")) == N_DOCS - 3
    assert not store.term_search("kb", "tea")
    records = sorted(d.source.rsplit("#", 1)[1] for d in store.documents("kb") if "#" in d.source)
    assert records == ["r0"]


async def test_a_crash_mid_ingest_leaves_whole_documents_and_a_re_run_finishes(
    store: MemoryDocumentStore, tmp_path: Path
) -> None:
    for i in range(20):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"Document {i}. " + "word " * 30, encoding="utf-8")
    opts = IngestOptions(tokenizer=RegexTokenizer(), chunk_size=12, batch_chunks=6)
    broken = FakeEmbeddings(fail_after=25)
    with pytest.raises(ProviderUnavailable):
        await ingest([str(tmp_path / "*.txt")], "kb", store, broken, options=opts)
    written = store.documents("kb")
    assert 0 < len(written) < 20
    expected_chunks = len(broken.calls[0]) // 2  # each document has the same number of chunks
    assert all(d.chunks == expected_chunks for d in written)  # no half-written document
    info = store.get_collection("kb")
    assert info is not None and info.chunks == len(written) * expected_chunks

    good = FakeEmbeddings()
    report = await ingest([str(tmp_path / "*.txt")], "kb", store, good, options=opts)
    assert (report.added, report.unchanged) == (20 - len(written), len(written))
    assert len(store.documents("kb")) == 20 and good.embedded == (20 - len(written)) * expected_chunks


async def test_embeddings_are_batched_across_documents(store: MemoryDocumentStore, tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"d{i}.txt").write_text(f"Short document number {i}.", encoding="utf-8")
    emb = FakeEmbeddings()
    await ingest(
        [str(tmp_path)], "kb", store, emb, options=IngestOptions(tokenizer=RegexTokenizer(), batch_chunks=8)
    )
    assert sum(len(c) for c in emb.calls) == 30 and len(emb.calls) == 4  # 8 + 8 + 8 + 6, not 30 calls


async def test_errors_a_user_can_act_on(store: MemoryDocumentStore, corpus: Path) -> None:
    with pytest.raises(InvalidRequest, match="Nothing matched"):
        await ingest([str(corpus / "*.nothing")], "kb", store, FakeEmbeddings(), options=OPTS)
    store.create_collection("theirs", tenant="acme", embedding_model="fake-emb", dim=8)
    with pytest.raises(PermissionDenied, match="another tenant"):
        await ingest([str(corpus)], "theirs", store, FakeEmbeddings(), options=OPTS)
    store.create_collection("other-model", embedding_model="minilm", dim=8)
    with pytest.raises(InvalidRequest, match=r"minilm|fake-emb"):
        await ingest([str(corpus)], "other-model", store, FakeEmbeddings(), options=OPTS)


def test_expand_walks_directories_skips_hidden_files_and_reports_unmatched_globs(corpus: Path) -> None:
    targets, unmatched = expand(
        [str(corpus), str(corpus / "*.md"), str(corpus / "*.zzz"), "https://example.com/x.md"]
    )
    names = sorted(Path(t.source).name for t in targets if t.path)
    assert names == ["broken.json", "guide.md", "notes.txt", "page.html", "records.jsonl", "tool.py"]
    assert unmatched == [str(corpus / "*.zzz")] and targets[-1].source == "https://example.com/x.md"


async def test_contextual_retrieval_prepends_a_cached_context(
    store: MemoryDocumentStore, tmp_path: Path
) -> None:
    (tmp_path / "report.md").write_text(
        "# ACME Q2 2023\n\nRevenue grew 3%.\n\n## Costs\n\nCosts fell.\n", encoding="utf-8"
    )
    model = FakeModel().enqueue(
        ["From ACME's Q2 2023 report, on revenue.", "From ACME's Q2 2023 report, on costs."]
    )
    cache = MemoryContextCache()
    ctx = Contextualizer(model, "fake-small", cache=cache, concurrency=1)
    opts = IngestOptions(tokenizer=RegexTokenizer(), contextualizer=ctx)
    report = await ingest([str(tmp_path)], "kb", store, FakeEmbeddings(), options=opts)
    assert report.chunks == 2 and ctx.generated == 2
    assert (
        "Revenue grew 3%" in model.requests[0].messages[0].text
        and "<document>" in model.requests[0].messages[0].text
    )
    hit = store.term_search("kb", "ACME revenue")[0].chunk
    assert hit.text.startswith("From ACME's Q2 2023 report, on revenue.\n\n")
    assert hit.metadata["context"] == "From ACME's Q2 2023 report, on revenue."
    assert display_text(hit) == "# ACME Q2 2023\n\nRevenue grew 3%."

    again = await ingest([str(tmp_path)], "kb2", store, FakeEmbeddings(), options=opts)
    assert again.added == 1 and ctx.cached == 2 and len(model.requests) == 2  # served from the cache
    assert (
        store.term_search("kb2", "costs")[0].chunk.metadata["context"]
        == "From ACME's Q2 2023 report, on costs."
    )


def test_the_context_window_keeps_the_chunk_and_its_surroundings() -> None:
    doc = "a" * 1000 + "CHUNK" + "b" * 1000
    cut = window(doc, 1000, 1005, 105)
    assert "CHUNK" in cut and len(cut) <= 107 and cut.startswith("…") and cut.endswith("…")
    assert window("short", 0, 5, 100) == "short"


class _Served(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><title>Served</title><h1>Served page</h1><p>From a local server.</p></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


async def test_urls_are_refused_on_loopback_unless_allowed(store: MemoryDocumentStore) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Served)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/page"
    try:
        refused = await ingest([url], "web", store, FakeEmbeddings(), options=OPTS)
        assert refused.added == 0 and "loopback" in refused.failed[0].reason
        allowed = IngestOptions(tokenizer=RegexTokenizer(), urls=URLPolicy(allow_private=True))
        report = await ingest([url], "web", store, FakeEmbeddings(), options=allowed)
        assert report.added == 1 and not report.failed
        chunk = store.term_search("web", "local server")[0].chunk
        assert chunk.metadata["source"] == url and chunk.metadata["title"] == "Served"
    finally:
        httpd.shutdown()
        httpd.server_close()
