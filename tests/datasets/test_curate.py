"""Curation steps: each removes exactly what it should, says why, and the result is a child version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiestack.datasets import DatasetRow, normalise
from aiestack.datasets.contamination import ContaminationCheck, EvalItem, check_rows, suite_items
from aiestack.datasets.curate import (
    ExactDedup,
    NearDedup,
    PIIScrub,
    QualityFilter,
    SemanticDedup,
    curate,
    run_steps,
)
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.embeddings import bag_of_words_vector

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
LONG = ("The quarterly report shows that revenue grew by twelve percent while operating costs fell, "
        "driven mostly by lower shipping prices and a smaller marketing budget in the second half of the year.")


def row(question: str, answer: str, **lineage: Any) -> DatasetRow:
    return DatasetRow(normalise({"question": question, "answer": answer}, "chat"), lineage)


def ids(rows: list[DatasetRow]) -> list[str]:
    return [r.data["messages"][0]["content"] for r in rows]


def test_exact_dedup_ignores_case_punctuation_and_spacing() -> None:
    rows = [row("What is 2+2?", "4"), row("what is 2 + 2", "4."), row("What is 3+3?", "6")]
    kept, report = ExactDedup().apply(rows)
    assert ids(kept) == ["What is 2+2?", "What is 3+3?"]
    assert [(r.reason, r.duplicate_of) for r in report.removed] == [("exact duplicate", rows[0].id)]
    assert report.rows_in == 3 and report.summary() == {"step": "exact", "in": 3, "removed": 1, "reasons": {"exact duplicate": 1}}


def test_near_dedup_removes_small_edits_and_keeps_different_texts() -> None:
    edited = LONG.replace("twelve", "eleven")
    different = LONG.replace("revenue grew by twelve percent while operating costs fell", "the team hired four engineers and opened an office")
    rows = [row("Summarise.", LONG), row("Summarise.", edited), row("Summarise.", different), row("Other?", "Entirely unrelated words here")]
    kept, report = NearDedup(0.7).apply(rows)
    assert [r.id for r in kept] == [rows[0].id, rows[2].id, rows[3].id]
    (removal,) = report.removed
    assert removal.row_id == rows[1].id and removal.duplicate_of == rows[0].id and 0.7 <= removal.score < 1  # type: ignore[operator]
    with pytest.raises(ValueError, match="Jaccard"):
        NearDedup(0)


def test_semantic_dedup_compares_prompts_by_cosine() -> None:
    def embed(texts: Any) -> list[list[float]]:
        return [bag_of_words_vector(t, 256) for t in texts]

    rows = [row("reset my password please", "Go to settings."), row("please reset password my", "Go to settings."), row("opening hours", "9-5")]
    kept, report = SemanticDedup(embed, 0.95).apply(rows)
    assert ids(kept) == ["reset my password please", "opening hours"]
    assert report.removed[0].reason == "semantic duplicate" and report.removed[0].duplicate_of == rows[0].id
    negated = [row("Is aspirin safe during pregnancy?", "Ask a doctor."), row("Is aspirin not safe during pregnancy?", "Ask.")]
    kept, report = SemanticDedup(embed, 0.5).apply(negated)  # close in cosine, opposite in meaning
    assert len(kept) == 2 and report.detail["kept_by_verifier"] == 1
    kept, report = SemanticDedup(embed, 0.5, verify=False).apply(negated)
    assert len(kept) == 1
    empty, nothing = SemanticDedup(embed).apply([])
    assert empty == [] and nothing.rows_in == 0 and not nothing.removed


@pytest.mark.parametrize(
    ("answer", "options", "reason"),
    [
        ("Yes", {"min_answer_words": 2}, "answer too short"),
        ("word " * 50, {"max_chars": 100}, "too long"),
        ("Die Hauptstadt von Frankreich ist Paris und sie liegt an der Seine.", {"language": "en"}, "not in en"),
        ("I think that " * 20, {}, "repetitive"),
        ("As an AI language model, I cannot browse the internet.", {}, "boilerplate"),
        ("I'm sorry, but I can't help with that request.", {}, "boilerplate"),
        ("Paris is the capital of France.", {"language": "en"}, None),
    ],
)
def test_quality_filter_reasons(answer: str, options: dict[str, Any], reason: str | None) -> None:
    kept, report = QualityFilter(**options).apply([row("Question?", answer)])
    assert [r.reason for r in report.removed] == ([reason] if reason else [])
    assert len(kept) == (0 if reason else 1)


def test_pii_scrub_masks_every_message_and_records_the_original_id() -> None:
    original = row("Mail me at jane.doe@example.com", "Sure, I will write to jane.doe@example.com today.", exchange_id="ex_1")
    clean = row("What is 2+2?", "4")
    (scrubbed, untouched), report = PIIScrub().apply([original, clean])
    assert "jane.doe@example.com" not in str(scrubbed.data) and "<EMAIL" in str(scrubbed.data)
    assert scrubbed.lineage == {"exchange_id": "ex_1", "scrubbed_from": original.id} and scrubbed.id != original.id
    assert untouched is clean and report.changed == 1 and not report.removed


QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def test_contamination_flags_verbatim_and_edited_items_not_clean_rows() -> None:
    items = [EvalItem("gsm8k", "q1", (QUESTION, "72")), EvalItem("tiny", "t1", ("capital of Peru",))]
    edited = QUESTION.replace("48", "50").replace("April", "March", 1)
    rows = [row(QUESTION, "72"), row(f"Solve: {edited}", "75"), row("How many legs do three spiders have?", "24"),
            row("Name the capital of Peru.", "Lima")]
    check = ContaminationCheck(items)
    assert [round(s, 2) for _, s in check.matches(QUESTION)] == [1.0]
    kept, report = check.apply(rows)
    assert ids(kept) == ["How many legs do three spiders have?"]
    assert [r.duplicate_of for r in report.removed] == ["gsm8k:q1", "gsm8k:q1", "tiny:t1"]
    assert report.detail["suites"] == {"gsm8k": {"rows": 2, "items": 1}, "tiny": {"rows": 1, "items": 1}}
    only_report = check_rows(rows, items)
    assert not only_report.removed and len(only_report.detail["flagged"]) == 3


def test_suite_items_read_inputs_and_references() -> None:
    items = suite_items(REPO / "examples" / "evals" / "gsm8k.yaml")
    assert len(items) == 20 and items[0].suite == "gsm8k-mini" and "####" in items[0].parts[1]


def test_curate_pushes_a_child_version_with_each_steps_summary() -> None:
    store = MemoryExchangeStore()
    rows = [row("What is 2+2?", "4", exchange_id="ex_1"), row("what is 2+2", "4", exchange_id="ex_2"),
            row("Tell me a joke", "As an AI language model, I do not tell jokes.", exchange_id="ex_3"),
            row("Capital of France?", "Paris", exchange_id="ex_4")]
    parent, _ = store.push_dataset("raw", "chat", rows, created_at=1.0)
    child, created, result = curate(store, parent, [ExactDedup(), QualityFilter()], message="clean")
    assert created and child.ref == "raw@2" and child.parent == "raw@1" and child.rows == 2
    assert child.source == {"from": "curation", "of": "raw@1", "steps": [
        {"step": "exact", "in": 4, "removed": 1, "reasons": {"exact duplicate": 1}},
        {"step": "quality", "in": 3, "removed": 1, "reasons": {"boilerplate": 1}},
    ]}
    assert [r.lineage["exchange_id"] for r in store.dataset_rows("raw", 2)] == ["ex_1", "ex_4"]
    assert [r.row_id for r in result.removed] == [rows[1].id, rows[2].id]
    into, _, _ = curate(store, parent, [ExactDedup()], into="clean-sft")
    assert into.ref == "clean-sft@1" and into.parent == "raw@1"
    assert run_steps([], [ExactDedup(), NearDedup()]).rows == []


async def test_an_interrupted_semantic_dedup_embeds_only_what_it_had_not_reached() -> None:
    """Curation resumes through the embedding cache: the vectors of the batches embedded before the
    interruption are in the store, so the rerun embeds only the rest and removes the same rows."""
    import asyncio
    from collections.abc import Sequence

    from aiestack.models.embedding_cache import CachedEmbeddings, MemoryEmbeddingCache
    from aiestack.testing.embeddings import BagOfWordsEmbeddings

    class Interrupted(BagOfWordsEmbeddings):
        def __init__(self, calls_before_failing: int | None) -> None:
            super().__init__(256)
            self.limit = calls_before_failing

        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            if self.limit is not None and len(self.calls) >= self.limit:
                raise RuntimeError("interrupted")
            return await super().embed(texts)

    rows = [row(f"question {i} about topic {i % 7}", f"answer {i % 3}") for i in range(20)]
    rows += [row(f"topic {i % 7} about {i} question", f"answer {i % 3}") for i in range(0, 20, 4)]  # reordered: duplicates
    cache, loop = MemoryEmbeddingCache(), asyncio.get_running_loop()

    def dedup(model: BagOfWordsEmbeddings, progress: Any = None) -> SemanticDedup:
        cached = CachedEmbeddings(model, cache)
        return SemanticDedup(lambda texts: asyncio.run_coroutine_threadsafe(cached.embed(list(texts)), loop).result(), 0.95,
                             batch=8, progress=progress)

    first = Interrupted(calls_before_failing=2)
    with pytest.raises(RuntimeError):
        await asyncio.to_thread(dedup(first).apply, rows)
    second, seen = Interrupted(None), []
    kept, report = await asyncio.to_thread(dedup(second, lambda done, total: seen.append((done, total))).apply, rows)
    assert seen[-1] == (2 * len(rows), 2 * len(rows)) and [d for d, _ in seen] == sorted(d for d, _ in seen)  # rows, then prompts
    done_before = {t for call in first.calls for t in call}
    done_after = [t for call in second.calls for t in call]
    assert len(done_before) == 16 and not done_before & set(done_after)  # two batches of 8, never embedded again
    assert len(done_after) == 2 * len(rows) - 16  # the rest of the rows' texts, then every prompt

    def embed(texts: Any) -> list[list[float]]:
        return [bag_of_words_vector(t, 256) for t in texts]

    expected, expected_report = SemanticDedup(embed, 0.95).apply(rows)
    assert ids(kept) == ids(expected) and report.removed == expected_report.removed and len(report.removed) == 5
