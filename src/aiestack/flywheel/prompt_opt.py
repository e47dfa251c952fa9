"""Prompt optimisation without training (AI Engineering, ch. 5 and 10): candidates scored on a dev set.

``aiestack prompts optimise NAME --suite dev.yaml`` starts from a version of prompt ``NAME`` (its
``production`` label by default) and makes candidate versions of it:

- **rewrites**: a model, called through the stack's side-call seam (purpose ``prompts.optimise``:
  routed, priced, traced), is shown the prompt, the suite's description and a few dev examples the
  current prompt gets wrong (OPRO / APE style), and asked for a better prompt; a rewrite that does
  not parse, or reads a variable the current version does not, is rejected with the reason;
- **example selection**: the current prompt followed by ``k`` demonstrations drawn (seeded) from a
  chat dataset version, several random sets per ``k`` (DSPy's random search over few-shot sets);
  rows whose question is one of the dev set's are never used (that would show the model the answers).

Each candidate — and the current version, as the baseline — is run by the eval harness on the dev
suite as the suite's system with the candidate as its system prompt (one run per candidate, all on
the same examples, every call bypassing the gateway caches). The best candidate by the objective
metric is then judged against the current version by :func:`aiestack.flywheel.gate.decide` (the
suite's gates and the paired bootstrap), and pushed as the next version only if it passes. The new
version's ``metadata["optimised"]`` keeps its lineage: the base version, the suite and examples, every
candidate with its score and eval run, the rejected ones and the decision.

Picking the best of N on the dev set and then testing it on the same set favours it (the winner's
curse): the decision here is a screen; the flywheel's ``evaluate`` step gates a promotion on a
separate suite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiestack.datasets.export import iter_rows
from aiestack.datasets.rows import answers, prompt_messages
from aiestack.errors import ConfigError, InvalidRequest
from aiestack.evals.runner import RunResult, render_messages, suite_templates
from aiestack.evals.suite import Suite, SystemSpec
from aiestack.flywheel.gate import Decision, decide, objective
from aiestack.prompts.registry import PromptRegistry
from aiestack.prompts.templates import infer_variables
from aiestack.sidecalls import ModelCaller
from aiestack.stores.base import EvalResultRecord
from aiestack.stores.datasets import DatasetStore, DatasetVersion
from aiestack.stores.prompts import PromptVersion
from aiestack.types import ChatRequest, Example, Message, Params

#: Runs one suite on examples with the eval harness (the CLI passes ``aiestack eval run``'s runner).
Evaluate = Callable[[Suite, Sequence[Example]], Awaitable[RunResult]]

#: Variables the Prompt stage gives every template (a candidate may read them).
BUILTIN_VARIABLES = frozenset({"tenant", "route", "user", "today"})
_TAGGED = re.compile(r"<prompt>\s*(.*?)\s*</prompt>", re.DOTALL | re.IGNORECASE)
_FENCED = re.compile(r"^```[a-z0-9]*\n(.*?)\n```$", re.DOTALL)

REWRITE_INSTRUCTIONS = """You improve system prompts for a language model.

The task: {task}

The current system prompt is:
<prompt>
{prompt}
</prompt>
{failures}
Write an improved system prompt for the same task: clearer instructions, the expected output
format spelled out. Keep every {{{{ variable }}}} placeholder it uses and add no new ones.
Reply with the new prompt only, between <prompt> and </prompt>."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A prompt template to try: ``kind`` is ``current``, ``rewrite`` or ``examples``."""

    id: str
    kind: str
    template: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scored:
    """A candidate's eval run on the dev set and its mean on the objective metric."""

    candidate: Candidate
    eval_run: str
    score: float | None
    scored: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.candidate.id, "kind": self.candidate.kind, "eval_run": self.eval_run, "score": self.score,
                "scored": self.scored, "errors": self.errors, "detail": dict(self.candidate.detail)}


@dataclass(frozen=True, slots=True)
class OptimiseOptions:
    """What to try. ``model``: the rewriter (a model or route; ``None``: the system's own model)."""

    rewrites: int = 3
    model: str | None = None
    examples: str | None = None  # a chat dataset, NAME or NAME@VERSION
    shots: tuple[int, ...] = (2, 4)
    sets: int = 2  # random example sets per number of shots
    failures: int = 3  # dev failures shown to the rewriter
    metric: str | None = None
    min_gain: float | None = 0.0
    seed: int = 0
    temperature: float = 0.8


