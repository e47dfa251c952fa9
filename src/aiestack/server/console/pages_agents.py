"""The agents pages: stored runs (filtered by agent and status) and one run's timeline.

The timeline shows every step in order: model calls (tokens, cost, duration, the text or the tool
calls asked for), tool calls with their arguments, results (errors marked), approvals asked and
decided, the answer and why the run stopped; a waiting run has a form to approve, deny (with a
reason the model sees) or cancel it, a running run one to stop it (wherever it runs). Texts are what the store kept: with content tracing
off, ``[not stored: content tracing is off]``; with it on, masked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from aiestack.build import Stack
from aiestack.server.console.auth import CSRF_FIELD, check_csrf, form_fields, require_session
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


@router.post("/agents/runs/{run_id}/decide")
async def decide(request: Request, run_id: str) -> Response:
    """Approve, deny (with a reason the model sees) or cancel a waiting run of a configured agent, or stop a running run."""
    from aiestack.agents.config import open_agent
    from aiestack.agents.mcp_agents import McpUnavailable
    from aiestack.agents.runs import RunKeeper, RunNotWaiting

    session = await require_session(request)
    fields = await form_fields(request)
    check_csrf(request, session, fields.get(CSRF_FIELD))
    stack: Stack = request.app.state.stack
    store = stack.store
    decision = fields.get("decision")
    record = await asyncio.to_thread(store.get_run, run_id) if isinstance(store, RunStore) else None
    if record is None or not isinstance(store, RunStore) or decision not in ("approve", "deny", "cancel"):
        return page(
            request, "error.html", session, status_code=404 if record is None else 400, title="Nothing decided",
            message=f"No agent run has the id {run_id!r}." if record is None else "Choose approve, deny or cancel.",
            hint="Go back to the run.",
        )  # fmt: skip
    keeper = RunKeeper(store, content=stack.tracing.content, redact=stack.tracing.redact)
    try:
        if decision == "cancel":
            await keeper.cancel(run_id, reason=fields.get("reason", "").strip() or "cancelled by a person")
        else:
            agent = await open_agent(stack, record.agent)
            await keeper.decide(agent, run_id, approve=decision == "approve", reason=fields.get("reason", "").strip())
    except (KeyError, RunNotWaiting) as exc:
        return page(
            request, "error.html", session, status_code=409, title="Nothing decided", message=str(exc.args[0]),
            hint="Only a waiting run of an agent configured in aiestack.toml can be decided here, and only a waiting or running run stopped.",
        )  # fmt: skip
    except McpUnavailable as exc:  # nothing was claimed: the run still waits
        return page(request, "error.html", session, status_code=502, title="Nothing decided", message=exc.message, hint=exc.hint)
    return RedirectResponse(f"/agents/runs/{run_id}", status_code=303)
