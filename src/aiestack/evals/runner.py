"""Running a suite: every system on every example, with bounded concurrency, a call cache and resume.

The runner is a wing: it calls systems through a ``ChatCall`` (the CLI passes ``stack.chat``), so
every call is an exchange with its trace, limits and routing, and the result links to it.

The hot path is kept lean because a cached re-run of thousands of examples must take seconds:
prompts are rendered from templates compiled once, the cache is read with one batched query for
the whole run, and results and new cache entries are written in batches (every
``flush_every`` results or ``flush_interval_s``, and always on the way out — also when the run is
interrupted, so a resumed run redoes only what was never written).

Every call bypasses the gateway's exact and semantic caches (``metadata["cache"] = "off"``, the
per-request control the Cache stage honours): an evaluation measures the system under test, and a
gateway cache would answer a changed prompt with the old prompt's answers, in 0 ms and 0 tokens. A
suite may opt back in with ``gateway_cache: true``; the answers the gateway's caches gave are then
marked cached, counted apart, and never written to the eval's own cache. The eval's call cache keys
each call on the model, messages, parameters and the system's ``fingerprint`` (what a route resolves
to: its configuration, prompt and collection versions), so a re-run re-uses only identical calls and
keeps their real latency, tokens and cost.

With a batch runner (``batch=``: Ray when ``[compute] ray_address`` is set), the metrics that need
no model are scored by it in batches (:mod:`aiestack.evals.scoring`); the scores are the same as
in-process. Results waiting for those scores are written once scored, so an interrupted run loses
them, and its resume answers them again from the call cache.

Judges (judge metrics, and the pairwise judge of ``compare:``) are side-calls: they reach their
model through the stack's side-call seam (``judge=stack.side_calls.caller("eval.judge")``,
:mod:`aiestack.sidecalls`), so a judge call is routed, priced, traced as an exchange of its own
(purpose ``eval.judge``) and never answered by a gateway cache (it carries ``cache = "off"`` too),
and through the eval's call cache, so a re-run with unchanged inputs makes no judge call at all.

A suite with ``compare:`` then has the pairwise judge battle the systems' answers
(:mod:`aiestack.evals.compare`) through the same cached caller; the ranking goes into the run's summary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from aiestack.cache.stage import REQUEST_FLAG as CACHE_FLAG
from aiestack.errors import AiestackError, ConfigError, NotFound
from aiestack.evals.agent_systems import AgentFactory, AgentSystems, RunAgent
from aiestack.evals.base import CorpusMetric, Metric, Sample, Score
from aiestack.evals.call_cache import CachedCall, CallCache, call_key
from aiestack.evals.compare import run_comparison
from aiestack.evals.metrics import build_metric
from aiestack.evals.scoring import BatchScorer, ScoreSamples, portable, safe_score
from aiestack.evals.suite import Suite, SystemSpec
from aiestack.evals.summary import summarize
from aiestack.models.base import EmbeddingModel
from aiestack.prompts.registry import PromptRegistry
from aiestack.sidecalls import ModelCaller
from aiestack.stores.base import EvalResultRecord, EvalStore
from aiestack.stores.prompts import PromptVersion
from aiestack.types import ChatRequest, Completion, EvalRun, Example, Exchange, Message, Params, Tool, new_id

if TYPE_CHECKING:
    from aiestack.batch import BatchRunner
    from aiestack.hookspecs import MetricSpec

ChatCall = Callable[[ChatRequest], Awaitable[Exchange]]
#: What a model or route name resolves to now (route config, prompt and collection versions), or "".
Fingerprint = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run did: the stored run, its results, and how many model calls it made."""

    run: EvalRun
    results: list[EvalResultRecord]
    calls: int  # calls sent through the pipeline (including those a gateway cache answered; an agent run's steps)
    cache_hits: int  # answered by the eval's own call cache, without a call
    resumed: int
    gateway_hits: int = 0  # calls answered by the gateway's caches (only with ``gateway_cache: true``)


