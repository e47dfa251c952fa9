"""The flywheel pages: stored runs, and one run's lineage from exchanges to the promoted change.

A run's page draws its steps in order as a chain — each with its status, what it took (inputs) and
what it made (outputs) — and links every id it can: the exchanges a dataset was built from, the eval
runs that scored the candidates and judged the gate (their pages show the answers), the prompt
versions. The decision of the gate is shown with its figures (baseline, candidate, the paired
bootstrap's interval), and a refused promotion says why. Everything is escaped by the templates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.server.console.auth import require_session
from aiestack.server.console.render import page
from aiestack.stores.flywheel import FlywheelStep, FlywheelStore

router = APIRouter(include_in_schema=False)


@router.get("/flywheel")
async def runs_page(request: Request) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    store = stack.store
    if not isinstance(store, FlywheelStore):
        return page(request, "flywheel_runs.html", session, title="Flywheel", available=False)
    name = request.query_params.get("name") or None
    runs = await asyncio.to_thread(store.list_flywheel_runs, name=name, limit=200)
    return page(request, "flywheel_runs.html", session, title="Flywheel", available=True, runs=runs, name=name or "")


@router.get("/flywheel/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    session = await require_session(request)
    store = request.app.state.stack.store
    record = await asyncio.to_thread(store.get_flywheel_run, run_id) if isinstance(store, FlywheelStore) else None
    if record is None or not isinstance(store, FlywheelStore):
        return page(
            request, "error.html", session, status_code=404, title="No such run",
            message=f"No flywheel run has the id {run_id!r}.", hint="Go back to the list of flywheel runs.",
        )  # fmt: skip
    steps = await asyncio.to_thread(store.flywheel_steps, run_id)
    return page(request, "flywheel_run.html", session, title=f"Flywheel run {run_id}", run=record,
                steps=[lineage(s) for s in steps])


def lineage(step: FlywheelStep) -> dict[str, Any]:
    """A step as the page draws it: its links (label, text, href or None) and the gate's figures."""
    out: Mapping[str, Any] = step.outputs
    links: list[tuple[str, str, str | None]] = []
    for ex in out.get("exchanges", [])[:20]:
        links.append(("exchange", str(ex), f"/exchanges/{ex}"))
    if out.get("exchange_count", 0) > 20:
        links.append(("exchanges", f"and {out['exchange_count'] - 20} more", None))
    for key in ("parent", "dataset"):
        if out.get(key):
            links.append((key, str(out[key]), None))
    for key in ("base", "candidate", "baseline"):
        if out.get(key):
            links.append((key, str(out[key]), _prompt_href(str(out[key]))))
    for key in ("baseline_run", "candidate_run"):
        if out.get(key):
            links.append((key.replace("_", " "), str(out[key]), f"/evals/{out[key]}"))
    candidates = [
        {**c, "href": f"/evals/{c['eval_run']}"} for c in out.get("candidates", []) if isinstance(c, Mapping) and c.get("eval_run")
    ]
    return {
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "position": step.position + 1,
        "seconds": None if step.finished_at is None else step.finished_at - step.started_at,
        "summary": out.get("summary", ""),
        "error": step.error,
        "links": links,
        "candidates": candidates,
        "rejected": out.get("rejected", []),
        "decision": out.get("decision"),
        "change": out.get("change"),
        "removed": out.get("removed"),
        "inputs": dict(step.inputs),
    }


def _prompt_href(ref: str) -> str | None:
    """``name@3`` → the prompt's page; anything else (a route) has none."""
    name, _, version = ref.split(" ")[0].partition("@")
    return f"/prompts/{name}" if version.isdigit() else None
