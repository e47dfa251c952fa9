"""The evaluation vocabulary every part of ``aiestack.evals`` shares.

A *system* (a model, a route, a prompt version: anything callable through the pipeline) turns an
:class:`~aiestack.types.Example` into a :class:`Sample`; a :class:`Metric` scores a sample. Metrics
that compare systems (pairwise judges) or need the whole run (corpus BLEU) have their own protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aiestack.types import Completion, Example

if TYPE_CHECKING:
    from aiestack.agents.events import RunResult


@dataclass(frozen=True, slots=True)
class Sample:
    """One system's answer to one example, with what the metrics may need."""

    example: Example
    system: str
    output: str
    completion: Completion | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    contexts: tuple[str, ...] = ()  # retrieved passages, for RAG metrics
    exchange_id: str | None = None
    error: str | None = None
    agent_run: RunResult | None = None  # an agent system's run (aiestack.evals.agent_systems)


@dataclass(frozen=True, slots=True)
class Score:
    """A metric's verdict on one sample: a value (higher is better unless the metric says otherwise)."""

    value: float | None  # None: not applicable / could not be computed (never a made-up 0)
    detail: Mapping[str, Any] = field(default_factory=dict)  # e.g. a judge's reasoning
    error: str | None = None


@runtime_checkable
class Metric(Protocol):
    """Scores one sample. ``higher_is_better`` orients gates and leaderboards."""

    name: str
    higher_is_better: bool

    async def score(self, sample: Sample) -> Score: ...


@runtime_checkable
class CorpusMetric(Protocol):
    """Scores a whole run at once (e.g. corpus BLEU/chrF)."""

    name: str
    higher_is_better: bool

    def corpus_score(self, samples: Sequence[Sample]) -> float: ...
