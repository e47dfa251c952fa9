"""Agent-run metrics (book ch. 6, agent failure modes), for suite systems that are agents.

They read the sample's run (:attr:`~aiestack.evals.base.Sample.agent_run`, set by
:mod:`aiestack.evals.agent_systems`) through :func:`aiestack.evals.agent_scores.score_run`:

- ``task_success``: 1.0 when the run ended with a final answer that matches the reference (the
  final number when the reference is a number, else normalised containment); with no reference,
  when the run ended with an answer at all;
- ``agent_steps``: the run's model calls (lower is better).

``tool_call_accuracy``, ``tool_selection``, ``invalid_tool_calls`` and ``tool_calls``
(:mod:`.tools`) read the run's calls across all its steps when the sample is a run; ``cost`` and
``latency`` are the run's total cost and wall time.
"""

from __future__ import annotations

from typing import Any

from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import MetricOptions, ReferenceOptions, lookup

NOT_A_RUN = "this metric scores agent runs: give the suite's system an agent (systems: - {name: ..., agent: NAME})"


def run_scores(sample: Sample, *, answer: Any = None, calls: Any = None, tools: Any = None) -> dict[str, float | None]:
    """:func:`~aiestack.evals.agent_scores.score_run` of the sample's run (which must be there)."""
    from aiestack.evals.agent_scores import score_run

    assert sample.agent_run is not None
    return score_run(sample.agent_run, expected_answer=answer, expected_tool_calls=calls, tools=tools)


class TaskSuccess:
    """1.0 when the agent's run answered, and (with a reference) answered right."""

    higher_is_better = True

    def __init__(self, name: str, opts: ReferenceOptions) -> None:
        self.name = name
        self._opts = opts

    async def score(self, sample: Sample) -> Score:
        if sample.agent_run is None:
            return Score(None, error=NOT_A_RUN)
        expected = lookup(sample, self._opts.reference_key)
        value = run_scores(sample, answer=expected)["success"]
        run = sample.agent_run
        return Score(value, {} if value else {"stop_reason": run.stop_reason, "answer": run.answer})


class AgentSteps:
    """The number of model calls the run made (its steps; the patterns' calls included)."""

    higher_is_better = False

    def __init__(self, name: str, opts: MetricOptions) -> None:
        self.name = name

    async def score(self, sample: Sample) -> Score:
        if sample.agent_run is None:
            return Score(None, error=NOT_A_RUN)
        return Score(run_scores(sample)["steps"])
