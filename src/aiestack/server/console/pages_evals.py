"""The evals pages: runs, one run's leaderboard and charts, comparisons of two runs, leaderboards per suite.

Everything is read from the :class:`~aiestack.stores.base.EvalStore`; summaries are the ones the
runner stored with the run, and charts reuse the evaluation report's SVG helpers, so the console
and ``aiestack eval report --html`` show the same numbers. The full HTML report of a run is
served too (``/evals/{id}/report``), under a policy that lets its inline CSS apply and nothing run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from aiestack.build import Stack
from aiestack.evals.compare import stored_ranking
from aiestack.evals.gates import Comparison, compare
from aiestack.evals.report import ordered_systems
from aiestack.evals.report_html import bar_chart, histogram, rating_chart, render_html
from aiestack.evals.summary import SystemSummary, summaries_from_run
from aiestack.server.console.auth import require_session
from aiestack.server.console.render import page, svg
from aiestack.stores.base import EvalStore
from aiestack.types import EvalRun

router = APIRouter(include_in_schema=False)

_REPORT_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


def _per_example_metrics(run: EvalRun) -> list[str]:
    info: Mapping[str, Mapping[str, Any]] = run.summary.get("metrics", {})
    return [name for name, i in info.items() if not i.get("corpus")]


def _orientation(run: EvalRun) -> dict[str, bool]:
    info: Mapping[str, Mapping[str, Any]] = run.summary.get("metrics", {})
    return {n: bool(i.get("higher_is_better", True)) for n, i in info.items() if not i.get("corpus")}


def leaderboard_rows(run: EvalRun) -> tuple[list[str], list[SystemSummary]]:
    """The run's per-example metrics and its systems, best first by the first metric."""
    metrics = _per_example_metrics(run)
    summaries = summaries_from_run(run.summary)
    return metrics, ordered_systems(summaries, metrics[0] if metrics else None)


def run_charts(run: EvalRun, ordered: Sequence[SystemSummary], latencies: Mapping[str, list[float]]) -> list[str]:
    """One bar chart (mean and 95% CI per system) per metric, the latency histogram, the ranking."""
    out: list[str] = []
    for name in _per_example_metrics(run):
        out.append(bar_chart(name, _bars(ordered, name)))
    if any(latencies.values()):
        out.append(histogram("Latency per example (ms)", latencies))
    ranked = stored_ranking(run.summary)
    if ranked is not None and ranked[1] is not None:
        out.append(rating_chart("Pairwise ranking (Bradley-Terry)", ranked[1].ratings))
    return out


def _bars(ordered: Sequence[SystemSummary], metric: str) -> list[tuple[str, float | None, float | None, float | None]]:
    """(system, mean, CI low, CI high) of ``metric`` per system, for the report's bar chart."""
    out: list[tuple[str, float | None, float | None, float | None]] = []
    for s in ordered:
        m = s.metrics.get(metric)
        out.append((s.system, m.mean, m.low, m.high) if m is not None else (s.system, None, None, None))
    return out


def _store(request: Request) -> EvalStore | None:
    stack: Stack = request.app.state.stack
    return stack.store if isinstance(stack.store, EvalStore) else None


@router.get("/evals")
async def evals_page(request: Request) -> Response:
    session = await require_session(request)
    store = _store(request)
    if store is None:
        return page(request, "evals.html", session, title="Evals", available=False, runs=[], boards=[])
    suite = request.query_params.get("suite") or None
    runs = await asyncio.to_thread(store.list_eval_runs, limit=100, suite=suite)
    latest: dict[str, EvalRun] = {}
    for run in runs:  # newest first: the first run seen of a suite is its latest
        if run.summary.get("systems"):
            latest.setdefault(run.suite, run)
    boards = []
    for run in latest.values():
        metrics, ordered = leaderboard_rows(run)
        first = metrics[0] if metrics else ""
        chart = bar_chart(first or "score", _bars(ordered, first))
        boards.append({"run": run, "metrics": metrics, "systems": ordered, "chart": svg(chart)})
    return page(request, "evals.html", session, title="Evals", available=True, runs=runs, boards=boards, suite=suite)


@router.get("/evals/compare")
async def compare_page(request: Request) -> Response:
    session = await require_session(request)
    store = _store(request)
    a_id, b_id = request.query_params.get("a", ""), request.query_params.get("b", "")
    runs = await asyncio.to_thread(lambda: [store.get_eval_run(i) if store else None for i in (a_id, b_id)])
    if store is None or runs[0] is None or runs[1] is None:
        return page(
            request, "error.html", session, status_code=404, title="Cannot compare",
            message="Pick two stored evaluation runs to compare (baseline a, candidate b).",
            hint="Choose them on the Evals page.",
        )
    baseline, current = runs
    assert baseline is not None and current is not None
    base_results = await asyncio.to_thread(store.eval_results, baseline.id)
    cur_results = await asyncio.to_thread(store.eval_results, current.id)
    orientation = _orientation(current)
    comparison: Comparison = await asyncio.to_thread(
        compare, cur_results, base_results, orientation, [], iterations=1000
    )
    metrics = list(orientation)
    charts = []
    for metric in metrics:
        bars: list[tuple[str, float | None, float | None, float | None]] = [
            (f"{d.system} Δ", d.delta, d.low, d.high) for d in comparison.deltas if d.metric == metric
        ]
        if bars:
            charts.append(svg(bar_chart(f"{metric}: candidate − baseline", bars)))
    return page(
        request,
        "eval_compare.html",
        session,
        title="Compare runs",
        baseline=baseline,
        current=current,
        deltas=comparison.deltas,
        flips=[f for f in comparison.flips][:50],
        charts=charts,
    )


@router.get("/evals/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    session = await require_session(request)
    store = _store(request)
    run = await asyncio.to_thread(store.get_eval_run, run_id) if store is not None else None
    if store is None or run is None:
        return page(
            request, "error.html", session, status_code=404, title="Run not found",
            message=f"No evaluation run has the id {run_id!r}.", hint="Runs are listed on the Evals page.",
        )
    results = await asyncio.to_thread(store.eval_results, run.id)
    metrics, ordered = leaderboard_rows(run)
    latencies = {
        s.system: [r.latency_ms for r in results if r.system == s.system and r.latency_ms is not None]
        for s in ordered
    }
    others = [r for r in await asyncio.to_thread(store.list_eval_runs, limit=20, suite=run.suite) if r.id != run.id]
    return page(
        request,
        "eval_run.html",
        session,
        title=f"Run {run.id}",
        run=run,
        metrics=metrics,
        systems=ordered,
        charts=[svg(c) for c in run_charts(run, ordered, latencies)],
        results=results[:200],
        result_count=len(results),
        others=others,
    )


@router.get("/evals/{run_id}/report")
async def run_report(request: Request, run_id: str) -> Response:
    await require_session(request)
    store = _store(request)
    run = await asyncio.to_thread(store.get_eval_run, run_id) if store is not None else None
    if store is None or run is None:
        return HTMLResponse("<!DOCTYPE html><title>Not found</title><p>No such run.</p>", status_code=404)
    results = await asyncio.to_thread(store.eval_results, run.id)
    html = render_html(run, summaries_from_run(run.summary), results)
    return HTMLResponse(html, headers=_REPORT_HEADERS)