@dataclass(frozen=True, slots=True)
class _Job:
    example: Example
    system: SystemSpec
    request: ChatRequest
    key: str


@dataclass(frozen=True, slots=True)
class _Answer:
    """A system's answer (fresh or from the cache) or the error that prevented one."""

    completion: Completion | None
    exchange_id: str | None
    contexts: tuple[str, ...] = ()
    cached: bool = False
    error: str | None = None
    agent_run: Any = None  # an agent system's RunResult
    details: Mapping[str, Any] | None = None  # an agent system's run: id, status, stop reason, steps


class CachingCaller:
    """Calls through the pipeline, answering from the cache when the same call was made before.

    The judges' calls go to ``judge`` (the side-call seam) through the same cache: a re-run with
    unchanged inputs makes no model calls at all. Without ``judge`` a judge call is a ``ConfigError``.
    """

    def __init__(
        self,
        call: ChatCall,
        cache: CallCache | None,
        semaphore: asyncio.Semaphore,
        *,
        gateway_cache: bool = False,
        fingerprint: Fingerprint | None = None,
        judge: ModelCaller | None = None,
    ) -> None:
        self._call = call
        self._judge = judge
        self._cache = cache
        self._semaphore = semaphore
        self._gateway_cache = gateway_cache
        self._fingerprint = fingerprint or (lambda model: "")
        self.calls = 0
        self.gateway_hits = 0
        self.pending_cache: list[tuple[str, CachedCall]] = []

    def key(self, request: ChatRequest) -> str:
        """The eval-cache key of a call: what is sent, and what the named system resolves to now."""
        return call_key(dataclasses.replace(request, metadata={}), self._fingerprint(request.model))

    def _uncached(self, request: ChatRequest) -> ChatRequest:
        """The request marked to bypass the gateway's caches, unless the suite opted back in."""
        if self._gateway_cache:
            return request
        return dataclasses.replace(request, metadata={**request.metadata, CACHE_FLAG: "off"})

    async def fresh(self, request: ChatRequest, key: str) -> _Answer:
        """Make the call (within the concurrency bound); queue a successful answer for the cache."""
        request = self._uncached(request)
        async with self._semaphore:
            self.calls += 1
            try:
                exchange = await self._call(request)
            except AiestackError as exc:
                return _Answer(None, None, error=f"{type(exc).__name__}: {exc}")
        if exchange.completion is None or exchange.error is not None:
            problem = exchange.error or f"the exchange ended with outcome {exchange.outcome!r}"
            return _Answer(None, exchange.id, error=f"{type(problem).__name__}: {problem}")
        contexts = tuple(hit.chunk.text for hit in exchange.hits)
        if exchange.outcome == "cached":  # a gateway cache answered: no real figures, not for our cache
            self.gateway_hits += 1
            return _Answer(exchange.completion, exchange.id, contexts, cached=True)
        if self._cache is not None:
            self.pending_cache.append((key, CachedCall(exchange.completion, exchange.id, contexts)))
        return _Answer(exchange.completion, exchange.id, contexts)

    async def judge(self, request: ChatRequest) -> Completion:
        """The :data:`~aiestack.evals.judges.JudgeCall` given to judge metrics (errors propagate)."""
        key = self.key(request)
        if self._cache is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit.completion
        if self._judge is None:
            raise ConfigError(
                "judge",
                "this eval runner was given no judge caller, and the suite uses a judge",
                'pass judge=stack.side_calls.caller("eval.judge") to EvalRunner',
            )
        async with self._semaphore:
            self.calls += 1
            completion = await self._judge(dataclasses.replace(self._uncached(request), stream=False))
        if self._cache is not None:
            self.pending_cache.append((key, CachedCall(completion, None, ())))
        return completion


