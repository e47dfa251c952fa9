"""One turn of the flywheel: dataset → curate → candidate → evaluate → promote, every step stored.

A run is a :class:`~aiestack.stores.flywheel.FlywheelRun` with one
:class:`~aiestack.stores.flywheel.FlywheelStep` per step, each stored when it starts (``running``)
and when it ends (``done`` with its outputs, or ``failed`` with the error). The outputs carry the ids
that link the lineage: the exchanges a dataset was built from → the dataset versions → the candidate
(a prompt version, a route's DICL table, a LoRA model, an embedding model and collection version) →
the eval runs → the promotion.

**Resumable.** Running a run id again re-reads its steps and skips those ``done`` (their stored
outputs feed the next steps): a run interrupted in the evaluation goes on from the evaluation. A
resumed run must run the same spec (its fingerprint is kept), else it is refused.

**Promoted only on evidence.** The ``evaluate`` step runs the same suite twice — the current
deployment and the candidate, the same system name, the same examples — and judges with
:func:`aiestack.flywheel.gate.decide` (the suite's regression gates and the paired bootstrap of the
gain). The ``promote`` step changes exactly the declared thing, and only when that decision passed;
a failed gate is recorded as ``refused`` with the reason, and nothing changes.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiestack.errors import AiestackError, ConfigError, NotFound
from aiestack.flywheel.prompt_opt import Evaluate
from aiestack.flywheel.spec import FlywheelSpec
from aiestack.prompts.registry import PromptRegistry
from aiestack.sidecalls import ModelCaller
from aiestack.stores.flywheel import FlywheelRun, FlywheelStep, FlywheelStore
from aiestack.types import new_id

#: Evaluate on a variant of the stack: ``{"routes": {route: {key: value}}, "models": {name: table}}``
#: (a route's keys replaced, models added).
Variant = Callable[[Mapping[str, Mapping[str, Mapping[str, Any]]]], AbstractAsyncContextManager[Evaluate]]
#: Trains a LoRA adapter: ``aiestack.finetune.sft`` / ``dpo``'s signature (tests pass a fake).
Train = Callable[..., Any]


@dataclass
class FlywheelTools:
    """What the steps use, from the stack (the CLI builds it; tests build it from fakes)."""

    store: Any  # FlywheelStore + DatasetStore + EvalStore + the exchanges (one store in practice)
    prompts: PromptRegistry | None
    evaluate: Evaluate  # the eval harness over the current deployment
    rewriter: ModelCaller | None = None  # prompt rewrites (the side-call seam)
    variant: Variant | None = None  # the eval harness over a stack with changed routes and models (dicl, sft, dpo)
    routes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the [routes] in use
    config_path: Path | None = None  # the aiestack.toml in use (route promotions edit it)
    workdir: Path | None = None  # where trained adapters go (a folder per run)
    train: Mapping[str, Train] = field(default_factory=dict)  # "sft"/"dpo" → trainer (default: aiestack.finetune's)
    documents: Any = None  # the DocumentStore (embedding candidates)
    embeddings_for: Callable[[str], Any] | None = None  # a collection's embedding model by name (Resources.embeddings_for)
    embedding_versions: Any = None  # the EmbeddingVersions registry (finetuned embedding models)
    finetune_embeddings: Callable[..., Awaitable[Any]] | None = None  # default: aiestack.finetune.embedding_run's


class StepFailed(AiestackError):
    """A step raised: the run is stored ``failed`` with the step's error, and can be resumed."""

    code = "flywheel_step_failed"


@dataclass
class Context:
    """What a step sees: the spec, the tools, the outputs of the steps before it, and the run."""

    spec: FlywheelSpec
    tools: FlywheelTools
    run_id: str
    outputs: dict[str, Mapping[str, Any]]
    say: Callable[[str], None]


StepFn = Callable[[Context], Awaitable[tuple[Mapping[str, Any], Mapping[str, Any]]]]


