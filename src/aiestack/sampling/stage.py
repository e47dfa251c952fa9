"""The Sampling stage: a route with ``[routes.NAME.sampling]`` answers with the best of N samples.

It sits right before Generate, so retrieval, the prompt and the guards run once per request and
only generation is repeated. For a request whose route plan carries a
:class:`~aiestack.sampling.config.SamplingPlan`, it sends ``n`` copies of the request on to Generate
**concurrently** (each with the route's retries, fallbacks and breakers), then chooses one answer:

- ``self_consistency``: each sample's answer is extracted and the majority wins
  (:mod:`aiestack.sampling.vote`);
- ``best_of_n`` with ``selector = "logprob"``: the highest mean token logprob (the samples are asked
  for logprobs; a model that returns none is an error, not a silent pick);
- ``selector = "verifier"``: the highest score of the configured function ``f(question, answer)``;
- ``selector = "judge"``: one call to the judge model, made through the side-call seam
  (:mod:`aiestack.sidecalls`: routed, priced against the request's key, its own exchange and a child
  span). A judge that fails or answers unreadably leaves sample 1 chosen, and the exchange says so.

**Honest accounting.** The answer's ``usage`` and ``cost_usd`` are the sums over all N samples, so the
Limits stage settles the key's TPM window and budgets with what was really spent (and it reserves
``n`` times a call's estimate before). The judge's call is billed on its own side-call exchange.
The exchange records what happened in ``aiestack.sampling.*`` attributes: strategy, n, chosen index,
each sample's tokens, cost and answer or score, the vote counts, failures.

**Streaming.** A streaming request on a sampling route is answered once all N samples are in and one
is chosen: the chosen answer is then streamed (as one delta; time to first token is the sampling's
time). Samples are never streamed: nobody can see N answers at once.

Samples that fail (after their retries and fallbacks) are left out and counted; only when every
sample failed does the request fail, with the first sample's error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from aiestack.errors import AiestackError
from aiestack.gateway.generate import ATTEMPTS
from aiestack.pipeline import Next
from aiestack.sampling.config import SamplingPlan
from aiestack.sampling.vote import majority
from aiestack.sidecalls import SideCalls
from aiestack.streams import single
from aiestack.types import (
    ChatRequest,
    Completion,
    Exchange,
    Message,
    Params,
    ResponseFormat,
    Timing,
    Usage,
    last_user_text,
)

# Exchange attributes a sampling route records.
STRATEGY = "aiestack.sampling.strategy"
N = "aiestack.sampling.n"
CHOSEN = "aiestack.sampling.chosen"  # 0-based index of the answer given
SAMPLES = "aiestack.sampling.samples"  # per sample: {"tokens", "cost_usd", "answer" | "score" | "error"}
VOTES = "aiestack.sampling.votes"  # self_consistency: [[answer, votes], ...], most first
AGREEMENT = "aiestack.sampling.agreement"  # the winner's share of the votes cast
FAILED = "aiestack.sampling.failed"  # samples that produced no answer
JUDGE_EXCHANGE = "aiestack.sampling.judge_exchange_cost_usd"
JUDGE_ERROR = "aiestack.sampling.judge_error"

_BEST = re.compile(r'"best"\s*:\s*(\d+)')


class SamplingFailed(AiestackError):
    """The samples cannot be chosen between the way the route says (e.g. no logprobs came back)."""

    http_status = 502
    error_type = "api_error"
    code = "sampling_failed"


class Sampling:
    """The stage. ``side_calls`` is the seam the judge selector calls through (needed only for it)."""

    name = "sampling"

    def __init__(self, side_calls: SideCalls | None = None) -> None:
        self._side_calls = side_calls

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        plan = ex.plan.part(SamplingPlan) if ex.plan is not None else None
        if plan is None:
            return await call_next(ex)
        started = time.perf_counter()
        requests = [self._sample_request(ex.request, plan, i) for i in range(plan.n)]
        outcomes = await asyncio.gather(
            *(call_next(dataclasses.replace(ex, request=r)) for r in requests), return_exceptions=True
        )
        for outcome in outcomes:  # cancellation and the like are not a sample's failure
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome
        done = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Exchange) and o.completion is not None]
        if not done:
            first = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if first is not None:
                raise first
            raise SamplingFailed(f"none of the {plan.n} samples produced an answer")
        completions = [o.completion for _, o in done if o.completion is not None]
        records: list[dict[str, Any]] = [{"error": _describe(o)} for o in outcomes]
        for (i, _), c in zip(done, completions, strict=True):
            records[i] = {"tokens": c.usage.total_tokens, "cost_usd": c.cost_usd}
        attributes: dict[str, Any] = {STRATEGY: plan.strategy, N: plan.n}
        pick = await self._choose(plan, ex.request, completions, [i for i, _ in done], records, attributes)
        index, chosen_ex = done[pick]
        attributes[CHOSEN] = index
        attributes[SAMPLES] = tuple(records)
        failed = plan.n - len(done)
        if failed:
            attributes[FAILED] = failed
        return self._answer(ex, chosen_ex, completions, [o for _, o in done], attributes, started)

    # ------------------------------------------------------------------ the samples

    @staticmethod
    def _sample_request(request: ChatRequest, plan: SamplingPlan, i: int) -> ChatRequest:
        """Sample ``i``: never streamed; the route's temperature when the request set none; seed + i;
        logprobs asked for when the selector reads them."""
        params = request.params
        changes: dict[str, Any] = {}
        if params.temperature is None and plan.temperature is not None:
            changes["temperature"] = plan.temperature
        if params.seed is not None:
            changes["seed"] = params.seed + i
        if plan.selector == "logprob" and not params.logprobs:
            changes["logprobs"] = True
        return dataclasses.replace(
            request, stream=False, params=dataclasses.replace(params, **changes) if changes else params
        )

    # ------------------------------------------------------------------ choosing

    async def _choose(
        self,
        plan: SamplingPlan,
        request: ChatRequest,
        completions: Sequence[Completion],
        indexes: Sequence[int],
        records: list[dict[str, Any]],
        attributes: dict[str, Any],
    ) -> int:
        """The position (in ``completions``) of the answer to give; fills the records and attributes."""
        if plan.strategy == "self_consistency":
            assert plan.extract is not None
            answers = [plan.extract(c.text) for c in completions]
            for i, answer in zip(indexes, answers, strict=True):
                records[i]["answer"] = answer
            vote = majority(answers)
            attributes[VOTES] = tuple((answer, count) for answer, count in vote.counts)
            attributes[AGREEMENT] = round(vote.agreement, 4)
            return vote.index
        if plan.selector == "logprob":
            scores = [_mean_logprob(c) for c in completions]
            if all(s is None for s in scores):
                raise SamplingFailed(
                    f"none of the {len(completions)} samples carried token logprobs, so the highest mean "
                    "logprob cannot be chosen",
                    hint="The route's models do not return logprobs: use selector = 'judge' or 'verifier'.",
                )
        elif plan.selector == "verifier":
            assert plan.verifier is not None
            question = last_user_text(request.messages)
            scores = list(await asyncio.gather(*(_verify(plan, question, c.text) for c in completions)))
        else:
            scores = await self._judge(plan, request, completions, attributes)
        for i, score in zip(indexes, scores, strict=True):
            records[i]["score"] = score
        best = max(range(len(scores)), key=lambda k: (scores[k] is not None, scores[k] or 0.0, -k))
        return best

    async def _judge(
        self, plan: SamplingPlan, request: ChatRequest, completions: Sequence[Completion], attributes: dict[str, Any]
    ) -> list[float | None]:
        """One judge call picks the best candidate: 1.0 for it, 0.0 for the others."""
        if self._side_calls is None:
            raise SamplingFailed("the judge selector needs the side-call seam, and this stack has none")
        assert plan.judge is not None
        prompt = _judge_prompt(request, completions, plan.judge_max_chars)
        schema = {
            "type": "object",
            "properties": {
                "best": {"type": "integer", "minimum": 1, "maximum": len(completions)},
                "reason": {"type": "string"},
            },
            "required": ["best"],
        }
        judge_request = ChatRequest(
            model=plan.judge,
            messages=(Message(role="user", content=prompt),),
            params=Params(
                temperature=0.0,
                max_tokens=256,
                response_format=ResponseFormat(type="json_schema", schema=schema, name="choice"),
            ),
        )
        scores: list[float | None] = [0.0] * len(completions)
        try:
            verdict = await self._side_calls.complete(judge_request, purpose="sampling_judge")
        except AiestackError as exc:
            attributes[JUDGE_ERROR] = f"{type(exc).__name__}: {exc.message}"
            scores[0] = 1.0
            return scores
        attributes[JUDGE_EXCHANGE] = verdict.cost_usd
        best = _read_best(verdict.text)
        if best is None or not 1 <= best <= len(completions):
            attributes[JUDGE_ERROR] = f"unreadable verdict: {verdict.text[:200]!r}"
            best = 1
        scores[best - 1] = 1.0
        return scores

    # ------------------------------------------------------------------ the answer

    @staticmethod
    def _answer(
        ex: Exchange,
        chosen: Exchange,
        completions: Sequence[Completion],
        samples: Sequence[Exchange],
        attributes: dict[str, Any],
        started: float,
    ) -> Exchange:
        """The chosen sample's exchange, its completion carrying the usage and cost of every sample."""
        completion = chosen.completion
        assert completion is not None
        usage = sum((c.usage for c in completions), Usage())
        costs = [c.cost_usd for c in completions if c.cost_usd is not None]
        elapsed_ms = (time.perf_counter() - started) * 1000
        total = dataclasses.replace(
            completion,
            usage=usage,
            cost_usd=sum(costs) if costs else None,
            logprobs=completion.logprobs if ex.request.params.logprobs else (),
            timing=Timing(
                queue_ms=completion.timing.queue_ms,
                ttft_ms=elapsed_ms,
                tpot_ms=completion.timing.tpot_ms,
                total_ms=elapsed_ms,
            ),
        )
        if ex.request.stream:
            total = single(total)
        calls = sum(int(s.attributes.get(ATTEMPTS, 1)) for s in samples)
        merged = {**chosen.attributes, **attributes}
        if ATTEMPTS in chosen.attributes:
            merged[ATTEMPTS] = calls
        return dataclasses.replace(chosen, request=ex.request, completion=total, attributes=merged)