class EvalRunner:
    """Runs suites and stores their results. One runner may run several suites one after another."""

    def __init__(
        self,
        call: ChatCall,
        store: EvalStore,
        *,
        cache: CallCache | None = None,
        fingerprint: Fingerprint | None = None,
        embeddings: EmbeddingModel | None = None,
        prompts: PromptRegistry | None = None,
        console: Console | None = None,
        flush_every: int = 64,
        flush_interval_s: float = 0.5,
        metrics: Mapping[str, MetricSpec] | None = None,
        batch: BatchRunner | None = None,
        judge: ModelCaller | None = None,
        agents: AgentFactory | None = None,
        run_agent: RunAgent | None = None,
    ) -> None:
        self._agents = agents  # builds the agents of agent systems (``agent:``); run_agent runs and stores them
        self._run_agent = run_agent
        self._judge = judge  # the judges' model calls: the stack's side-call seam
        self._batch = batch  # scores the metrics that need no model (None: inline, as answers arrive)
        self._plugin_metrics = metrics or {}  # registered by plugins (register_metrics)
        self._call = call
        self._store = store
        self._cache = cache
        self._fingerprint = fingerprint
        self._embeddings = embeddings
        self._prompts = prompts
        self._console = console or Console(stderr=True)
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s

    async def run(
        self,
        suite: Suite,
        examples: Sequence[Example],
        *,
        run_id: str | None = None,
        concurrency: int | None = None,
        progress: bool = False,
        source: str | None = None,
    ) -> RunResult:
        """Run (or, given the id of an earlier run of this suite, resume) ``suite`` on ``examples``.

        ``source`` (the suite file) is kept with the run so that a later report can show inputs.
        """
        registered = await self._registered_prompts(suite)
        run, done = self._start(suite, run_id)
        if source is not None:
            run = dataclasses.replace(run, summary={**run.summary, "source": source})
        if registered:
            used = {name: f"{v.name}@{v.version}" for name, v in registered.items()}
            run = dataclasses.replace(run, summary={**run.summary, "prompts": used})
        semaphore = asyncio.Semaphore(concurrency or suite.concurrency)
        caller = CachingCaller(
            self._call, self._cache, semaphore, gateway_cache=suite.gateway_cache, fingerprint=self._fingerprint,
            judge=self._judge,
        )
        per_sample, corpus, shipped = self._metrics(suite, caller)
        shipped_names = {name for name, _ in shipped.values()}
        local = [m for m in per_sample if m.name not in shipped_names]
        later = (
            _Later(BatchScorer(self._batch, ScoreSamples([spec for _, spec in shipped.values()], suite.base_dir)),
                   [m.name for m in per_sample], [name for name, _ in shipped.values()], sink_add=lambda r: sink.add(r))
            if shipped and self._batch is not None
            else None
        )
        jobs = [job for job in self._jobs(suite, examples, caller, registered) if (job.example.id, job.system.name) not in done]
        agents = self._agent_systems(suite)
        hits = self._cache.get_many(j.key for j in jobs if j.system.agent is None) if self._cache is not None else {}
        sink = _Sink(self._store, self._cache, caller, run.id, self._flush_every, self._flush_interval_s)
        finished = False
        try:
            with self._progress(progress) as bar:
                task = bar.add_task(suite.name, total=len(jobs))

                async def one(job: _Job) -> None:
                    hit = hits.get(job.key) if job.system.agent is None else None
                    if agents is not None and job.system.agent is not None:
                        answer = await _agent_answer(agents, job, semaphore)
                        caller.calls += answer.agent_run.steps if answer.agent_run is not None else 0
                    elif hit is not None:
                        answer = _Answer(hit.completion, hit.exchange_id, hit.contexts, cached=True)
                    else:
                        answer = await caller.fresh(job.request, job.key)
                    record, sample = await _score(job, answer, local)
                    if later is not None and sample is not None:
                        await later.add(record, sample)
                    else:
                        sink.add(record)
                    bar.advance(task)

                await asyncio.gather(*(one(job) for job in jobs))
                if later is not None:
                    await later.drain()
                sink.flush()
                results = self._store.eval_results(run.id)
                comparison = await self._compare(suite, examples, results, caller, bar)
            finished = True
        finally:
            sink.flush()
            if not finished:
                self._store.write_eval_run(
                    dataclasses.replace(run, summary={**run.summary, "status": "interrupted"})
                )
        run = self._finish(run, suite, examples, results, per_sample, corpus, comparison)
        return RunResult(run, results, caller.calls, len(hits), len(done), caller.gateway_hits)

    # ------------------------------------------------------------------ steps

    def _agent_systems(self, suite: Suite) -> AgentSystems | None:
        if not any(s.agent is not None for s in suite.systems):
            return None
        if self._agents is None:
            raise ConfigError(
                "systems.agent", "this eval runner was given no way to build agents, and the suite has agent systems",
                "pass agents=stack_agents(stack) to EvalRunner (aiestack eval run does)",
            )  # fmt: skip
        return AgentSystems(self._agents, self._run_agent, suite.name, gateway_cache=suite.gateway_cache)

    def _start(self, suite: Suite, run_id: str | None) -> tuple[EvalRun, set[tuple[str, str]]]:
        """A new run, or the run to resume with the (example, system) pairs it already answered."""
        systems = tuple(s.name for s in suite.systems)
        if run_id is None:
            run = EvalRun(id=new_id("run"), suite=suite.name, systems=systems, summary={"status": "running"})
            self._store.write_eval_run(run)
            return run, set()
        previous = self._store.get_eval_run(run_id)
        if previous is None:
            raise NotFound(f"No evaluation run {run_id!r}.", hint="List runs with `aiestack eval list`.")
        if previous.suite != suite.name:
            raise ConfigError(
                "--resume",
                f"run {run_id} is of suite {previous.suite!r}, not {suite.name!r}",
                "resume it with its own suite",
            )
        done = {(r.example_id, r.system) for r in self._store.eval_results(run_id) if r.error is None}
        run = dataclasses.replace(
            previous,
            systems=tuple(dict.fromkeys((*previous.systems, *systems))),
            summary={"status": "running"},
        )
        self._store.write_eval_run(run)
        return run, done

    async def _compare(
        self,
        suite: Suite,
        examples: Sequence[Example],
        results: list[EvalResultRecord],
        caller: CachingCaller,
        bar: Progress,
    ) -> dict[str, Any] | None:
        """Pairwise battles between the systems (``compare:``), judged through the cached caller."""
        if suite.compare is None:
            return None
        task = bar.add_task("compare", total=None)
        return await run_comparison(
            suite.compare,
            suite.judge,
            [s.name for s in suite.systems],
            examples,
            results,
            caller.judge,
            on_total=lambda total: bar.update(task, total=total),
            on_done=lambda: bar.advance(task),
        )

    def _metrics(
        self, suite: Suite, caller: CachingCaller
    ) -> tuple[list[Metric], list[CorpusMetric], dict[int, tuple[str, tuple[str, dict[str, Any]]]]]:
        """The per-example and corpus metrics, and (with a batch runner) those it scores:
        position in the suite → (the metric's name, its spec)."""
        judge_model = suite.judge.model if suite.judge is not None else ""
        # The suite's judge params (e.g. temperature, max_tokens) override what the metric asks for,
        # except its JSON schema, and a seed the metric set itself (self-consistency's distinct samples).
        overrides = dict(suite.judge.params) if suite.judge is not None else {}
        overrides.pop("response_format", None)
        judge_params = SystemSpec(name="judge", params=overrides).to_params() if overrides else None

        async def judge_call(request: ChatRequest) -> Completion:
            if not request.model and judge_model:
                request = dataclasses.replace(request, model=judge_model)
            if judge_params is not None:
                given = {k: getattr(judge_params, k) for k in overrides if not (k == "seed" and request.params.seed is not None)}
                request = dataclasses.replace(request, params=dataclasses.replace(request.params, **given))
            return await caller.judge(request)

        per_sample: list[Metric] = []
        corpus: list[CorpusMetric] = []
        shipped: dict[int, tuple[str, tuple[str, dict[str, Any]]]] = {}
        for position, spec in enumerate(suite.metrics):
            metric = build_metric(
                spec.name,
                spec.options,
                judge_call=judge_call,
                embeddings=self._embeddings,
                base_dir=suite.base_dir,
                extra=self._plugin_metrics,
            )
            if isinstance(metric, CorpusMetric):
                corpus.append(metric)
            else:
                per_sample.append(metric)
                if self._batch is not None and portable(spec.name, self._plugin_metrics):
                    shipped[position] = (metric.name, (spec.name, spec.options))
        names = [m.name for m in per_sample] + [m.name for m in corpus]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(
                "metrics",
                f"two metrics are named {', '.join(dupes)}",
                "give one of them a different 'name' option",
            )
        return per_sample, corpus, shipped

    async def _registered_prompts(self, suite: Suite) -> dict[str, PromptVersion]:
        """The registry version each system's ``prompt_ref`` names now (read once, off the event loop)."""
        refs = {s.name: s.prompt_ref for s in suite.systems if s.prompt_ref is not None}
        if not refs:
            return {}
        if self._prompts is None:
            raise ConfigError(
                "systems.prompt_ref", "this store cannot hold prompts", "use the SQLite, PostgreSQL or memory store"
            )
        found: dict[str, PromptVersion] = {}
        for system, ref in refs.items():
            try:
                found[system] = await asyncio.to_thread(self._prompts.get, ref)
            except AiestackError:
                raise ConfigError(
                    f"systems.{system}.prompt_ref",
                    f"the registry has no prompt {ref!r}",
                    "push it first: `aiestack prompts import DIR` (each NAME.j2 becomes NAME@production) "
                    "or `aiestack prompts push NAME FILE --label LABEL`",
                ) from None
        return found

    def _jobs(
        self,
        suite: Suite,
        examples: Sequence[Example],
        caller: CachingCaller,
        registered: Mapping[str, PromptVersion],
    ) -> list[_Job]:
        jobs: list[_Job] = []
        for system in suite.systems:
            registry_prompt = registered.get(system.name)
            user, sys_template = suite_templates(suite, system, registry_prompt.template if registry_prompt else None)
            params = system.to_params()
            for example in examples:
                messages = render_messages(user, sys_template, example)
                request = ChatRequest(
                    model=system.model,
                    messages=tuple(messages),
                    params=_with_tools(params, example, suite.dataset.tools),
                    metadata={
                        "eval_suite": suite.name,
                        "eval_system": system.name,
                        "eval_example": example.id,
                    },
                )
                # The key leaves out the metadata: the same call made by another suite is the same call.
                jobs.append(_Job(example, system, request, caller.key(request)))
        return jobs

    def _finish(
        self,
        run: EvalRun,
        suite: Suite,
        examples: Sequence[Example],
        results: list[EvalResultRecord],
        per_sample: list[Metric],
        corpus: list[CorpusMetric],
        comparison: dict[str, Any] | None = None,
    ) -> EvalRun:
        by_id = {e.id: e for e in examples}
        corpus_scores: dict[str, dict[str, float]] = {}
        for metric in corpus:
            for system in run.systems:
                samples = [
                    Sample(by_id[r.example_id], system, r.output)
                    for r in results
                    if r.system == system and r.error is None and r.example_id in by_id
                ]
                if samples:
                    corpus_scores.setdefault(system, {})[metric.name] = metric.corpus_score(samples)
        orientation = {m.name: m.higher_is_better for m in per_sample}
        systems = summarize(results, orientation, corpus=corpus_scores)
        summary: dict[str, Any] = {
            "status": "finished",
            "source": run.summary.get("source"),
            "examples": len(examples),
            "metrics": {m.name: {"higher_is_better": m.higher_is_better, "corpus": False} for m in per_sample}
            | {m.name: {"higher_is_better": m.higher_is_better, "corpus": True} for m in corpus},
            "gates": [g.model_dump(exclude_none=True) for g in suite.gates],
            "systems": {name: s.as_dict() for name, s in systems.items()},
            "models": {s.name: s.model for s in suite.systems},
        }
        if comparison is not None:
            summary["compare"] = comparison
        if "prompts" in run.summary:  # the registry version each system ran with
            summary["prompts"] = run.summary["prompts"]
        finished = dataclasses.replace(run, finished_at=time.time(), summary=summary)
        self._store.write_eval_run(finished)
        return finished

    def _progress(self, enabled: bool) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            disable=not enabled,
            transient=True,
        )


