"""The flywheel's steps. Each takes the run's :class:`~aiestack.flywheel.runner.Context` and returns
``(inputs, outputs)``, both JSON, stored with the step; the outputs of one feed the next.

``dataset`` → ``curate`` → ``candidate`` (``optimise_prompt`` or ``dicl``) → ``evaluate`` → ``promote``.
Store calls run in threads (nothing heavy on the event loop); model calls go through the eval harness
and the side-call seam the tools carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiestack.errors import ConfigError, NotFound
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import RunResult
from aiestack.evals.suite import Suite, SystemSpec, load_suite
from aiestack.flywheel import embedding
from aiestack.flywheel.gate import decide, objective
from aiestack.flywheel.prompt_opt import OptimiseOptions, PromptOptimiser, pick_system
from aiestack.flywheel.runner import Context, StepFn
from aiestack.flywheel.spec import (
    DiclCandidate,
    EmbeddingCandidate,
    FlywheelSpec,
    LoraCandidate,
    PromptCandidate,
)
from aiestack.prompts.registry import PromptRegistry, parse_ref
from aiestack.types import Example

#: Exchange ids kept in a step's outputs (the count is always kept).
MAX_IDS = 1000


def plan(spec: FlywheelSpec) -> list[tuple[str, str, StepFn]]:
    """The steps of ``spec`` in order: (name, kind, function)."""
    steps: list[tuple[str, str, StepFn]] = []
    if spec.dataset is not None:
        steps.append(("dataset", "build", build))
        if spec.dataset.curate:
            steps.append(("curate", "curate", curate))
    if isinstance(spec.candidate, PromptCandidate):
        steps.append(("candidate", "optimise_prompt", optimise_prompt))
    elif isinstance(spec.candidate, DiclCandidate):
        steps.append(("candidate", "dicl", dicl))
    elif isinstance(spec.candidate, EmbeddingCandidate):
        steps.append(("candidate", "embedding", embedding.finetune))
    else:
        steps.append(("candidate", spec.candidate.kind, finetune))
    steps += [("evaluate", "evaluate", evaluate), ("promote", "promote", promote)]
    return steps


# ---------------------------------------------------------------------- data


async def build(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    from aiestack.datasets import ExchangeSelection, build_dataset, from_exchanges, from_file, from_suite

    d = ctx.spec.dataset
    assert d is not None
    store = ctx.tools.store
    if d.source == "exchanges":
        f = d.filters
        selection = ExchangeSelection(route=f.route, model=f.model, tenant=f.tenant, since=f.since, until=f.until,
                                      min_feedback=f.min_feedback, guard=f.guard, prompt=f.prompt,
                                      prompt_version=f.prompt_version, limit=f.limit)
        inputs: dict[str, Any] = {"from": "exchanges", "filters": selection.describe()}
        built = await asyncio.to_thread(from_exchanges, store, selection, d.kind)
    else:
        assert d.path is not None
        path = ctx.spec.path(d.path)
        inputs = {"from": d.source, "path": str(path)}
        built = await asyncio.to_thread(from_file, path, d.kind) if d.source == "file" else await asyncio.to_thread(from_suite, path)
    if not built.rows:
        left = ", ".join(f"{n} {why}" for why, n in built.skipped.items()) or "nothing matched"
        raise NotFound(f"no rows to build {d.name!r} from: {left}", hint="widen dataset.filters, or turn on tracing.content to store messages")
    version, created = await asyncio.to_thread(build_dataset, store, d.name, built, message=f"flywheel run {ctx.run_id}")
    exchanges = [str(r.lineage["exchange_id"]) for r in built.rows if r.lineage.get("exchange_id")]
    return inputs, {
        "dataset": version.ref,
        "created": created,
        "rows": version.rows,
        "skipped": dict(built.skipped),
        "exchanges": exchanges[:MAX_IDS],
        "exchange_count": len(exchanges),
        "summary": f"{'built' if created else 'unchanged:'} {version.ref}, {version.rows} rows"
        + (f" from {len(exchanges)} exchanges" if exchanges else ""),
    }


async def curate(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    from aiestack.datasets.curate import build_steps
    from aiestack.datasets.curate import curate as run_curation
    from aiestack.datasets.export import resolve

    d = ctx.spec.dataset
    assert d is not None
    store = ctx.tools.store
    ref = str(ctx.outputs["dataset"]["dataset"])
    version = await asyncio.to_thread(resolve, store, ref)
    steps = build_steps(list(d.curate), against=[ctx.spec.path(p) for p in d.against])
    pushed, created, result = await asyncio.to_thread(run_curation, store, version, steps, message=f"flywheel run {ctx.run_id}")
    removed = {r.step: dict(r.reasons) for r in result.reports}
    return {"dataset": ref, "steps": list(d.curate)}, {
        "dataset": pushed.ref,
        "parent": version.ref,
        "created": created,
        "rows": pushed.rows,
        "removed": removed,
        "removed_ids": {r.step: [x.row_id for x in r.removed[:50]] for r in result.reports if r.removed},
        "summary": f"curated {pushed.ref}: kept {pushed.rows} of {version.rows} rows",
    }


def examples_ref(ctx: Context) -> str | None:
    """The dataset version the candidate uses: the curated one, else the built one, else none."""
    for step in ("curate", "dataset"):
        if step in ctx.outputs:
            return str(ctx.outputs[step]["dataset"])
    return None


# ---------------------------------------------------------------------- candidates


def _registry(ctx: Context) -> PromptRegistry:
    if ctx.tools.prompts is None:
        raise ConfigError("store.url", "this store cannot hold prompts", "use the SQLite, PostgreSQL or memory store")
    return ctx.tools.prompts


def _suite(ctx: Context, path: Any, limit: int | None = None) -> tuple[Suite, list[Example]]:
    if path is None:
        raise ConfigError("evaluate.suite", "this candidate is evaluated on a suite", "add evaluate.suite")
    suite = load_suite(ctx.spec.path(path))
    if limit is not None:
        suite = suite.model_copy(update={"dataset": suite.dataset.model_copy(update={"limit": limit})})
    return suite, load_examples(suite.dataset, suite.dataset_path)


async def optimise_prompt(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    c = ctx.spec.candidate
    assert isinstance(c, PromptCandidate)
    registry = _registry(ctx)
    suite, examples = await asyncio.to_thread(_suite, ctx, c.suite)
    ref = examples_ref(ctx) if c.examples else None
    options = OptimiseOptions(rewrites=c.rewrites, model=c.model, examples=ref, shots=tuple(c.shots), sets=c.sets,
                              metric=c.metric, seed=c.seed)
    optimiser = PromptOptimiser(registry, ctx.tools.evaluate, rewriter=ctx.tools.rewriter, datasets=ctx.tools.store)
    result = await optimiser.optimise(c.prompt, suite, examples, options, system=c.system, push=True, on_progress=ctx.say)
    inputs = {"prompt": c.prompt, "suite": suite.name, "examples": ref, "rewrites": c.rewrites}
    base = f"{result.base.name}@{result.base.version}"
    outputs: dict[str, Any] = {
        "prompt": result.base.name,
        "base": base,
        "version": result.pushed.version if result.pushed is not None else None,
        "metric": result.metric,
        "candidates": [s.as_dict() for s in result.scored],
        "rejected": [{"id": i, "why": why} for i, why in result.rejected],
        "eval_runs": [s.eval_run for s in result.scored],
        "decision": result.decision.as_dict(),
    }
    if result.pushed is None:
        outputs |= {"stop": True, "summary": f"no candidate beat {base} on the dev suite: {result.decision.reason}"}
    else:
        outputs |= {"candidate": f"{result.pushed.name}@{result.pushed.version}",
                    "summary": f"candidate {result.pushed.name}@{result.pushed.version} ({result.best.candidate.id}) from {base}"}
    return inputs, outputs


async def dicl(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    c = ctx.spec.candidate
    assert isinstance(c, DiclCandidate)
    if c.route not in ctx.tools.routes:
        known = ", ".join(sorted(ctx.tools.routes)) or "none"
        raise ConfigError("candidate.route", f"there is no route {c.route!r} in the configuration", f"name a [routes.NAME] (routes: {known})")
    ref = examples_ref(ctx)
    assert ref is not None  # the spec requires a dataset step
    table = {"dataset": ref, "k": c.k, "min_similarity": c.min_similarity}
    current = ctx.tools.routes[c.route].get("dicl") or None
    return {"route": c.route, "dataset": ref}, {
        "route": c.route,
        "dicl": table,
        "route_changes": {"dicl": table},
        "current": current,
        "candidate": f"route {c.route} with dicl {ref} (k={c.k})",
        "summary": f"candidate: route {c.route} showing {c.k} examples from {ref}",
    }


async def finetune(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Train a LoRA adapter on the dataset version (in a thread: it is CPU- or GPU-bound for minutes)."""
    c = ctx.spec.candidate
    assert isinstance(c, LoraCandidate)
    if c.route not in ctx.tools.routes:
        known = ", ".join(sorted(ctx.tools.routes)) or "none"
        raise ConfigError("candidate.route", f"there is no route {c.route!r} in the configuration", f"name a [routes.NAME] (routes: {known})")
    ref = examples_ref(ctx)
    assert ref is not None  # the spec requires a dataset step
    name = c.name or f"{c.route}-{c.kind}"
    if ctx.tools.workdir is None:
        raise ConfigError("data_dir", "these flywheel tools have no folder for adapters", "run it with `aiestack flywheel run`")
    out = ctx.tools.workdir / ctx.run_id / name
    train = ctx.tools.train.get(c.kind)
    if train is None:
        from aiestack.finetune import dpo, sft

        train = sft if c.kind == "sft" else dpo
    from aiestack.finetune import LoraOptions, TrainOptions

    ctx.say(f"training a LoRA adapter ({c.kind}) of {c.base} on {ref}, at most {c.max_steps} steps")
    result = await asyncio.to_thread(
        train, ref, model=c.base, output_dir=out, store=ctx.tools.store, lora=LoraOptions(r=c.r, alpha=c.alpha),
        options=TrainOptions(max_steps=c.max_steps, lr=c.lr, budget_minutes=c.budget_minutes),
    )  # fmt: skip
    if result.gguf is None:
        raise ConfigError("candidate.base", f"the adapter of {c.base} has no GGUF export, so llama.cpp cannot serve it",
                          "train the embedded model (base: embedded) or a GGUF base")
    table = served_model_table(c.base, result.gguf)
    deployments = list(ctx.tools.routes[c.route].get("deployments", []))
    record = dict(result.record)
    return {"dataset": ref, "base": c.base, "max_steps": c.max_steps, "lr": c.lr, "r": c.r}, {
        "route": c.route,
        "model": name,
        "model_table": table,
        "models": {name: table},
        "route_changes": {"deployments": [{"model": name}]},  # evaluated alone: every test call goes to it
        "deployments": deployments,
        "share": c.share,
        "adapter": str(result.adapter_dir),
        "run_record": str(result.record_path),
        "steps": record.get("steps"),
        "final_loss": result.losses[-1] if result.losses else None,
        "candidate": f"model {name} (LoRA {c.kind} of {c.base} on {ref})",
        "summary": f"trained {name}: {c.kind} LoRA of {c.base} on {ref}"
        + (f", {record.get('steps')} steps, last loss {result.losses[-1]:.4g}" if result.losses else ""),
    }


