"""Training an embedding model (AI Engineering, ch. 7): contrastive finetuning of a sentence-transformers model.

:func:`train_embeddings` finetunes a sentence-transformers model on (query, positive, hard negatives)
examples with the multiple-negatives ranking loss (MNRL, InfoNCE; sentence-transformers'
``MultipleNegativesRankingLoss``): for each query of a batch, its positive must score above every
other passage of the batch — the other queries' positives (in-batch negatives) and every mined hard
negative. Hard negatives come from the collection's own index (:mod:`aiestack.finetune.embedding_data`).

The loop is plain PyTorch around the sentence-transformers model and loss (AdamW, linear warm-up then
linear decay, gradient clipping at 1), so it needs nothing beyond ``aiestack[local]``. Batches never
hold the same passage twice (:func:`batches`): a duplicate would be a false in-batch negative.
Everything is seeded: the same examples and settings give the same model on the same machine.

CPU cost is dominated by the passages (up to ``max_seq_length`` tokens each, forward and backward):
on this project's 2-core machine, busy with other jobs (load 4-11), a step of 32 queries with one hard
negative each at 128 tokens took 14-35 s on one torch thread (docs/finetuning.md).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiestack.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: a query, a passage it should retrieve, and passages it should not."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    query_id: str = ""
    positive_id: str = ""  # the positive's document id (negatives are never a positive of the query)


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """How to train. ``max_seq_length`` None keeps the model's own (256 for all-MiniLM-L6-v2)."""

    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup: float = 0.1  # a share of the steps
    max_seq_length: int | None = None
    scale: float = 20.0  # MNRL's inverse temperature (sentence-transformers' default)
    negatives: int = 1  # hard negatives per example used (those mined beyond are ignored)
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise InvalidRequest("batch_size must be at least 2 (the loss needs in-batch negatives).", hint="Use 16-64.")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise InvalidRequest("epochs and learning_rate must be positive.", hint="E.g. epochs=1, learning_rate=2e-5.")
        if not 0 <= self.warmup < 1:
            raise InvalidRequest(f"warmup is a share of the steps in [0, 1), got {self.warmup}.", hint="Use 0.1.")
        if self.negatives < 0:
            raise InvalidRequest("negatives must be 0 or more.", hint="1 hard negative per query is a good start.")

    def describe(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class TrainReport:
    """What a training run did."""

    examples: int
    steps: int
    seconds: float
    cpu_seconds: float
    losses: tuple[float, ...] = field(default_factory=tuple)  # per step
    device: str = "cpu"

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail) if tail else math.nan


def batches(examples: Sequence[Example], batch_size: int, seed: int) -> list[list[Example]]:
    """Shuffled batches in which no passage (positive or negative) and no query appears twice.

    An example that would repeat a text of the current batch waits for a later one; a short last
    batch (fewer than 2 examples) is dropped, as the loss needs in-batch negatives.
    """
    order = list(examples)
    random.Random(seed).shuffle(order)
    out: list[list[Example]] = []
    pending = order
    while pending:
        current: list[Example] = []
        seen: set[str] = set()
        left: list[Example] = []
        for ex in pending:
            texts = {"q:" + ex.query, "p:" + ex.positive, *("p:" + n for n in ex.negatives)}
            if len(current) < batch_size and not texts & seen:
                current.append(ex)
                seen |= texts
            else:
                left.append(ex)
        if len(current) < 2:
            break
        out.append(current)
        pending = left
    return out


def train_embeddings(
    base: str | Path,
    examples: Sequence[Example],
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainReport:
    """Finetune the sentence-transformers model at ``base`` (a directory) on ``examples``; save it to ``out``.

    Synchronous and CPU-bound: async callers run it with :func:`aiestack.offload.run_cpu` or a thread.
    ``progress(step, steps, loss)`` is called after every step. Uses the GPU when torch sees one.
    """
    opts = settings or TrainSettings()
    if len(examples) < 2:
        raise InvalidRequest(
            f"Embedding training needs at least 2 examples, got {len(examples)}.",
            hint="Give it a qrels dataset with more questions (datasets synthesize, or a qrels file).",
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]

    from aiestack.native_output import quiet_native_output

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with quiet_native_output():
        model = SentenceTransformer(str(base), device=device, local_files_only=True)
    serving_length = model.max_seq_length
    if opts.max_seq_length:
        model.max_seq_length = opts.max_seq_length  # for training only: the saved model keeps its own
    loss = MultipleNegativesRankingLoss(model, scale=opts.scale)
    trimmed = [Example(e.query, e.positive, e.negatives[: opts.negatives], e.query_id, e.positive_id) for e in examples]
    epochs = max(1, math.ceil(opts.epochs))
    plan: list[list[Example]] = []
    for epoch in range(epochs):
        plan.extend(batches(trimmed, opts.batch_size, opts.seed + epoch))
    steps = min(len(plan), max(1, round(len(plan) * opts.epochs / epochs)))
    if opts.max_steps is not None:
        steps = min(steps, opts.max_steps)
    plan = plan[:steps]
    if not plan:
        raise InvalidRequest("No batch of 2 or more distinct examples could be formed.", hint="Add examples.")
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate)
    warm = int(steps * opts.warmup)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    losses: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    model.train()
    for step, batch in enumerate(plan, start=1):
        width = min(len(e.negatives) for e in batch)  # the loss takes columns: as many negatives each
        columns = [[e.query for e in batch], [e.positive for e in batch]]
        columns += [[e.negatives[i] for e in batch] for i in range(width)]
        features = [_to(tokenize(texts), device) for texts in columns]
        value = loss(features, None)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(value.detach()))
        if progress is not None:
            progress(step, steps, losses[-1])
    model.eval()
    model.max_seq_length = serving_length
    with quiet_native_output():
        model.save(str(out))
    return TrainReport(
        examples=len(examples),
        steps=len(plan),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        losses=tuple(losses),
        device=device,
    )


def _to(features: Any, device: str) -> dict[str, Any]:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in dict(features).items()}