async def _score(
    job: _Job, answer: _Answer, metrics: Sequence[Metric]
) -> tuple[EvalResultRecord, Sample | None]:
    """Score one answer with ``metrics``; the record and the sample (None: the call failed, no scores)."""
    completion = answer.completion
    base = EvalResultRecord(
        run_id="",
        example_id=job.example.id,
        system=job.system.name,
        output=completion.text if completion is not None else "",
        exchange_id=answer.exchange_id,
        error=answer.error,
        cached=answer.cached,
        created_at=time.time(),
    )
    if completion is None:
        return base, None
    sample = Sample(
        example=job.example,
        system=job.system.name,
        output=completion.text,
        completion=completion,
        latency_ms=completion.timing.total_ms,
        cost_usd=completion.cost_usd,
        contexts=answer.contexts,
        exchange_id=answer.exchange_id,
        agent_run=answer.agent_run,
    )
    scored = [(metric.name, await safe_score(metric, sample)) for metric in metrics]
    record = dataclasses.replace(base, latency_ms=sample.latency_ms, cost_usd=sample.cost_usd)
    if answer.details is not None:
        record = dataclasses.replace(record, details={"agent": dict(answer.details)})
    return _with_scores(record, scored), sample


async def _agent_answer(agents: AgentSystems, job: _Job, semaphore: asyncio.Semaphore) -> _Answer:
    """An agent system's run on the example's task (the rendered user message), as an answer."""
    task = job.request.messages[-1].text
    try:
        found = await agents.answer(job.system, task, semaphore)
    except ConfigError:
        raise
    except (AiestackError, ValueError) as exc:  # the run could not start (an empty task): no scores
        return _Answer(None, None, error=f"{type(exc).__name__}: {exc}")
    return _Answer(found.completion, found.exchange_id, agent_run=found.run, details=found.details)


