"""Scoring an eval run's answers as a batch step: in this process, or on Ray when ``[compute]`` asks.

The per-example metrics that need no model (exact match, F1, BLEU, ROUGE, JSON, regex, retrieval,
functional correctness in the sandbox, SQL execution, ...) are pure functions of the sample: they
can run anywhere the package is installed. With a :class:`~aiestack.batch.BatchRunner`, the eval
runner hands them to :class:`ScoreSamples` in batches (``runner.map``); metrics that call a model
(judges, faithfulness, embedding similarity) and plugin metrics stay in this process, where the
stack is. Whichever runner scores them, the scores are the same: the same metric objects are
built from the same specs and called on the same samples (a test compares runs on Ray with
in-process runs, score by score).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiestack.errors import ConfigError
from aiestack.evals.base import Metric, Sample, Score
from aiestack.evals.metrics import build_metric, needs_model

if TYPE_CHECKING:
    from aiestack.batch import BatchRunner

#: A metric as the suite names it: (name, options).
MetricSpec = tuple[str, Mapping[str, Any]]


def portable(name: str, plugins: Mapping[str, Any]) -> bool:
    """Whether the metric called ``name`` can be scored by a batch runner (built in, no model needed)."""
    return name not in plugins and not needs_model(name)


async def safe_score(metric: Metric, sample: Sample) -> Score:
    """A metric that crashes on one example scores ``None`` there; a configuration error stops the run."""
    try:
        return await metric.score(sample)
    except ConfigError:
        raise
    except Exception as exc:  # one bad example must not lose a long run
        return Score(None, error=f"{type(exc).__name__}: {exc}")


class ScoreSamples:
    """``ScoreSamples(specs, base_dir)(samples) -> scores``: a batch task (picklable for Ray).

    The metrics are built from ``specs`` on the first call in each worker, once; each sample gets
    one :class:`Score` per spec, in the specs' order.
    """

    def __init__(self, specs: Sequence[MetricSpec], base_dir: Path) -> None:
        self._specs = tuple((name, dict(options)) for name, options in specs)
        self._base_dir = Path(base_dir)
        self._metrics: list[Metric] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # one batch at a time per worker: the loop is not thread-safe

    def __getstate__(self) -> dict[str, Any]:
        return {"specs": self._specs, "base_dir": str(self._base_dir)}  # never built metrics or the loop

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["specs"], Path(state["base_dir"]))  # type: ignore[misc]

    def __call__(self, samples: list[Sample]) -> list[list[Score]]:
        with self._lock:
            if self._metrics is None or self._loop is None:
                built = [build_metric(name, options, base_dir=self._base_dir) for name, options in self._specs]
                self._metrics = [m for m in built if isinstance(m, Metric)]
                self._loop = asyncio.new_event_loop()
            metrics = self._metrics
            return self._loop.run_until_complete(_score_all(metrics, samples))

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.close()
            self._metrics, self._loop = None, None


async def _score_all(metrics: Sequence[Metric], samples: Sequence[Sample]) -> list[list[Score]]:
    return [[await safe_score(metric, sample) for metric in metrics] for sample in samples]


class BatchScorer:
    """Collects samples and scores them with :class:`ScoreSamples` on ``runner``, ``batch_size`` at a time."""

    def __init__(self, runner: BatchRunner, task: ScoreSamples, *, batch_size: int = 16) -> None:
        self._runner = runner
        self._task = task
        self._batch_size = batch_size

    async def score(self, samples: Sequence[Sample]) -> list[list[Score]]:
        """One list of scores (in the task's spec order) per sample, in the samples' order."""
        if not samples:
            return []
        shippable = [_shippable(s) for s in samples]
        size = self._batch_size
        batches = [shippable[i : i + size] for i in range(0, len(shippable), size)]
        done = await self._runner.map(self._task, batches)
        return [scores for batch in done for scores in batch]


def _shippable(sample: Sample) -> Sample:
    """The sample with plain containers (a mapping proxy does not pickle) and no stream."""
    example = dataclasses.replace(
        sample.example, input=dict(sample.example.input), metadata=dict(sample.example.metadata)
    )
    completion = sample.completion
    if completion is not None and completion.stream is not None:
        completion = dataclasses.replace(completion, stream=None)
    return dataclasses.replace(sample, example=example, completion=completion)