def _describe(outcome: object) -> str:
    if isinstance(outcome, AiestackError):
        return f"{type(outcome).__name__}: {outcome.message}"
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    return "no answer"


def _mean_logprob(completion: Completion) -> float | None:
    if not completion.logprobs:
        return None
    return sum(lp.logprob for lp in completion.logprobs) / len(completion.logprobs)


async def _verify(plan: SamplingPlan, question: str, answer: str) -> float | None:
    """The verifier's score of one answer (None when it raised: that answer cannot win on it)."""
    assert plan.verifier is not None
    try:
        if inspect.iscoroutinefunction(plan.verifier):
            value = await plan.verifier(question, answer)
        else:
            value = await asyncio.to_thread(plan.verifier, question, answer)
        return float(value)
    except Exception:
        return None


def _judge_prompt(request: ChatRequest, completions: Sequence[Completion], max_chars: int) -> str:
    conversation = "\n".join(f"{m.role}: {m.text}" for m in request.messages if m.text)
    parts = [
        "Several candidate answers were written for the same conversation. Pick the best one: the most "
        "correct, complete and helpful. Judge the content, not the length or the position.",
        f"<conversation>\n{conversation[-8000:]}\n</conversation>",
    ]
    for i, c in enumerate(completions, 1):
        parts.append(f'<candidate number="{i}">\n{c.text[:max_chars]}\n</candidate>')
    parts.append('Answer with JSON only: {"best": <the number of the best candidate>, "reason": "<one sentence>"}')
    return "\n\n".join(parts)


def _read_best(text: str) -> int | None:
    try:
        data = json.loads(text.strip().removeprefix("```json").removeprefix("```").removesuffix("```"))
        if isinstance(data, dict) and isinstance(data.get("best"), int):
            return int(data["best"])
    except (json.JSONDecodeError, ValueError):
        pass
    match = _BEST.search(text)
    return int(match.group(1)) if match else None