class Flywheel:
    """Runs (and resumes) flywheel specs against a :class:`FlywheelStore`."""

    def __init__(self, tools: FlywheelTools, *, clock: Callable[[], float] = time.time,
                 on_progress: Callable[[str], None] | None = None) -> None:
        if not isinstance(tools.store, FlywheelStore):
            raise ConfigError("store.url", f"the store {type(tools.store).__name__} cannot hold flywheel runs", "use SQLite, PostgreSQL or memory")
        self._tools = tools
        self._store: FlywheelStore = tools.store
        self._clock = clock
        self._say = on_progress or (lambda _: None)

    async def run(self, spec: FlywheelSpec, *, run_id: str | None = None, source: str | None = None) -> FlywheelRun:
        from aiestack.flywheel.steps import plan

        run, done = await asyncio.to_thread(self._start, spec, run_id, source)
        ctx = Context(spec, self._tools, run.run_id, {s.name: s.outputs for s in done.values()}, self._say)
        for position, (name, kind, fn) in enumerate(plan(spec)):
            if name in done:
                self._say(f"{name}: done before, skipped")
                continue
            started = self._clock()
            await self._put_step(FlywheelStep(run.run_id, name, kind, position, "running", started))
            try:
                inputs, outputs = await fn(ctx)
            except BaseException as exc:
                error = _describe(exc)
                await self._put_step(FlywheelStep(run.run_id, name, kind, position, "failed", started, self._clock(), error=error))
                run = await self._put_run(run, "failed", None, f"step {name} failed: {error}")
                if isinstance(exc, Exception):
                    raise StepFailed(f"Flywheel run {run.run_id}: step {name} failed: {error}",
                                     hint=f"fix the cause, then resume it: aiestack flywheel run FILE --resume {run.run_id}") from exc
                raise
            ctx.outputs[name] = outputs
            await self._put_step(FlywheelStep(run.run_id, name, kind, position, "done", started, self._clock(), dict(inputs), dict(outputs)))
            self._say(f"{name}: {outputs.get('summary', 'done')}")
            if outputs.get("stop"):
                return await self._put_run(run, "finished", "refused", str(outputs.get("summary", "stopped")))
        promote = ctx.outputs.get("promote", {})
        outcome = "promoted" if promote.get("promoted") else "refused"
        return await self._put_run(run, "finished", outcome, str(promote.get("summary", "")))

    def _start(self, spec: FlywheelSpec, run_id: str | None, source: str | None) -> tuple[FlywheelRun, dict[str, FlywheelStep]]:
        now = self._clock()
        payload = {"fingerprint": spec.fingerprint(), **spec.model_dump(mode="json", by_alias=True)}
        if run_id is None:
            run = FlywheelRun(new_id("fw"), spec.name, "running", now, now, payload, source)
            self._store.put_flywheel_run(run)
            return run, {}
        previous = self._store.get_flywheel_run(run_id)
        if previous is None:
            raise NotFound(f"No flywheel run {run_id!r}.", hint="List runs with `aiestack flywheel runs`.")
        if previous.spec.get("fingerprint") != spec.fingerprint():
            raise ConfigError("--resume", f"run {run_id} ran another version of this flywheel file",
                              "resume it with the file as it was, or start a new run (leave out --resume)")
        if previous.status == "finished":
            raise ConfigError("--resume", f"run {run_id} is finished ({previous.outcome}: {previous.detail})", "start a new run")
        done = {s.name: s for s in self._store.flywheel_steps(run_id) if s.status == "done"}
        run = FlywheelRun(previous.run_id, previous.name, "running", previous.created_at, now, previous.spec, previous.source or source)
        self._store.put_flywheel_run(run)
        return run, done

    async def _put_step(self, step: FlywheelStep) -> None:
        await asyncio.to_thread(self._store.put_flywheel_step, step)

    async def _put_run(self, run: FlywheelRun, status: str, outcome: str | None, detail: str) -> FlywheelRun:
        updated = FlywheelRun(run.run_id, run.name, status, run.created_at, self._clock(), run.spec, run.source, outcome, detail[:2000])
        await asyncio.to_thread(self._store.put_flywheel_run, updated)
        return updated


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AiestackError):
        return f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted"
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
