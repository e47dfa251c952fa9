"""The agents pages: stored runs (filtered by agent and status) and one run's timeline.

The timeline shows every step in order: model calls (tokens, cost, duration, the text or the tool
calls asked for), tool calls with their arguments, results (errors marked), approvals asked and
decided, the answer and why the run stopped. Texts are what the store kept: with content tracing
off, ``[not stored: content tracing is off]``; with it on, masked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.server.console.auth import require_session
from aiestack.server.console.render import page
from aiestack.server.routes_agents import run_json
from aiestack.stores.runs import RunStore

router = APIRouter(include_in_schema=False)


@router.get("/agents")
async def runs_page(request: Request) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    store = stack.store
    if not isinstance(store, RunStore):
        return page(request, "agent_runs.html", session, title="Agents", available=False)
    agent = request.query_params.get("agent") or None
    status = request.query_params.get("status") or None
    runs = await asyncio.to_thread(store.list_runs, agent=agent, status=status, limit=200)
    return page(
        request, "agent_runs.html", session, title="Agents", available=True, runs=runs,
        agents=sorted(stack.agent_specs), agent=agent or "", status=status or "",
    )  # fmt: skip


@router.get("/agents/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    store = stack.store
    record = await asyncio.to_thread(store.get_run, run_id) if isinstance(store, RunStore) else None
    if record is None or not isinstance(store, RunStore):
        return page(
            request, "error.html", session, status_code=404, title="No such run",
            message=f"No agent run has the id {run_id!r}.", hint="Go back to the list of runs.",
        )  # fmt: skip
    steps = await asyncio.to_thread(store.run_steps, run_id)
    return page(request, "agent_run.html", session, title=f"Run {run_id}", run=run_json(record), steps=_timeline(steps))


def _timeline(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps, each with the step number it belongs to (run-level events have none)."""
    return [{**s, "kind": s.get("type", "?")} for s in steps]
