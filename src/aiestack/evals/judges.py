"""AI as a judge: pointwise (rubric + scale), reference-based, and pairwise with position swap.

A judge is a model asked, through the same pipeline as any system, to grade answers. Three rules
keep its verdicts usable (AI Engineering, ch. 3):

- **Structured output.** The request carries a JSON Schema in ``Params.response_format``; the
  reply is parsed robustly (code fences and chatter around the JSON are tolerated) because many
  models, the small embedded one included, do not follow schemas exactly. An unparseable reply
  scores ``None`` with the raw reply in the error: never a guessed score.
- **Versioned prompts.** Each score records the prompt (``pointwise@1``), the judge model and the
  judge's reasoning in :attr:`Score.detail`, so a score can be audited and a prompt change is
  visible as a new version.
- **Position bias is measured, not ignored.** Pairwise judging asks in both orders; a verdict that
  flips with the order counts as a tie, and :func:`consistency_rate` reports how often that
  happened. :func:`self_consistency` reruns a judge ``k`` times to show how stable its scores are.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiestack.errors import AiestackError
from aiestack.evals.base import Sample, Score
from aiestack.evals.judge_prompts import JudgePrompt, load_prompt
from aiestack.sidecalls import ModelCaller
from aiestack.types import ChatRequest, Message, Params, ResponseFormat

#: How a judge reaches its model: the side-call seam's shape (``await call(request) -> Completion``),
#: so ``stack.side_calls.caller("eval.judge")`` serves as one as well as ``stack.chat``.
JudgeCall = ModelCaller
Winner = Literal["a", "b", "tie"]

DEFAULT_RUBRIC = (
    "Is the answer correct, complete and relevant to the question? Penalise factual errors heavily."
)
DEFAULT_CRITERIA = "Correctness first, then completeness and relevance to the question; then clarity."
_QUESTION_KEYS = ("question", "prompt", "input", "query")


class JudgeParseError(ValueError):
    """The judge's reply held no JSON object with the expected fields."""


def question_text(sample: Sample, key: str | None = None) -> str:
    """The question the system was asked: ``input[key]``, else a usual key, else the input as JSON."""
    data = sample.example.input
    for k in (key,) if key else _QUESTION_KEYS:
        value = data.get(k)
        if isinstance(value, str):
            return value
    return json.dumps(dict(data), ensure_ascii=False, default=str)


