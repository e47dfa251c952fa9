"""Synthesis: questions from chunks (answerability-checked), instruction variants and an AI judge,
each synthetic row recording its generator, prompt version and what it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.datasets import DatasetRow, normalise
from aiestack.datasets.synthesis import (
    ANSWERABLE,
    JUDGE,
    QUESTION,
    VARIANT,
    judge_rows,
    synthesize_questions,
    synthesize_variants,
)
from aiestack.testing.sidecalls import ScriptedCaller
from aiestack.types import Chunk

pytestmark = pytest.mark.unit

CHUNKS = [
    Chunk(id="c1", document_id="d1", text="Aspirin inhibits the COX-1 enzyme, which lowers platelet aggregation."),
    Chunk(id="c2", document_id="d1", text="Second chunk."),
    Chunk(id="c3", document_id="d2", text="Third chunk about something else."),
]


async def test_questions_are_kept_only_when_parseable_and_answerable() -> None:
    caller = ScriptedCaller([
        json.dumps({"question": "Which enzyme does aspirin inhibit?", "answer": "COX-1"}), "Yes.",
        "I cannot write JSON",
        json.dumps({"question": "What is the weather today?", "answer": "Sunny"}), "no",
    ])
    built = await synthesize_questions(CHUNKS, caller, model="gemma", collection="papers", concurrency=1)
    (row,) = built.rows
    assert row.data["messages"] == [
        {"role": "user", "content": "Which enzyme does aspirin inhibit?"}, {"role": "assistant", "content": "COX-1"},
    ]
    assert row.data["sources"] == [{"chunk_id": "c1", "document_id": "d1", "text": CHUNKS[0].text}]
    assert row.lineage == {"generator": "gemma", "prompt": QUESTION.name, "prompt_version": QUESTION.version,
                           "method": "questions", "chunk_id": "c1", "document_id": "d1", "collection": "papers"}
    assert built.skipped == {"unparseable reply": 1, "not answerable from its chunk": 1}
    first = caller.requests[0]
    assert first.params.response_format is not None and first.params.response_format.type == "json_schema"
    assert first.metadata["cache"] == "off" and CHUNKS[0].text in first.messages[0].text
    assert "Which enzyme does aspirin inhibit?" in caller.requests[1].messages[0].text  # the check sees the question
    assert built.source["prompt"] == f"{QUESTION.name}@{QUESTION.version}" and len(QUESTION.version) == 12
    assert ANSWERABLE.version != QUESTION.version


async def test_unchecked_questions_skip_the_second_call() -> None:
    caller = ScriptedCaller([json.dumps({"question": "Q?", "answer": "A"})])
    built = await synthesize_questions(CHUNKS[:1], caller, model="m", check=False)
    assert len(built.rows) == 1 and len(caller.requests) == 1


SEED = DatasetRow(normalise({"question": "Sort [3, 1, 2] in Python.", "answer": "sorted([3, 1, 2])"}, "chat"), {"file": "seed.jsonl", "line": 1})


async def test_variants_record_their_seed_and_method() -> None:
    caller = ScriptedCaller(["Sort [3, 1, 2] in Python in descending order, without sorted().", "Use list.sort(reverse=True).",
                             "Sort [3, 1, 2] in Python.", ])
    built = await synthesize_variants([SEED], caller, model="m", methods=("constrain", "deepen"), concurrency=1)
    (row,) = built.rows
    assert row.data["messages"][0]["content"].endswith("without sorted().")
    assert row.lineage == {"generator": "m", "prompt": VARIANT.name, "prompt_version": VARIANT.version,
                           "method": "evol:constrain", "seed": SEED.id}
    assert built.skipped == {"no new instruction": 1}  # the second method gave back the seed itself
    assert "adds one concrete constraint" in caller.requests[0].messages[0].text
    with pytest.raises(ValueError, match="unknown variant method"):
        await synthesize_variants([SEED], caller, model="m", methods=("shiny",))


async def test_the_judge_keeps_rows_at_or_above_the_score() -> None:
    other = DatasetRow(normalise({"question": "2+2?", "answer": "5"}, "chat"))
    caller = ScriptedCaller(["5", "Score: 2", "I would rather not say"])
    third = DatasetRow(normalise({"question": "3+3?", "answer": "6"}, "chat"))
    kept, report = await judge_rows([SEED, other, third], caller, model="judge", min_score=4, concurrency=1)
    assert [r.id for r in kept] == [SEED.id] and kept[0].lineage["judge_score"] == 5 and kept[0].lineage["file"] == "seed.jsonl"
    assert [(r.row_id, r.reason) for r in report.removed] == [(other.id, "judge score 2"), (third.id, "no score")]
    assert report.detail["prompt"] == f"{JUDGE.name}@{JUDGE.version}"
    assert "sorted([3, 1, 2])" in caller.requests[0].messages[0].text


async def test_synthetic_questions_export_as_qrels() -> None:
    import io

    from aiestack.datasets import export_dataset
    from aiestack.stores.exchanges_memory import MemoryExchangeStore

    caller = ScriptedCaller([json.dumps({"question": "Which enzyme does aspirin inhibit?", "answer": "COX-1"})])
    built = await synthesize_questions(CHUNKS[:1], caller, model="m", check=False)
    store = MemoryExchangeStore()
    version, _ = store.push_dataset("synth", "chat", built.rows, created_at=1.0)
    out = io.StringIO()
    assert export_dataset(store, version, out, "qrels") == 1
    assert json.loads(out.getvalue()) == {"query_id": built.rows[0].id[:16], "query": "Which enzyme does aspirin inhibit?",
                                          "corpus_id": "d1", "chunk_id": "c1", "score": 1}


# --------------------------------------------------------------------------- resumable synthesis

FOUR = [Chunk(id=f"k{i}", document_id="d", text=f"Passage number {i}.") for i in range(4)]


def _qa(i: int) -> str:
    return json.dumps({"question": f"What is passage {i}?", "answer": f"Number {i}."})


async def test_an_interrupted_synthesis_resumes_doing_only_the_items_left(tmp_path: Path) -> None:
    whole = await synthesize_questions(FOUR, ScriptedCaller([_qa(i) for i in range(4)]), model="m", check=False, concurrency=1)

    first = ScriptedCaller([_qa(0), _qa(1)])  # the third call fails: the run stops after two items
    seen: list[tuple[int, int]] = []
    with pytest.raises(LookupError):
        await synthesize_questions(FOUR, first, model="m", check=False, concurrency=1, checkpoints=tmp_path,
                                   progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4)] and len(list(tmp_path.iterdir())) == 1

    other = ScriptedCaller([_qa(i) for i in range(4)])  # other inputs (another model): nothing is reused
    await synthesize_questions(FOUR, other, model="other", check=False, concurrency=1, checkpoints=tmp_path)
    assert len(other.requests) == 4

    second = ScriptedCaller([_qa(2), _qa(3)])
    seen.clear()
    resumed = await synthesize_questions(FOUR, second, model="m", check=False, concurrency=2, checkpoints=tmp_path,
                                         progress=lambda done, total: seen.append((done, total)))
    assert [r.messages[0].text.rsplit("Passage:\n", 1)[1] for r in second.requests] == ["Passage number 2.", "Passage number 3."]
    assert [(r.data, r.lineage) for r in resumed.rows] == [(r.data, r.lineage) for r in whole.rows]  # same rows, same order
    assert seen[-1] == (4, 4) and [d for d, _ in seen] == [1, 2, 3, 4]
    assert list(tmp_path.iterdir()) == []  # finished: the checkpoint is gone


async def test_an_interrupted_judge_and_variants_resume(tmp_path: Path) -> None:
    rows = [DatasetRow(normalise({"question": f"{i}+{i}?", "answer": str(2 * i)}, "chat")) for i in range(3)]
    with pytest.raises(LookupError):
        await judge_rows(rows, ScriptedCaller(["5"]), model="j", concurrency=1, checkpoints=tmp_path)
    rest = ScriptedCaller(["2", "4"])
    kept, report = await judge_rows(rows, rest, model="j", concurrency=1, checkpoints=tmp_path)
    assert len(rest.requests) == 2 and [r.id for r in kept] == [rows[0].id, rows[2].id]
    assert [r.row_id for r in report.removed] == [rows[1].id]

    with pytest.raises(LookupError):  # seed x constrain finished (both calls), seed x deepen interrupted
        await synthesize_variants([SEED], ScriptedCaller(["Sort it descending.", "sorted(x, reverse=True)", "Sort a tuple."]),
                                  model="m", methods=("constrain", "deepen"), concurrency=1, checkpoints=tmp_path)
    rest = ScriptedCaller(["Sort a tuple.", "sorted(t)"])
    built = await synthesize_variants([SEED], rest, model="m", methods=("constrain", "deepen"), concurrency=1, checkpoints=tmp_path)
    assert len(rest.requests) == 2 and [r.lineage["method"] for r in built.rows] == ["evol:constrain", "evol:deepen"]
    assert built.rows[0].data["messages"][1]["content"] == "sorted(x, reverse=True)" and list(tmp_path.iterdir()) == []
