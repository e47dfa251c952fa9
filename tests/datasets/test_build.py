"""Building dataset versions from exchanges, feedback, files, eval suites and conversation exports;
then diffing and exporting them. Every row must keep its lineage."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from aiestack.datasets import (
    ExchangeSelection,
    build_dataset,
    diff_versions,
    export_dataset,
    from_conversations,
    from_exchanges,
    from_file,
    from_suite,
    iter_rows,
    resolve,
)
from aiestack.errors import ConfigError
from aiestack.feedback import explicit_feedback
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR

pytestmark = pytest.mark.unit

T0 = 1_760_000_000.0
REPO = Path(__file__).parents[2]


def exchange(i: int, question: str, answer: str | None, **changes: Any) -> ExchangeRecord:
    request: dict[str, Any] = {"model": "m", "params": {}}
    if answer is not None:
        request["messages"] = [{"role": "user", "parts": [{"type": "text", "content": question}]}]
    fields: dict[str, Any] = {"id": f"ex_{i}", "created_at": T0 + i, "model": "m", "outcome": "ok", "route": "help",
                              "request": request, "response": answer}
    fields.update(changes)
    return ExchangeRecord(**fields)


@pytest.fixture
def store() -> MemoryExchangeStore:
    store = MemoryExchangeStore()
    store.write_exchanges([
        exchange(1, "2+2?", "4", attributes={PROMPT_NAME_ATTR: "calc", PROMPT_VERSION_ATTR: 1}),
        exchange(2, "Capital of France?", "Lyon", attributes={PROMPT_NAME_ATTR: "calc", PROMPT_VERSION_ATTR: 2}),
        exchange(3, "Your card number?", "[REDACTED]", guard_action="redact"),
        exchange(4, "Secret?", None),  # stored without content
        exchange(5, "Blocked?", "", outcome="blocked", guard_action="block"),
        exchange(6, "Cached?", "4", outcome="cached", cached=True),
        exchange(7, "Other route?", "Yes", route="other"),
        exchange(8, "3+3?", "6", tenant="acme"),
    ])
    return store


def texts(built: Any) -> list[str]:
    return [r.data["messages"][-2]["content"] for r in built.rows]


def test_exchanges_become_chat_rows_oldest_first_with_lineage(store: MemoryExchangeStore) -> None:
    built = from_exchanges(store, ExchangeSelection())
    assert texts(built) == ["2+2?", "Capital of France?", "Your card number?", "Other route?", "3+3?"]
    assert built.skipped == {"no stored content": 1}  # blocked and cache-answered ones are never rows
    first = built.rows[0]
    assert first.data == {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    assert first.lineage == {"exchange_id": "ex_1", "route": "help", "model": "m", "prompt": "calc", "prompt_version": 1}


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (ExchangeSelection(route="other"), ["Other route?"]),
        (ExchangeSelection(tenant="acme"), ["3+3?"]),
        (ExchangeSelection(guard="none"), ["2+2?", "Capital of France?", "Other route?", "3+3?"]),
        (ExchangeSelection(guard="redact"), ["Your card number?"]),
        (ExchangeSelection(prompt="calc", prompt_version=2), ["Capital of France?"]),
        (ExchangeSelection(since=T0 + 2, until=T0 + 7.5), ["Capital of France?", "Your card number?", "Other route?"]),
        (ExchangeSelection(limit=2), ["Other route?", "3+3?"]),  # the newest two, in time order
    ],
)
def test_exchange_filters(store: MemoryExchangeStore, selection: ExchangeSelection, expected: list[str]) -> None:
    assert texts(from_exchanges(store, selection)) == expected


def test_feedback_selects_rows_and_corrections_replace_answers(store: MemoryExchangeStore) -> None:
    one, two = store.get_exchange("ex_1"), store.get_exchange("ex_2")
    assert one is not None and two is not None
    good = explicit_feedback(one, thumbs="up", now=T0 + 20)
    fixed = explicit_feedback(two, rating=2, correction="Paris", now=T0 + 21)
    store.write_feedback([good, fixed])
    built = from_exchanges(store, ExchangeSelection(min_feedback=0.75))
    assert [r.data["messages"][-1]["content"] for r in built.rows] == ["4", "Paris"]
    assert built.rows[0].lineage["feedback_ids"] == [good.id]
    assert built.rows[1].lineage["source"] == "correction" and built.rows[1].lineage["exchange_id"] == "ex_2"
    assert texts(from_exchanges(store, ExchangeSelection(min_feedback=0.75, route="other"))) == []
    pairs = from_exchanges(store, ExchangeSelection(), kind="preference")
    assert [(r.data["chosen"][0]["content"], r.data["rejected"][0]["content"]) for r in pairs.rows] == [("Paris", "Lyon")]
    assert pairs.rows[0].lineage["feedback_ids"] == [fixed.id]


def test_versions_are_content_hashed_diffed_and_exported(store: MemoryExchangeStore) -> None:
    v1, created = build_dataset(store, "help", from_exchanges(store, ExchangeSelection(route="help")))
    assert created and v1.ref == "help@1" and v1.source["filters"] == {"route": "help"}
    assert v1.source["skipped"] == {"no stored content": 1}
    again, created = build_dataset(store, "help", from_exchanges(store, ExchangeSelection(route="help")))
    assert not created and again == v1  # the same rows: no new version
    store.write_exchanges([exchange(9, "5+5?", "10")])
    v2, created = build_dataset(store, "help", from_exchanges(store, ExchangeSelection(route="help", guard="none")))
    assert created and v2.version == 2 and resolve(store, "help") == v2 and resolve(store, "help@1") == v1
    change = diff_versions(store, v1, v2)
    assert [r.lineage["exchange_id"] for r in change.added] == ["ex_9"]
    assert [r.lineage["exchange_id"] for r in change.removed] == ["ex_3"] and change.unchanged == 3
    out = io.StringIO()
    assert export_dataset(store, v2, out, "openai") == 4
    assert json.loads(out.getvalue().splitlines()[0]) == {
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    }
    out = io.StringIO()
    export_dataset(store, v2, out, "hf", lineage=True)
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["lineage"]["exchange_id"] == "ex_9" and len(line["id"]) == 64 and "messages" in line
    with pytest.raises(KeyError, match="versions 1, 2"):
        resolve(store, "help@7")
    with pytest.raises(ValueError, match="no preference pairs"):
        export_dataset(store, v2, io.StringIO(), "preference")


def test_preference_exports_in_openai_dpo_and_trl_shapes(store: MemoryExchangeStore) -> None:
    version, _ = store.push_dataset(
        "prefs", "preference",
        from_exchanges_pairs(), created_at=T0,
    )
    out = io.StringIO()
    export_dataset(store, version, out, "openai")
    assert json.loads(out.getvalue()) == {
        "input": {"messages": [{"role": "user", "content": "2+2?"}]},
        "preferred_output": [{"role": "assistant", "content": "4"}],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
    }
    for fmt in ("hf", "preference"):
        out = io.StringIO()
        export_dataset(store, version, out, fmt)  # type: ignore[arg-type]
        assert set(json.loads(out.getvalue())) == {"prompt", "chosen", "rejected"}


def from_exchanges_pairs() -> list[Any]:
    from aiestack.datasets import DatasetRow, normalise

    return [DatasetRow(normalise({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "preference"), {"file": "x", "line": 1})]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"prompt": "2+2?", "completion": "4"}, {"question": "Capital of France?", "answer": "Paris"}]


def test_files_of_every_format_give_the_same_rows(tmp_path: Path) -> None:
    jsonl = from_file(_write(tmp_path / "d.jsonl", ROWS))
    as_json = tmp_path / "d.json"
    as_json.write_text(json.dumps(ROWS), encoding="utf-8")
    with (tmp_path / "d.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows([{"question": "2+2?", "answer": "4"}, {"question": "Capital of France?", "answer": "Paris"}])
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    columns = ["prompt", "completion", "question", "answer"]  # every row has every column; empty cells are absent
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in ROWS]), tmp_path / "d.parquet")
    for other in (from_file(as_json), from_file(tmp_path / "d.csv"), from_file(tmp_path / "d.parquet")):
        assert [r.data for r in other.rows] == [r.data for r in jsonl.rows]
    assert jsonl.kind == "chat" and [r.lineage for r in jsonl.rows] == [{"file": "d.jsonl", "line": 1}, {"file": "d.jsonl", "line": 2}]
    assert from_file(tmp_path / "d.csv").rows[0].lineage == {"file": "d.csv", "line": 2}  # line 1 is the header


def test_a_bad_file_row_names_its_line_or_is_counted(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.jsonl", [ROWS[0], {"text": "no answer here"}, ROWS[1]])
    with pytest.raises(ConfigError) as caught:
        from_file(path)
    assert "bad.jsonl:2" in str(caught.value) and "--skip-invalid" in (caught.value.hint or "")
    built = from_file(path, skip_invalid=True)
    assert len(built.rows) == 2 and sum(built.skipped.values()) == 1
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.jsonl:2"):
        from_file(tmp_path / "broken.jsonl")
    with pytest.raises(ConfigError, match="does not exist"):
        from_file(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match=r"\.txt"):
        from_file(_write(tmp_path / "d.txt", ROWS))


def test_a_suite_gives_its_rendered_prompts_answered_by_the_references() -> None:
    built = from_suite(REPO / "examples" / "evals" / "gsm8k.yaml", limit=3)
    assert len(built.rows) == 3 and built.source["suite"] == "gsm8k-mini"
    first = built.rows[0]
    assert first.data["messages"][0]["role"] == "user" and "Question:" in first.data["messages"][0]["content"]
    assert "####" in first.data["messages"][-1]["content"]  # the reference answer
    assert first.lineage == {"suite": "gsm8k-mini", "example_id": first.lineage["example_id"]}


def test_conversation_exports_become_rows_without_storing_anything() -> None:
    built = from_conversations(REPO / "tests" / "feedback" / "fixtures" / "chatgpt_conversations.json")
    assert built.rows and built.source["export"] == "chatgpt"
    assert all(r.data["messages"][-1]["role"] == "assistant" for r in built.rows)
    assert all(r.lineage["export"] == "chatgpt" and r.lineage["exchange_id"] for r in built.rows)


def test_rows_stream_in_pages(store: MemoryExchangeStore) -> None:
    rows = [from_exchanges_pairs()[0].__class__({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]})
            for i in range(2500)]
    version, _ = store.push_dataset("big", "chat", rows, created_at=T0)
    assert [r.data["messages"][0]["content"] for r in iter_rows(store, version)] == [f"q{i}" for i in range(2500)]


def test_rated_rag_exchanges_keep_the_passages_their_answers_cite_as_sources() -> None:
    from aiestack.context.stage import RAG_COLLECTION, RAG_HITS
    from aiestack.datasets.export import qrels_lines

    hits = [{"chunk_id": f"ch_{n}", "document_id": f"doc_{n}", "source": f"{n}.md", "score": 1.0, "retriever": "bm25"}
            for n in (1, 2, 3)]
    store = MemoryExchangeStore()
    store.write_exchanges([
        exchange(1, "How do I reset it?", "Hold the button [2], then wait [3].", attributes={RAG_HITS: hits, RAG_COLLECTION: "manual"}),
        exchange(2, "Warranty?", "Two years.", attributes={RAG_HITS: hits, RAG_COLLECTION: "manual"}),  # cites nothing
        exchange(3, "Plain chat", "Hello [1]"),  # no retrieval
    ])
    one = store.get_exchange("ex_1")
    assert one is not None
    store.write_feedback([explicit_feedback(one, thumbs="up", now=T0 + 20)])
    rated = from_exchanges(store, ExchangeSelection(min_feedback=0.75))
    assert [r.data.get("sources") for r in rated.rows] == [[
        {"chunk_id": "ch_2", "document_id": "doc_2", "source": "2.md", "collection": "manual"},
        {"chunk_id": "ch_3", "document_id": "doc_3", "source": "3.md", "collection": "manual"},
    ]]
    assert [(q["query"], q["corpus_id"], q["chunk_id"]) for q in qrels_lines(rated.rows[0])] == [
        ("How do I reset it?", "doc_2", "ch_2"), ("How do I reset it?", "doc_3", "ch_3")]
    every = from_exchanges(store, ExchangeSelection())
    assert [bool(r.data.get("sources")) for r in every.rows] == [True, False, False]


def test_diff_names_the_copy_curation_removed(store: MemoryExchangeStore, tmp_path: Path) -> None:
    """Two copies of one row have one id: the diff names the copy that is gone (line 3, the
    duplicate exact dedup removed), not the first one, which the curated version still holds."""
    from aiestack.datasets.curate import ExactDedup, curate

    rows = [{"question": "Q one?", "answer": "A"}, {"question": "Q two?", "answer": "B"}, {"question": "Q one?", "answer": "A"}]
    v1, _ = build_dataset(store, "dups", from_file(_write(tmp_path / "d.jsonl", rows)))
    v2, _, _ = curate(store, v1, [ExactDedup()])
    change = diff_versions(store, v1, v2)
    assert [r.lineage["line"] for r in change.removed] == [3] and change.added == () and change.unchanged == 2
    back = diff_versions(store, v2, v1)
    assert [r.lineage["line"] for r in back.added] == [3] and back.removed == ()


def test_building_again_what_the_newest_version_was_curated_from_adds_nothing(store: MemoryExchangeStore, tmp_path: Path) -> None:
    """build → curate → build the same rows → curate: the second round returns @1 and @2 (it made
    @3 and @4, copies of them); rows that differ still make a new version, and so does building
    @1's rows again once a later, different build is the newest's origin."""
    from aiestack.datasets.curate import ExactDedup, curate

    rows = [{"question": "Q one?", "answer": "A"}, {"question": "Q two?", "answer": "B"}, {"question": "Q one?", "answer": "A"}]
    path = _write(tmp_path / "d.jsonl", rows)
    v1, _ = build_dataset(store, "loop", from_file(path))
    v2, _, _ = curate(store, v1, [ExactDedup()])
    v2b, _, _ = curate(store, v2, [ExactDedup()])  # curating the curated version changes nothing
    assert v2b == v2
    again, created = build_dataset(store, "loop", from_file(path))
    assert (again, created) == (v1, False)
    curated, created, _ = curate(store, again, [ExactDedup()])
    assert (curated, created) == (v2, False)
    assert [v.version for v in store.dataset_versions("loop")] == [1, 2] and resolve(store, "loop") == v2
    v3, created = build_dataset(store, "loop", from_file(_write(tmp_path / "e.jsonl", rows[:1])))
    assert created and v3.version == 3
    curate(store, v3, [ExactDedup()])  # equal to @3: no new version, @3 stays the newest
    v4, created = build_dataset(store, "loop", from_file(path))
    assert created and v4.version == 4 and resolve(store, "loop") == v4  # @1's rows again: newest now, as asked