def parse_json_reply(text: str, required: Sequence[str]) -> dict[str, Any]:
    """The JSON object in a judge reply: the whole reply, a fenced block, or the outermost ``{...}``."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and all(k in value for k in required):
            return value
    raise JudgeParseError(f"expected a JSON object with {', '.join(required)}; got: {text[:300]!r}")


async def ask_judge(
    call: JudgeCall,
    prompt: JudgePrompt,
    variables: Mapping[str, object],
    schema: Mapping[str, Any],
    *,
    model: str = "",
    temperature: float = 0.0,
    seed: int | None = None,
    max_tokens: int = 1024,
) -> tuple[dict[str, Any], str]:
    """Render the prompt, ask the judge model for JSON matching ``schema``; (parsed reply, raw text).

    ``seed`` makes otherwise identical requests distinct (and cached separately), which is what
    :func:`self_consistency` relies on. Raises :class:`JudgeParseError` for an unusable reply and
    lets provider errors through.
    """
    system, user = prompt.render(variables)
    request = ChatRequest(
        model=model,
        messages=(Message(role="system", content=system), Message(role="user", content=user)),
        params=Params(
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            response_format=ResponseFormat(
                type="json_schema", schema=schema, name=f"judge_{prompt.name}", strict=True
            ),
        ),
        metadata={"aiestack.judge_prompt": prompt.ref},
    )
    completion = await call(request)
    required = [str(k) for k in schema.get("required", ())]
    return parse_json_reply(completion.text, required), completion.text


def _score_schema(low: int, high: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "score": {"type": "integer", "minimum": low, "maximum": high},
        },
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


PAIRWISE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["reasoning", "winner"],
    "additionalProperties": False,
}


class RubricJudge:
    """A pointwise judge: one answer, a rubric, an integer scale; reference-based when ``reference_key`` is set.

    The score's value is normalised to 0–1 (``(raw - low) / (high - low)``) so thresholds and
    averages read the same as other metrics; the raw score, the scale, the reasoning, the prompt
    version and the judge model are in the detail.
    """

    higher_is_better = True

    def __init__(
        self,
        call: JudgeCall,
        *,
        name: str = "judge",
        model: str = "",
        rubric: str = DEFAULT_RUBRIC,
        scale: tuple[int, int] = (1, 5),
        prompt: str | None = None,
        reference_key: str | None = None,
        reference_based: bool = False,
        question_key: str | None = None,
        temperature: float = 0.0,
    ) -> None:
        if scale[1] <= scale[0]:
            raise ValueError(f"a judge scale must go from low to high, got {scale}")
        self.name = name
        self.reference_based = reference_based or reference_key is not None
        self.prompt = load_prompt(prompt or ("reference" if self.reference_based else "pointwise"))
        self.model = model
        self.scale = scale
        self._call = call
        self._rubric = rubric
        self._reference_key = reference_key
        self._question_key = question_key
        self._temperature = temperature

    def _variables(self, sample: Sample) -> dict[str, object] | str:
        variables: dict[str, object] = {
            "rubric": self._rubric,
            "scale_min": self.scale[0],
            "scale_max": self.scale[1],
            "question": question_text(sample, self._question_key),
            "answer": sample.output,
        }
        if self.reference_based:
            # Imported here: the metrics package builds judges, so a top-level import would be circular.
            from aiestack.evals.metrics.options import reference_texts

            refs = reference_texts(sample, self._reference_key)
            if not refs:
                return "the example has no reference for the reference-based judge"
            variables["reference"] = "\n".join(refs)
        return variables

    async def score(
        self, sample: Sample, *, temperature: float | None = None, seed: int | None = None
    ) -> Score:
        variables = self._variables(sample)
        if isinstance(variables, str):
            return Score(None, error=variables)
        detail: dict[str, Any] = {"prompt": self.prompt.ref, "judge_model": self.model or "(default)"}
        low, high = self.scale
        try:
            reply, raw = await ask_judge(
                self._call,
                self.prompt,
                variables,
                _score_schema(low, high),
                model=self.model,
                temperature=self._temperature if temperature is None else temperature,
                seed=seed,
            )
        except (JudgeParseError, AiestackError) as exc:
            return Score(None, detail, error=f"judge failed: {exc}")
        try:
            value = float(reply["score"])
        except (TypeError, ValueError):
            return Score(
                None, {**detail, "raw_reply": raw}, error=f"judge score is not a number: {reply['score']!r}"
            )
        if not low <= value <= high:
            return Score(
                None, {**detail, "raw_reply": raw}, error=f"judge score {value:g} is outside {low}–{high}"
            )
        detail.update(raw_score=value, scale=[low, high], reasoning=str(reply.get("reasoning", "")))
        return Score((value - low) / (high - low), detail)


# --------------------------------------------------------------------------- pairwise


@dataclass(frozen=True, slots=True)
class PairwiseResult:
    """A pairwise verdict after asking in both orders.

    ``first`` is the verdict with ``a`` shown as Answer A, ``second`` with ``b`` shown as Answer A,
    both translated back to ``"a"``/``"b"``/``"tie"``. When they disagree, ``winner`` is a tie and
    ``consistent`` is False. A failed judge call gives ``winner=None`` and an ``error``.
    """

    example_id: str
    system_a: str
    system_b: str
    winner: Winner | None
    consistent: bool
    first: Winner | None = None
    second: Winner | None = None
    reasoning: tuple[str, str] = ("", "")
    prompt: str = ""
    error: str | None = None

    def battle(self) -> tuple[str, str, Winner] | None:
        """``(system_a, system_b, outcome)`` for :mod:`aiestack.evals.ranking`; None when the judge failed."""
        return None if self.winner is None else (self.system_a, self.system_b, self.winner)


class PairwiseJudge:
    """Compares two systems' answers to one example, in both orders (position swap)."""

    def __init__(
        self,
        call: JudgeCall,
        *,
        model: str = "",
        criteria: str = DEFAULT_CRITERIA,
        prompt: str = "pairwise",
        question_key: str | None = None,
        temperature: float = 0.0,
    ) -> None:
        self.model = model
        self.prompt = load_prompt(prompt)
        self._call = call
        self._criteria = criteria
        self._question_key = question_key
        self._temperature = temperature

    async def _ask(self, question: str, shown_a: str, shown_b: str) -> tuple[str, str]:
        variables = {
            "criteria": self._criteria,
            "question": question,
            "answer_a": shown_a,
            "answer_b": shown_b,
        }
        reply, _ = await ask_judge(
            self._call,
            self.prompt,
            variables,
            PAIRWISE_SCHEMA,
            model=self.model,
            temperature=self._temperature,
        )
        verdict = str(reply["winner"]).strip().lower()
        if verdict not in ("a", "b", "tie"):
            raise JudgeParseError(f"winner must be 'A', 'B' or 'tie', got {reply['winner']!r}")
        return verdict, str(reply.get("reasoning", ""))

    async def compare(self, a: Sample, b: Sample) -> PairwiseResult:
        """Judge ``a`` against ``b`` (same example) in both orders, concurrently."""
        base = PairwiseResult(a.example.id, a.system, b.system, None, False, prompt=self.prompt.ref)
        if a.example.id != b.example.id:
            raise ValueError(
                f"pairwise judging needs two answers to one example, got {a.example.id!r} and {b.example.id!r}"
            )
        question = question_text(a, self._question_key)
        try:
            (v1, r1), (v2, r2) = await asyncio.gather(
                self._ask(question, a.output, b.output), self._ask(question, b.output, a.output)
            )
        except (JudgeParseError, AiestackError) as exc:
            return PairwiseResult(**{**_fields(base), "error": f"judge failed: {exc}"})
        first: Winner = "a" if v1 == "a" else "b" if v1 == "b" else "tie"
        second: Winner = "b" if v2 == "a" else "a" if v2 == "b" else "tie"  # swapped back
        consistent = first == second
        return PairwiseResult(
            a.example.id,
            a.system,
            b.system,
            first if consistent else "tie",
            consistent,
            first,
            second,
            (r1, r2),
            self.prompt.ref,
        )