@dataclass(frozen=True, slots=True)
class OptimiseResult:
    base: PromptVersion
    system: str
    metric: str
    scored: tuple[Scored, ...]
    rejected: tuple[tuple[str, str], ...]  # (candidate id, why) never evaluated
    best: Scored
    decision: Decision
    pushed: PromptVersion | None

    def lineage(self, suite: Suite, examples: Sequence[Example]) -> dict[str, Any]:
        """What the pushed version's ``metadata["optimised"]`` records."""
        return {
            "from": f"{self.base.name}@{self.base.version}",
            "suite": suite.name,
            "system": self.system,
            "dev_examples": len(examples),
            "dev_example_ids": [e.id for e in examples][:1000],
            "metric": self.metric,
            "candidates": [s.as_dict() for s in self.scored],
            "rejected": [{"id": i, "why": why} for i, why in self.rejected],
            "winner": self.best.candidate.id,
            "decision": self.decision.as_dict(),
        }


def pick_system(suite: Suite, prompt: str, name: str | None) -> SystemSpec:
    """The system whose prompt is optimised: ``name``, else the one whose ``prompt_ref`` names ``prompt``,
    else the suite's only system."""
    if name is not None:
        found = next((s for s in suite.systems if s.name == name), None)
        if found is None:
            raise ConfigError("--system", f"the suite {suite.name!r} has no system {name!r}", f"use one of {', '.join(s.name for s in suite.systems)}")
        return found
    naming = [s for s in suite.systems if s.prompt_ref is not None and s.prompt_ref.partition("@")[0] == prompt]
    if len(naming) == 1:
        return naming[0]
    if len(suite.systems) == 1:
        return suite.systems[0]
    raise ConfigError("--system", f"the suite {suite.name!r} has {len(suite.systems)} systems", "name the one to optimise with --system")


def candidate_suite(suite: Suite, system: SystemSpec, template: str) -> Suite:
    """``suite`` with only ``system``, its system prompt ``template`` (the runs compare on one system name),
    under a name of its own so its runs are not taken as baselines of the suite itself."""
    spec = system.model_copy(update={"prompt_ref": None, "system_prompt": template})
    return suite.model_copy(update={"name": f"{suite.name}.optimise", "systems": [spec], "compare": None})


def check_template(template: str, allowed: set[str]) -> str | None:
    """Why ``template`` cannot be a version of the prompt (``None``: it can)."""
    if not template.strip():
        return "the rewrite is empty"
    try:
        variables = set(infer_variables(template))
    except InvalidRequest as exc:
        return exc.message
    extra = sorted(variables - allowed - BUILTIN_VARIABLES)
    if extra:
        return f"it reads variables the prompt does not have: {', '.join(extra)}"
    return None


def parse_rewrite(text: str) -> str:
    """The prompt in a rewriter's reply: between <prompt> tags, else a fenced block, else the whole reply."""
    tagged = _TAGGED.search(text)
    if tagged:
        return tagged.group(1).strip()
    stripped = text.strip()
    fenced = _FENCED.match(stripped)
    return (fenced.group(1) if fenced else stripped).strip()


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def with_examples(template: str, shots: Sequence[tuple[str, str]]) -> str:
    """``template`` followed by demonstrations, each kept literal (``{% raw %}``: a ``{{`` in an example
    is text, not a placeholder)."""
    blocks = [f"{{% raw %}}Input: {q}\nOutput: {a}{{% endraw %}}" for q, a in shots]
    return template.rstrip() + "\n\nExamples:\n\n" + "\n\n".join(blocks) + "\n"


def example_pool(rows: Sequence[Any], avoid: set[str], *, max_chars: int = 2000) -> tuple[list[tuple[str, str, str]], int]:
    """(row id, question, answer) of each usable row, and how many were left out because the dev set asks them."""
    pool: list[tuple[str, str, str]] = []
    overlap = 0
    for row in rows:
        question = "\n".join(str(m.get("content") or "") for m in prompt_messages(row.data) if m.get("role") == "user").strip()
        answer = answers(row.data)[0].strip()
        if not question or not answer or len(question) + len(answer) > max_chars or "{% endraw" in question + answer:
            continue
        if _norm(question) in avoid:
            overlap += 1
            continue
        pool.append((row.id, question, answer))
    return pool, overlap