def _with_scores(record: EvalResultRecord, scored: Sequence[tuple[str, Score]]) -> EvalResultRecord:
    """``record`` with these (metric name, score) pairs added to its scores and details, in order."""
    scores: dict[str, float | None] = dict(record.scores)
    details: dict[str, Any] = dict(record.details)
    for name, score in scored:
        scores[name] = score.value
        if score.detail or score.error:
            details[name] = {**score.detail, **({"error": score.error} if score.error else {})}
    return dataclasses.replace(record, scores=scores, details=details)


class _Later:
    """Results waiting for the batch runner's scores: scored ``every`` at a time, then written.

    ``order`` is every per-example metric's name in the suite's order (the scores are stored in
    that order, as an inline run stores them); ``shipped`` the names the runner scores.
    """

    def __init__(
        self,
        scorer: BatchScorer,
        order: Sequence[str],
        shipped: Sequence[str],
        *,
        sink_add: Callable[[EvalResultRecord], None],
        every: int = 128,
    ) -> None:
        self._scorer = scorer
        self._order = tuple(order)
        self._shipped = tuple(shipped)
        self._sink_add = sink_add
        self._every = every
        self._pending: list[tuple[EvalResultRecord, Sample]] = []

    async def add(self, record: EvalResultRecord, sample: Sample) -> None:
        self._pending.append((record, sample))
        if len(self._pending) >= self._every:
            await self.drain()

    async def drain(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        remote = await self._scorer.score([sample for _, sample in batch])
        for (record, _), scores in zip(batch, remote, strict=True):
            merged = _with_scores(record, list(zip(self._shipped, scores, strict=True)))
            in_order = {name: merged.scores[name] for name in self._order if name in merged.scores}
            details = {name: merged.details[name] for name in self._order if name in merged.details}
            self._sink_add(dataclasses.replace(merged, scores=in_order, details=details))


class _Sink:
    """Buffers results and cache entries; writes them in batches (and whatever is left on flush)."""

    def __init__(
        self,
        store: EvalStore,
        cache: CallCache | None,
        caller: CachingCaller,
        run_id: str,
        every: int,
        interval_s: float,
    ) -> None:
        self._store = store
        self._cache = cache
        self._caller = caller
        self._run_id = run_id
        self._every = every
        self._interval_s = interval_s
        self._buffer: list[EvalResultRecord] = []
        self._last = time.monotonic()

    def add(self, result: EvalResultRecord) -> None:
        self._buffer.append(dataclasses.replace(result, run_id=self._run_id))
        if len(self._buffer) >= self._every or time.monotonic() - self._last >= self._interval_s:
            self.flush()

    def flush(self) -> None:
        if self._cache is not None and self._caller.pending_cache:
            entries, self._caller.pending_cache = self._caller.pending_cache, []
            self._cache.put_many(entries)
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._store.write_eval_results(batch)
        self._last = time.monotonic()


class LazyEmbeddings:
    """An embedding model built on first use: loading one takes seconds, and most suites never embed."""

    def __init__(self, factory: Callable[[], EmbeddingModel]) -> None:
        self._factory = factory
        self._model: EmbeddingModel | None = None

    def _get(self) -> EmbeddingModel:
        if self._model is None:
            self._model = self._factory()
        return self._model

    @property
    def name(self) -> str:
        return self._get().name

    @property
    def dim(self) -> int:
        return self._get().dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._get().embed(texts)

    async def aclose(self) -> None:
        """The factory's owner (the stack) closes the model it built."""


def suite_templates(
    suite: Suite, system: SystemSpec | None = None, system_text: str | None = None
) -> tuple[Template, Template | None]:
    """The user and system prompt templates of ``suite`` as ``system`` overrides them; ``system_text``
    (a registry prompt's template) replaces the system prompt."""
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    name = system.name if system is not None else "suite"
    try:
        user = env.from_string((system.prompt if system is not None else None) or suite.prompt)
        sys_text = system.system_prompt if system is not None and system.system_prompt is not None else suite.system_prompt
        if system_text is not None:
            sys_text = system_text
        return user, env.from_string(sys_text) if sys_text else None
    except TemplateError as exc:
        raise ConfigError(f"systems.{name}.prompt", f"the prompt template is invalid: {exc}", "fix the Jinja2 syntax") from None


def render_messages(user: Template, system: Template | None, example: Example) -> list[Message]:
    """The messages an eval sends for ``example``: the rendered system prompt (if any), then the user prompt.
    The templates see the example's fields, ``example``, ``reference`` and ``metadata``."""
    context = {**example.input, "example": example.input, "reference": example.reference, "metadata": example.metadata}
    try:
        messages = [Message(role="user", content=user.render(context))]
        if system is not None:
            messages.insert(0, Message(role="system", content=system.render(context)))
    except UndefinedError as exc:
        raise ConfigError(
            "prompt", f"example {example.id}: {exc.message}", f"use fields of the dataset: {', '.join(example.input)}"
        ) from None
    return messages


def _with_tools(params: Params, example: Example, field: str | None) -> Params:
    """``params`` offering the example's tools (``dataset.tools``), converted to :class:`Tool` s."""
    if field is None:
        return params
    from aiestack.evals.bfcl.checker import wire_name
    from aiestack.evals.bfcl.runner import parameters
    from aiestack.evals.datasets import field_value
    from aiestack.evals.metrics.tools import function_docs

    docs = function_docs(field_value(dict(example.input), field))
    if not docs:
        return params
    tools = tuple(
        Tool(name=wire_name(d["name"]), description=d["description"], parameters=d["parameters"] if d["parameters"].get("type") == "object" else parameters(d))
        for d in docs
    )
    return dataclasses.replace(params, tools=tools)