def _fields(result: PairwiseResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in PairwiseResult.__slots__}


def consistency_rate(results: Sequence[PairwiseResult]) -> float | None:
    """Share of successful pairwise verdicts that survived the position swap (None if there are none)."""
    judged = [r for r in results if r.error is None and r.winner is not None]
    return sum(r.consistent for r in judged) / len(judged) if judged else None


# --------------------------------------------------------------------------- self-consistency


@dataclass(frozen=True, slots=True)
class SelfConsistency:
    """How stable a judge is on one sample over ``k`` reruns.

    ``agreement`` is the share of successful runs that gave the most common raw score (1.0: always
    the same verdict); ``stdev`` is that of the raw scores; ``failures`` counts unusable replies.
    """

    values: tuple[float, ...]
    agreement: float | None
    mean: float | None
    stdev: float | None
    failures: int


async def self_consistency(
    judge: RubricJudge, sample: Sample, k: int = 5, *, temperature: float = 0.7
) -> SelfConsistency:
    """Rerun ``judge`` on ``sample`` ``k`` times (distinct seeds, sampling temperature) and measure agreement."""
    if k < 2:
        raise ValueError("self-consistency needs at least 2 runs")
    scores = await asyncio.gather(*(judge.score(sample, temperature=temperature, seed=i) for i in range(k)))
    raw = tuple(float(s.detail["raw_score"]) for s in scores if s.value is not None)
    if not raw:
        return SelfConsistency((), None, None, None, k)
    modal = Counter(raw).most_common(1)[0][1]
    stdev = statistics.pstdev(raw) if len(raw) > 1 else 0.0
    return SelfConsistency(raw, modal / len(raw), statistics.fmean(raw), stdev, k - len(raw))