def dev_questions(suite: Suite, examples: Sequence[Example]) -> set[str]:
    """The dev set's questions as a model sees them (rendered user messages and raw inputs), normalised."""
    user, _ = suite_templates(suite)
    seen: set[str] = set()
    for example in examples:
        seen.add(_norm(str(example.input.get("input", ""))))
        seen.add(_norm(render_messages(user, None, example)[-1].text))
    seen.discard("")
    return seen


class PromptOptimiser:
    """Makes, scores and judges candidates for one prompt (see the module docstring)."""

    def __init__(
        self,
        registry: PromptRegistry,
        evaluate: Evaluate,
        *,
        rewriter: ModelCaller | None = None,
        datasets: DatasetStore | None = None,
    ) -> None:
        self._registry = registry
        self._evaluate = evaluate
        self._rewriter = rewriter
        self._datasets = datasets
        self._runs: dict[str, RunResult] = {}

    async def optimise(
        self,
        ref: str,
        suite: Suite,
        examples: Sequence[Example],
        options: OptimiseOptions,
        *,
        system: str | None = None,
        push: bool = True,
        label: str | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> OptimiseResult:
        say = on_progress or (lambda _: None)
        base = await asyncio.to_thread(self._registry.get, ref)
        spec = pick_system(suite, base.name, system)
        if not examples:
            raise ConfigError("--suite", f"the suite {suite.name!r} has no examples", "point its dataset at a file with rows")
        current = Candidate("current", "current", base.template, {"version": base.version})
        baseline = await self._score(suite, spec, examples, current)
        metric, higher = objective(self._metrics(baseline), options.metric, source="--metric")
        say(f"current {base.name}@{base.version}: {metric} = {_fmt(baseline.score)} (run {baseline.eval_run})")
        rejected: list[tuple[str, str]] = []
        candidates = await self._rewrites(base, suite, spec, examples, baseline, metric, options, rejected)
        candidates += await self._example_sets(base, suite, examples, options, rejected)
        seen = {_norm(base.template)}
        scored = [baseline]
        for candidate in candidates:
            if _norm(candidate.template) in seen:
                rejected.append((candidate.id, "the same as an earlier candidate"))
                continue
            seen.add(_norm(candidate.template))
            tried = await self._score(suite, spec, examples, candidate, metric=metric)
            say(f"{candidate.id}: {metric} = {_fmt(tried.score)} (run {tried.eval_run})")
            scored.append(tried)
        best = _best(scored, higher)
        baseline_results, best_results = self._results(baseline.eval_run), self._results(best.eval_run)
        if best is baseline:
            decision = Decision(False, "no candidate scored better than the current version", metric, higher,
                                baseline=baseline.score, candidate=baseline.score)
        else:
            info = self._metrics(best)
            orientation = {n: bool(i.get("higher_is_better", True)) for n, i in info.items() if not i.get("corpus")}
            decision = decide(best_results, baseline_results, metric=metric, higher_is_better=higher, orientation=orientation,
                              gates=suite.gates, min_gain=options.min_gain, seed=options.seed)
        result = OptimiseResult(base, spec.name, metric, tuple(scored), tuple(rejected), best, decision, None)
        if decision.passed and push:
            pushed, _ = await asyncio.to_thread(
                self._registry.push, base.name, best.candidate.template,
                message=f"optimised from {base.name}@{base.version}: {best.candidate.id}, {decision.reason}"[:500],
                metadata={"optimised": result.lineage(suite, examples)}, label=label,
            )  # fmt: skip
            result = dataclasses.replace(result, pushed=pushed)
        return result

    # ------------------------------------------------------------------ candidates

    async def _rewrites(self, base: PromptVersion, suite: Suite, spec: SystemSpec, examples: Sequence[Example],
                        baseline: Scored, metric: str, options: OptimiseOptions,
                        rejected: list[tuple[str, str]]) -> list[Candidate]:
        if options.rewrites <= 0:
            return []
        if self._rewriter is None:
            raise ConfigError("rewrites", "no model caller was given to write rewrites", "pass rewriter=stack.side_calls.caller('prompts.optimise'), or ask for 0 rewrites")
        model = options.model or spec.model
        failures = await self._failures(baseline, examples, metric, options.failures)
        allowed = set(infer_variables(base.template)) | set(base.variables)
        text = REWRITE_INSTRUCTIONS.format(task=suite.description or suite.name, prompt=base.template, failures=failures)
        out: list[Candidate] = []
        for i in range(options.rewrites):
            request = ChatRequest(model=model, messages=(Message(role="user", content=text),),
                                  params=Params(temperature=options.temperature, seed=options.seed + i, max_tokens=1024))
            cid = f"rewrite-{i + 1}"
            try:
                reply = await self._rewriter(request)
            except Exception as exc:  # one failed call loses one candidate, not the run
                rejected.append((cid, f"the rewriter failed: {type(exc).__name__}: {exc}"))
                continue
            template = parse_rewrite(reply.text)
            why = check_template(template, allowed)
            if why is not None:
                rejected.append((cid, why))
                continue
            out.append(Candidate(cid, "rewrite", template, {"model": model, "seed": options.seed + i}))
        return out

    async def _failures(self, baseline: Scored, examples: Sequence[Example], metric: str, limit: int) -> str:
        if limit <= 0:
            return ""
        results = self._results(baseline.eval_run)
        by_id = {e.id: e for e in examples}
        wrong = [r for r in results if r.error is None and (v := r.scores.get(metric)) is not None and v < 0.5 and r.example_id in by_id]
        if not wrong:
            return ""
        lines = ["", "Examples it gets wrong (input, expected, what the model said):"]
        for r in wrong[:limit]:
            e = by_id[r.example_id]
            lines.append(f"- input: {str(e.input.get('input', ''))[:400]!r}; expected: {str(e.reference)[:200]!r}; got: {r.output[:200]!r}")
        return "\n".join(lines) + "\n"

    async def _example_sets(self, base: PromptVersion, suite: Suite, examples: Sequence[Example],
                            options: OptimiseOptions, rejected: list[tuple[str, str]]) -> list[Candidate]:
        if options.examples is None:
            return []
        if self._datasets is None:
            raise ConfigError("--examples", "this store cannot hold datasets", "use the SQLite, PostgreSQL or memory store")
        version = await asyncio.to_thread(self._dataset, options.examples)
        rows = await asyncio.to_thread(lambda: list(iter_rows(self._datasets, version)))  # type: ignore[arg-type]
        pool, overlap = example_pool(rows, dev_questions(suite, examples))
        if overlap:
            rejected.append((f"examples:{version.ref}", f"{overlap} rows left out: the dev set asks the same question"))
        rng = random.Random(options.seed)
        out: list[Candidate] = []
        for k in options.shots:
            if k > len(pool):
                rejected.append((f"examples-k{k}", f"{version.ref} has {len(pool)} usable rows, fewer than {k}"))
                continue
            for j in range(options.sets):
                chosen = rng.sample(pool, k)
                template = with_examples(base.template, [(q, a) for _, q, a in chosen])
                out.append(Candidate(f"examples-k{k}-{j + 1}", "examples", template,
                                     {"dataset": version.ref, "rows": [rid for rid, _, _ in chosen]}))
        return out

    def _dataset(self, ref: str) -> DatasetVersion:
        from aiestack.datasets.export import resolve

        assert self._datasets is not None
        try:
            version = resolve(self._datasets, ref)
        except KeyError as exc:
            raise ConfigError("--examples", str(exc.args[0]), "build it first: `aiestack datasets build NAME ...`") from None
        if version.kind != "chat":
            raise ConfigError("--examples", f"{version.ref} holds {version.kind} rows", "name a chat dataset")
        return version

    # ------------------------------------------------------------------ scoring

    async def _score(self, suite: Suite, spec: SystemSpec, examples: Sequence[Example], candidate: Candidate,
                     *, metric: str | None = None) -> Scored:
        run = await self._evaluate(candidate_suite(suite, spec, candidate.template), examples)
        self._runs[run.run.id] = run
        if metric is None:
            metric, _ = objective(run.run.summary.get("metrics", {}), None, source="--suite")
        values = [float(v) for r in run.results if r.error is None and (v := r.scores.get(metric)) is not None]
        errors = sum(r.error is not None for r in run.results)
        return Scored(candidate, run.run.id, sum(values) / len(values) if values else None, len(values), errors)

    def _metrics(self, scored: Scored) -> Mapping[str, Mapping[str, Any]]:
        metrics: Mapping[str, Mapping[str, Any]] = self._runs[scored.eval_run].run.summary.get("metrics", {})
        return metrics

    def _results(self, run_id: str) -> list[EvalResultRecord]:
        return list(self._runs[run_id].results)


def _best(scored: Sequence[Scored], higher: bool) -> Scored:
    """The best score (ties: the earliest, so the current version wins a tie)."""
    best = scored[0]
    for s in scored[1:]:
        if s.score is None:
            continue
        if best.score is None or (s.score > best.score if higher else s.score < best.score):
            best = s
    return best


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
