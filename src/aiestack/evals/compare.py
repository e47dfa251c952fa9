"""Comparative ranking inside a suite: pairwise battles between systems, ranked by Bradley–Terry.

After every system has answered, a pairwise judge compares, on each example, the answers of each
pair of systems (``compare.pairs``), in both orders: a verdict that flips with the order is a tie,
and the share that did not flip is the judge's *consistency rate* (its position bias, measured).
The battles are ranked by :func:`aiestack.evals.ranking.rank` (Bradley–Terry with bootstrap
intervals, Elo for reference, the win-rate matrix).

Everything is kept in the run's summary (``summary["compare"]``): the battles with both verdicts,
the ranking and the consistency, so ``aiestack eval report`` redraws it without a model. Judge
calls go through the runner's cached, bounded call path, so a re-run makes no judge calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiestack.errors import ConfigError
from aiestack.evals.base import Sample
from aiestack.evals.judges import DEFAULT_CRITERIA, JudgeCall, PairwiseJudge, PairwiseResult, consistency_rate
from aiestack.evals.ranking import Ranking, Rating, rank
from aiestack.evals.suite import CompareJudgeSpec, CompareSpec, JudgeSpec, SystemSpec
from aiestack.stores.base import EvalResultRecord
from aiestack.types import ChatRequest, Completion, Example

#: Judge reasoning kept per verdict in the stored battles: enough to audit, small enough for a summary.
REASONING_CHARS = 500
CONFIDENCE = 0.95


def compare_judge(spec: CompareSpec, suite_judge: JudgeSpec | None) -> CompareJudgeSpec:
    """The pairwise judge: ``compare.judge``, else the suite's ``judge`` with the default prompt."""
    if spec.judge is not None:
        return spec.judge
    if suite_judge is not None:
        return CompareJudgeSpec(model=suite_judge.model, params=dict(suite_judge.params))
    return CompareJudgeSpec()


def _round_call(call: JudgeCall, judge: CompareJudgeSpec, round_: int) -> JudgeCall:
    """The judge call for one round: the judge's params applied, and a distinct seed per extra round.

    The seed makes round ``r`` a different call (cached separately); only a sampling judge
    (temperature > 0) can then answer differently, which is what extra rounds measure.
    """
    given = SystemSpec(name="judge", params=judge.params).to_params()
    overrides = {key: getattr(given, key) for key in judge.params if key != "response_format"}
    if round_ > 0:
        overrides["seed"] = (given.seed or 0) + round_

    async def ask(request: ChatRequest) -> Completion:
        params = dataclasses.replace(request.params, **overrides)
        return await call(dataclasses.replace(request, model=request.model or judge.model, params=params))

    return ask


async def _safe_compare(judge: PairwiseJudge, a: Sample, b: Sample) -> PairwiseResult:
    """A comparison whose judge call failed is kept as a failed battle; a config error stops the run."""
    try:
        return await judge.compare(a, b)
    except ConfigError:
        raise
    except Exception as exc:  # one failed judge call must not lose the ranking
        return PairwiseResult(a.example.id, a.system, b.system, None, False, error=f"judge failed: {exc}")


async def run_comparison(
    spec: CompareSpec,
    suite_judge: JudgeSpec | None,
    systems: Sequence[str],
    examples: Sequence[Example],
    results: Sequence[EvalResultRecord],
    call: JudgeCall,
    *,
    on_total: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Judge every pair on every example both answered; the JSON-ready ``summary["compare"]`` section.

    ``on_total`` hears how many comparisons will be made, ``on_done`` each one finished (progress).

    Battles are listed in a fixed order (example, pair, round) whatever order the calls finish in,
    so the sequential Elo is reproducible.
    """
    judge_spec = compare_judge(spec, suite_judge)
    pairs = spec.resolved_pairs(list(systems))
    answers = {(r.example_id, r.system): r for r in results if r.error is None}
    temperature = judge_spec.params.get("temperature", 0.0)
    judges = [
        PairwiseJudge(
            _round_call(call, judge_spec, r),
            model=judge_spec.model,
            criteria=judge_spec.criteria or DEFAULT_CRITERIA,
            prompt=judge_spec.prompt,
            question_key=judge_spec.question_key,
            temperature=float(temperature),
        )
        for r in range(spec.rounds)
    ]
    jobs: list[tuple[int, PairwiseJudge, Sample, Sample]] = []
    skipped = 0
    for example in examples:
        for a, b in pairs:
            ra, rb = answers.get((example.id, a)), answers.get((example.id, b))
            if ra is None or rb is None:
                skipped += spec.rounds
                continue
            sa = Sample(example, a, ra.output, exchange_id=ra.exchange_id)
            sb = Sample(example, b, rb.output, exchange_id=rb.exchange_id)
            jobs.extend((r, judge, sa, sb) for r, judge in enumerate(judges))

    if on_total is not None:
        on_total(len(jobs))

    async def one(job: tuple[int, PairwiseJudge, Sample, Sample]) -> PairwiseResult:
        result = await _safe_compare(job[1], job[2], job[3])
        if on_done is not None:
            on_done()
        return result

    verdicts = await asyncio.gather(*(one(job) for job in jobs))
    battles = [battle for verdict in verdicts if (battle := verdict.battle()) is not None]
    ranking = rank(battles, bootstrap=spec.bootstrap, confidence=CONFIDENCE) if battles else None
    return {
        "judge_model": judge_spec.model or "(default)",
        "prompt": judges[0].prompt.ref,
        "pairs": [list(p) for p in pairs],
        "rounds": spec.rounds,
        "judged": len(battles),
        "failed": sum(v.error is not None for v in verdicts),
        "skipped": skipped,
        "consistency_rate": consistency_rate(verdicts),
        "battles": [_battle_dict(job[0], v) for job, v in zip(jobs, verdicts, strict=True)],
        "ranking": None if ranking is None else ranking_dict(ranking),
    }


def _battle_dict(round_: int, v: PairwiseResult) -> dict[str, Any]:
    return {
        "example": v.example_id,
        "a": v.system_a,
        "b": v.system_b,
        "round": round_,
        "winner": v.winner,
        "first": v.first,
        "second": v.second,
        "consistent": v.consistent,
        "reasoning": [text[:REASONING_CHARS] for text in v.reasoning],
        "error": v.error,
    }


def ranking_dict(ranking: Ranking) -> dict[str, Any]:
    """A :class:`Ranking` as JSON-ready data (its inverse is :func:`ranking_from_dict`)."""
    return {
        "ratings": [dataclasses.asdict(r) for r in ranking.ratings],
        "win_rate": {a: dict(row) for a, row in ranking.win_rate.items()},
        "battles": ranking.battles,
        "confidence": CONFIDENCE,
    }


def ranking_from_dict(data: Mapping[str, Any]) -> Ranking:
    return Ranking(
        tuple(Rating(**r) for r in data["ratings"]),
        {a: dict(row) for a, row in data["win_rate"].items()},
        int(data["battles"]),
    )


def stored_ranking(summary: Mapping[str, Any]) -> tuple[Mapping[str, Any], Ranking | None] | None:
    """A run summary's compare section and its ranking (None: the suite did not compare systems)."""
    section = summary.get("compare")
    if not isinstance(section, Mapping):
        return None
    data = section.get("ranking")
    return section, None if data is None else ranking_from_dict(data)