# ---------------------------------------------------------------------- evaluate and promote


def _only(suite: Suite, system: SystemSpec) -> Suite:
    return suite.model_copy(update={"systems": [system], "compare": None})


async def evaluate(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    if isinstance(ctx.spec.candidate, EmbeddingCandidate):
        return await embedding.evaluate(ctx)
    e = ctx.spec.evaluate
    suite, examples = await asyncio.to_thread(_suite, ctx, e.suite, e.limit)
    cand = ctx.outputs["candidate"]
    if isinstance(ctx.spec.candidate, PromptCandidate):
        registry = _registry(ctx)
        name = str(cand["prompt"])
        label = ctx.spec.promote.label
        current = await asyncio.to_thread(registry.get, parse_ref(f"{name}@{label}"))
        system = pick_system(suite, name, e.system)
        baseline_ref, candidate_ref = f"{name}@{current.version}", str(cand["candidate"])
        pin = {"prompt_ref": None, "system_prompt": None}
        base_run = await ctx.tools.evaluate(_only(suite, system.model_copy(update={**pin, "prompt_ref": baseline_ref})), examples)
        cand_run = await ctx.tools.evaluate(_only(suite, system.model_copy(update={**pin, "prompt_ref": candidate_ref})), examples)
        baseline_desc, candidate_desc = f"{baseline_ref} ({name}@{label})", candidate_ref
    else:
        system = _route_system(suite, str(cand["route"]), e.system)
        if ctx.tools.variant is None:
            raise ConfigError("candidate.kind", "these flywheel tools cannot build a variant of the stack", "run it with `aiestack flywheel run`")
        base_run = await ctx.tools.evaluate(_only(suite, system), examples)
        changes: dict[str, Any] = {"routes": {str(cand["route"]): dict(cand["route_changes"])}, "models": dict(cand.get("models", {}))}
        async with ctx.tools.variant(changes) as variant:
            cand_run = await variant(_only(suite, system), examples)
        baseline_desc, candidate_desc = f"route {cand['route']} as configured", str(cand["candidate"])
    return {"suite": suite.name, "system": system.name, "examples": len(examples)}, _judged(
        e.metric, e.min_gain, suite, base_run, cand_run, baseline_desc, candidate_desc)


def _route_system(suite: Suite, route: str, name: str | None) -> SystemSpec:
    chosen = [s for s in suite.systems if (name is None or s.name == name) and s.model == route]
    if len(chosen) != 1:
        raise ConfigError("evaluate.system", f"the suite {suite.name!r} needs exactly one system calling route {route!r}"
                          + (f" named {name!r}" if name else ""), f"add a system with model: {route} (or name one with evaluate.system)")
    return chosen[0]


def _judged(metric_name: str | None, min_gain: float | None, suite: Suite, base: RunResult, cand: RunResult,
            baseline: str, candidate: str) -> dict[str, Any]:
    info: Mapping[str, Mapping[str, Any]] = cand.run.summary.get("metrics", {})
    metric, higher = objective(info, metric_name, source="evaluate.metric")
    orientation = {n: bool(i.get("higher_is_better", True)) for n, i in info.items() if not i.get("corpus")}
    decision = decide(cand.results, base.results, metric=metric, higher_is_better=higher, orientation=orientation,
                      gates=suite.gates, min_gain=min_gain)
    return {
        "baseline": baseline,
        "candidate": candidate,
        "baseline_run": base.run.id,
        "candidate_run": cand.run.id,
        "metric": metric,
        "passed": decision.passed,
        "decision": decision.as_dict(),
        "summary": f"gate {'passed' if decision.passed else 'failed'}: {decision.reason}",
    }


async def promote(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    judged = ctx.outputs["evaluate"]
    cand = ctx.outputs["candidate"]
    inputs = {"candidate": cand.get("candidate"), "baseline_run": judged.get("baseline_run"), "candidate_run": judged.get("candidate_run")}
    if not judged["passed"]:
        why = str(judged["decision"]["reason"])
        return inputs, {"promoted": False, "why": why, "summary": f"not promoted: the gate failed: {why}"}
    if isinstance(ctx.spec.candidate, EmbeddingCandidate):
        return inputs, await embedding.promote(ctx)
    if isinstance(ctx.spec.candidate, PromptCandidate):
        registry = _registry(ctx)
        name, version, label = str(cand["prompt"]), int(cand["version"]), ctx.spec.promote.label
        previous = await asyncio.to_thread(registry.store.resolve_label, name, label)
        await asyncio.to_thread(registry.set_label, name, label, version)
        before = previous.version if previous is not None else None
        change: dict[str, Any] = {"kind": "prompt_label", "prompt": name, "label": label, "from": before, "to": version}
        return inputs, {"promoted": True, "change": change, "summary": f"promoted: {name}@{label} {before} → {version}"}
    from aiestack.flywheel.config_edit import read_value, set_route_table, set_values

    path = ctx.spec.path(ctx.spec.promote.config) if ctx.spec.promote.config is not None else ctx.tools.config_path
    if path is None:
        raise ConfigError("promote.config", "no aiestack.toml is in use, so the route cannot be changed",
                          "name the file with promote.config, or set AIESTACK_CONFIG")
    route = str(cand["route"])
    if isinstance(ctx.spec.candidate, LoraCandidate):
        name, share = str(cand["model"]), float(cand["share"])
        in_file = await asyncio.to_thread(read_value, path, ("routes", route, "deployments"))
        current = [d if isinstance(d, dict) else {"model": d} for d in (in_file or cand["deployments"])]
        total = sum(float(d.get("weight", 1.0)) for d in current)
        weight = round(share / (1 - share) * total, 6) if share < 1 else 1.0
        deployments = [*current, {"model": name, "weight": weight}] if share < 1 else [{"model": name}]
        await asyncio.to_thread(set_values, path, [(("models", name), dict(cand["model_table"])),
                                                   (("routes", route, "deployments"), deployments)])
        lora: dict[str, Any] = {"kind": "route_deployment", "route": route, "file": str(path), "model": name,
                                "model_table": dict(cand["model_table"]), "share": share, "from": current, "to": deployments}
        beside = f" beside {', '.join(str(d['model']) for d in current)}" if share < 1 else ", replacing its deployments"
        return inputs, {"promoted": True, "change": lora,
                        "summary": f"promoted: [models.{name}] added and deployed on route {route} for {share:.0%} of its "
                                   f"traffic{beside} in {path} (restart the server to serve it)"}
    table = dict(cand["dicl"])
    before = await asyncio.to_thread(set_route_table, path, route, "dicl", table)
    change = {"kind": "route_dicl", "route": route, "file": str(path), "from": before, "to": table}
    return inputs, {"promoted": True, "change": change,
                    "summary": f"promoted: [routes.{route}.dicl] dataset = {table['dataset']} in {path} (restart the server to serve it)"}


def served_model_table(base: str, gguf: str | Path) -> dict[str, str]:
    """The ``[models.NAME]`` table that serves a LoRA of ``base`` with llama.cpp: the adapter's absolute
    path (the server may run elsewhere), and the base's GGUF path unless it is the embedded model (any
    of its aliases), which the provider finds by itself."""
    from aiestack.finetune.base import EMBEDDED

    table = {"provider": "llama_cpp", "lora": str(Path(gguf).resolve())}
    if base.lower() not in EMBEDDED:
        table["path"] = base
    return table
