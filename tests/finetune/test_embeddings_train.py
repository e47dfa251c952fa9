"""Embedding training: batches without duplicates, and a tiny run that moves the trained positives up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiestack.errors import InvalidRequest
from aiestack.finetune.embeddings import Example, TrainSettings, batches, train_embeddings

PAIRS = [
    ("which metal is liquid at room temperature", "Mercury is a silvery metal that stays liquid at room temperature."),
    ("what do bees make", "Honey bees collect nectar and turn it into honey in the hive."),
    ("how far away is the moon", "The Moon orbits the Earth at an average distance of 384,400 kilometres."),
    ("who wrote hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600."),
    ("what causes tides", "Ocean tides are caused by the gravitational pull of the Moon and the Sun."),
    ("why is the sky blue", "Sunlight scattered by air molecules makes the daytime sky look blue."),
]


def test_batches_never_repeat_a_text_and_keep_every_example_once() -> None:
    shared = "the same passage"
    examples = [Example(f"q{i}", shared if i % 2 else f"p{i}", (f"n{i % 3}",)) for i in range(10)]
    out = batches(examples, batch_size=4, seed=1)
    for batch in out:
        texts = [t for e in batch for t in (e.query, e.positive, *e.negatives)]
        assert len(texts) == len(set(texts))
    placed = [e for b in out for e in b]
    assert len(placed) == len({id(e) for e in placed}) and len(placed) <= len(examples)
    assert batches(examples, 4, seed=1) == out  # seeded


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidRequest, match="batch_size"):
        TrainSettings(batch_size=1)
    with pytest.raises(InvalidRequest, match="warmup"):
        TrainSettings(warmup=1.5)


def _scores(path: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    q = model.encode([p[0] for p in PAIRS], normalize_embeddings=True)
    d = model.encode([p[1] for p in PAIRS], normalize_embeddings=True)
    return np.asarray(q @ d.T)


@pytest.mark.slow
def test_a_tiny_run_changes_the_model_and_ranks_the_trained_positives_first(tiny_st: Path, tmp_path: Path, one_thread: object) -> None:
    before = _scores(tiny_st)
    examples = [Example(q, p, (f"An unrelated note number {i} about filing taxes.",)) for i, (q, p) in enumerate(PAIRS)]
    out = tmp_path / "tuned"
    report = train_embeddings(
        tiny_st, examples, out, TrainSettings(epochs=15, batch_size=6, learning_rate=3e-3, warmup=0.0, seed=0)
    )
    after = _scores(out)
    assert report.steps == 15 and report.last_loss < report.first_loss
    assert not np.allclose(before, after)
    ranks_before = int(np.sum(before.argmax(axis=1) == np.arange(len(PAIRS))))
    ranks_after = int(np.sum(after.argmax(axis=1) == np.arange(len(PAIRS))))
    assert ranks_after == len(PAIRS) > ranks_before  # every question now finds its own passage first
    assert (out / "modules.json").is_file()
    # The saved model keeps its serving length, whatever length it trained at.
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out), device="cpu", local_files_only=True).max_seq_length == 64


def test_too_few_examples_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="at least 2 examples"):
        train_embeddings(tmp_path, [Example("q", "p")], tmp_path / "out")
