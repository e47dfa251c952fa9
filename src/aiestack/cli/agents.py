"""``aiestack agent run|runs|show|approve|deny|cancel``: the ``[agents.NAME]`` of aiestack.toml from the terminal."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from aiestack.cli.console import table_console
from aiestack.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from aiestack.agents.events import AgentEvent, RunResult, StreamEvent
    from aiestack.agents.runs import RunKeeper
    from aiestack.build import Stack


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe(event: AgentEvent | dict[str, Any]) -> str:
    """One line for a step: what the terminal shows as a run goes on (and ``agent show``)."""
    from aiestack.agents.events import event_to_dict

    e = event if isinstance(event, dict) else event_to_dict(event)
    kind = e.get("type")
    if kind == "run_started":
        return f"run {e['run_id']} · {e['agent']} on {e['model']} · tools: {', '.join(e.get('tools') or []) or 'none'}"
    if kind == "model_call":
        calls = ", ".join(f"{c['name']}({_short(c['arguments'], 60)})" for c in e.get("tool_calls") or [])
        what = f"calls {calls}" if calls else _short(e.get("text") or "") or "(no text)"
        cost = f" ${e['cost_usd']:.6f}" if e.get("cost_usd") is not None else ""
        err = f" · error: {_short(e['error'], 80)}" if e.get("error") else ""
        return f"  step {e['step']} model · {e['input_tokens']}+{e['output_tokens']} tok{cost} · {what}{err}"
    if kind == "tool_call":
        return f"  step {e['step']} → {e['name']}({_short(e['arguments'], 100)})"
    if kind == "tool_result":
        mark = "✗" if e.get("error") else "←"
        return f"  step {e['step']} {mark} {e['name']}: {_short(e['content'], 120)}"
    if kind == "approval_requested":
        waiting = [c for c in e["calls"] if c["id"] in e["needs_approval"]]
        return "  waits for approval: " + ", ".join(f"{c['name']}({_short(c['arguments'], 80)}) [{c['id']}]" for c in waiting)
    if kind == "approval_decided":
        verdict = "approved" if e["approved"] else f"denied ({e.get('reason') or 'no reason'})"
        return f"  {verdict}: {', '.join(e['call_ids'])}"
    if kind in ("plan", "reflection", "memory_summary", "memory_recall"):
        return _pattern_line(e)
    if kind == "final_answer":
        return f"answer: {e['text']}"
    if kind == "run_stopped":
        detail = f" — {e['detail']}" if e.get("detail") else ""
        return f"{e['status']} ({e['reason']}) · {e['steps']} steps · ${e['cost_usd']:.6f}{detail}"
    return json.dumps(e)


class LiveSteps:
    """What ``agent run`` prints as a run goes on: each step's line, and the model's tokens as they stream.

    A model call's tokens (its text, or the tool calls it writes) are printed on one line as they
    arrive, and the step's summary (tokens, cost, what it asked for) follows on the next.
    """

    def __init__(self, echo: Any = typer.echo, *, tokens: bool = True) -> None:
        self._echo = echo
        self._tokens = tokens
        self._open: int | None = None  # the step whose tokens are being printed

    def __call__(self, event: StreamEvent) -> None:
        from aiestack.agents.events import AnswerDelta, ModelDelta

        if isinstance(event, AnswerDelta):
            return  # its text came as the model's tokens already
        if isinstance(event, ModelDelta):
            if not self._tokens:
                return
            if self._open != event.step:
                self._echo(f"  step {event.step} ▸ ", nl=False)
                self._open = event.step
            calls = "".join((f"{c.name}(" if c.name else "") + c.arguments for c in event.tool_calls)
            self._echo(event.text.replace("\n", " ") + calls, nl=False)
            return
        if self._open is not None:
            self._echo("")
            self._open = None
        self._echo(describe(event))


def _keeper(stack: Stack) -> RunKeeper:
    from aiestack.agents.runs import RunKeeper
    from aiestack.stores.runs import RunStore

    if not isinstance(stack.store, RunStore):
        raise ConfigError("store.url", f"the store {type(stack.store).__name__} cannot hold agent runs", "use SQLite or PostgreSQL")
    return RunKeeper(stack.store, content=stack.tracing.content, redact=stack.tracing.redact)


async def _agent(stack: Stack, name: str) -> Any:
    from aiestack.agents.config import open_agent

    try:
        return await open_agent(stack, name)
    except KeyError as exc:
        raise NotFound(str(exc.args[0]), hint="add an [agents.NAME] table to aiestack.toml") from None


def _finish(result: RunResult) -> None:
    if result.status == "waiting":
        typer.echo(f"approve with `aiestack agent approve {result.run_id}` or deny with `aiestack agent deny {result.run_id} REASON`")
    if result.status == "failed":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    agent_app = typer.Typer(help="Run the [agents.NAME] of aiestack.toml and manage their runs (see docs/agents.md).", no_args_is_help=True)
    app.add_typer(agent_app, name="agent")

    @agent_app.command("run")
    def run(
        name: str = typer.Argument(..., help="The agent ([agents.NAME] in aiestack.toml)."),
        task: str = typer.Argument(..., help="What the agent should do."),
        tenant: str = typer.Option("default", "--tenant", help="The tenant the run belongs to."),
        tokens: bool = typer.Option(True, "--tokens/--no-tokens", help="Show the model's tokens as they stream."),
    ) -> None:
        """Run an agent on a task, showing each step (and the model's tokens) as it happens; the run is stored."""
        import asyncio

        from aiestack.build import open_stack

        async def go() -> RunResult:
            async with open_stack() as stack:
                live = LiveSteps(tokens=tokens)
                return await _keeper(stack).run(await _agent(stack, name), task, tenant=tenant, on_event=live, deltas=tokens)

        _finish(asyncio.run(go()))

    @agent_app.command("runs")
    def runs(
        agent: str = typer.Option(None, "--agent", help="Only this agent's runs."),
        status: str = typer.Option(None, "--status", help="Only runs in this status (waiting, finished, stopped, failed, running)."),
        tenant: str = typer.Option(None, "--tenant", help="Only this tenant's runs."),
        limit: int = typer.Option(20, "--limit", min=1, max=1000, help="At most this many, newest first."),
    ) -> None:
        """The stored runs, newest first."""
        from aiestack.build import open_stack

        table = Table("run", "agent", "tenant", "status", "reason", "steps", "cost $", "started")
        import asyncio

        async def go() -> None:
            async with open_stack() as stack:
                _keeper(stack)
                for r in stack.store.list_runs(tenant=tenant, agent=agent, status=status, limit=limit):  # type: ignore[attr-defined]
                    table.add_row(r.run_id, r.agent, r.tenant, r.status, r.stop_reason or "", str(r.steps), f"{r.cost_usd:.6f}", _when(r.created_at))

        asyncio.run(go())
        table_console().print(table)

    @agent_app.command("show")
    def show(
        run_id: str = typer.Argument(..., help="The run's id."),
        as_json: bool = typer.Option(False, "--json", help="The record and its steps as JSON."),
    ) -> None:
        """A stored run and its steps."""
        import asyncio
        import dataclasses

        from aiestack.build import open_stack

        async def go() -> tuple[Any, list[dict[str, Any]]]:
            async with open_stack() as stack:
                _keeper(stack)
                record = stack.store.get_run(run_id)  # type: ignore[attr-defined]
                if record is None:
                    raise NotFound(f"no run {run_id!r}", hint="`aiestack agent runs` lists the runs")
                return record, stack.store.run_steps(run_id)  # type: ignore[attr-defined]

        record, steps = asyncio.run(go())
        if as_json:
            typer.echo(json.dumps({"run": {**dataclasses.asdict(record), "pending": None}, "steps": steps}, indent=2))
            return
        typer.echo(f"run {record.run_id} · {record.agent} on {record.model} · tenant {record.tenant} · {record.status}")
        typer.echo(f"task: {record.task}")
        for step in steps:
            typer.echo(describe(step))

    def decide(run_id: str, approve: bool, reason: str) -> None:
        import asyncio

        from aiestack.agents.runs import RunNotWaiting
        from aiestack.build import open_stack

        async def go() -> RunResult:
            async with open_stack() as stack:
                keeper = _keeper(stack)
                record = stack.store.get_run(run_id)  # type: ignore[attr-defined]
                if record is None:
                    raise NotFound(f"no run {run_id!r}", hint="`aiestack agent runs --status waiting` lists the waiting runs")
                agent = await _agent(stack, record.agent)
                try:
                    return await keeper.decide(agent, run_id, approve=approve, reason=reason, on_event=LiveSteps(), deltas=True)
                except RunNotWaiting as exc:
                    raise NotFound(str(exc.args[0]), hint="only a waiting run can be approved or denied") from None

        _finish(asyncio.run(go()))

    @agent_app.command("approve")
    def approve(run_id: str = typer.Argument(..., help="The waiting run's id.")) -> None:
        """Approve the calls a waiting run asked for, and go on with it."""
        decide(run_id, True, "")

    @agent_app.command("deny")
    def deny(
        run_id: str = typer.Argument(..., help="The waiting run's id."),
        reason: str = typer.Argument("", help="Why: the model sees it as the denied calls' result."),
    ) -> None:
        """Deny the calls a waiting run asked for (the model sees the reason), and go on with it."""
        decide(run_id, False, reason)

    @agent_app.command("cancel")
    def cancel(
        run_id: str = typer.Argument(..., help="The run's id (waiting, or running in any process that shares the store)."),
        reason: str = typer.Argument("cancelled by a person", help="Why: the run's stop detail."),
        wait_s: float = typer.Option(10.0, "--wait", min=0, help="Seconds to wait for a running run to stop."),
    ) -> None:
        """Stop a waiting or running run for good (a running one stops at once, wherever it runs)."""
        import asyncio

        from aiestack.agents.runs import RunNotActive
        from aiestack.build import open_stack

        async def go() -> Any:
            async with open_stack() as stack:
                try:
                    return await _keeper(stack).cancel(run_id, reason=reason, wait_s=wait_s)
                except RunNotActive as exc:
                    raise NotFound(str(exc.args[0]), hint="`aiestack agent runs` lists the runs and their status") from None

        record = asyncio.run(go())
        if record.status == "cancelling":
            typer.echo(f"run {record.run_id} was asked to stop; the process running it has not stopped it yet "
                       f"(see `aiestack agent show {record.run_id}`)")  # fmt: skip
            return
        typer.echo(f"run {record.run_id} · {record.status} ({record.stop_reason}) — {record.detail}")


def _pattern_line(e: dict[str, Any]) -> str:
    """One line for a planning, reflection or memory event."""
    kind, err = e["type"], f" · error: {_short(e['error'], 80)}" if e.get("error") else ""
    if kind == "plan":
        what = "re-plan" if e["revision"] else "plan"
        steps = "; ".join(f"{i}. {_short(s['description'], 50)}" for i, s in enumerate(e.get("steps") or [], 1))
        return f"  step {e['step']} {what}: {steps or '(invalid)'}{err}"
    if kind == "reflection":
        verdict = "accepted" if e["accepted"] else f"sent back: {_short(e.get('feedback') or '', 100)}"
        return f"  step {e['step']} critique {e['round']}: {verdict}{err}"
    if kind == "memory_summary":
        return f"  step {e['step']} summarised {e['messages']} messages ({e['tokens_before']} → {e['tokens_after']} tok){err}"
    facts = e.get("facts") or []
    return f"  recalled {len(facts)} fact(s)" + (": " + "; ".join(_short(f, 60) for f in facts) if facts else "") + err

