"""`aiestack agent run|runs|show|approve|deny` on a fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiestack.cli.app import build_app

pytestmark = pytest.mark.unit


@pytest.fixture
def agent_config(fake_config: Path) -> Path:
    fake_config.write_text(
        fake_config.read_text(encoding="utf-8")
        + '[agents.helper]\ninstructions = "Answer."\ntools = ["calculator"]\nmax_steps = 2\n',
        encoding="utf-8",
    )
    return fake_config


def test_run_shows_steps_and_stores_the_run(agent_config: Path) -> None:
    runner = CliRunner()
    app = build_app()
    ran = runner.invoke(app, ["agent", "run", "helper", "what is 6 times 7"])
    assert ran.exit_code == 0, ran.output
    lines = ran.output.splitlines()
    assert lines[0].startswith("run run_") and "helper on echo" in lines[0] and "calculator" in lines[0]
    assert "answer: what is 6 times 7" in ran.output and "finished (final_answer)" in ran.output
    assert "  step 1 ▸ what is 6 times 7\n  step 1 model · " in ran.output  # the tokens, then the step
    quiet = runner.invoke(app, ["agent", "run", "helper", "what is 6 times 7", "--no-tokens"])
    assert quiet.exit_code == 0 and "▸" not in quiet.output and "answer: what is 6 times 7" in quiet.output
    run_id = lines[0].split()[1]
    listed = runner.invoke(app, ["agent", "runs"])
    assert listed.exit_code == 0 and run_id in listed.output and "finished" in listed.output
    shown = runner.invoke(app, ["agent", "show", run_id, "--json"])
    data = json.loads(shown.output)
    assert data["run"]["status"] == "finished" and data["steps"][0]["type"] == "run_started"
    assert data["run"]["task"] == "[not stored: content tracing is off]"
    refused = runner.invoke(app, ["agent", "approve", run_id])
    assert refused.exit_code != 0 and "not waiting for approval" in str(refused.exception)


def test_unknown_agents_and_runs_are_explained(agent_config: Path) -> None:
    runner = CliRunner()
    app = build_app()
    unknown = runner.invoke(app, ["agent", "run", "nope", "x"])
    assert unknown.exit_code != 0 and "no agent 'nope' (agents: helper)" in str(unknown.exception)
    missing = runner.invoke(app, ["agent", "show", "run_missing"])
    assert missing.exit_code != 0 and "no run 'run_missing'" in str(missing.exception)


async def _waiting_run(config: Path) -> str:
    """A run of [agents.helper] left waiting for approval of a calculator call, made by another process's stack."""
    from aiestack.agents.config import make_agent
    from aiestack.agents.runs import RunKeeper
    from aiestack.build import build_stack
    from aiestack.models.fake import FakeModel, Script
    from aiestack.settings import load_settings

    config.write_text(config.read_text(encoding="utf-8") + 'approval = ["calculator"]\n', encoding="utf-8")
    stack = build_stack(load_settings())
    try:
        fake = stack.models.resolve("echo").provider
        assert isinstance(fake, FakeModel)
        fake.enqueue([Script(tool_calls=[("c1", "calculator", '{"expression": "6 * 7"}')])])
        result = await RunKeeper(stack.store).run(make_agent(stack, "helper"), "six times seven")  # type: ignore[arg-type]
        assert result.status == "waiting"
        return result.run_id
    finally:
        await stack.aclose()


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_approve_and_deny_resume_a_stored_run(agent_config: Path, decision: str) -> None:
    import asyncio

    run_id = asyncio.run(_waiting_run(agent_config))
    runner = CliRunner()
    app = build_app()
    waiting = runner.invoke(app, ["agent", "show", run_id])
    assert "waits for approval: calculator(" in waiting.output and "[c1]" in waiting.output
    args = ["agent", decision, run_id] + (["too costly"] if decision == "deny" else [])
    decided = runner.invoke(app, args)
    assert decided.exit_code == 0, decided.output
    if decision == "approve":
        assert "approved: c1" in decided.output and "← calculator: 42" in decided.output
    else:
        assert "denied (too costly): c1" in decided.output and "✗ calculator: A person denied this call: too costly" in decided.output
    assert "finished (final_answer)" in decided.output
    again = runner.invoke(app, ["agent", decision, run_id])
    assert again.exit_code != 0 and "not waiting" in str(again.exception)


def test_cancel_stops_a_run_running_elsewhere_and_a_waiting_one(agent_config: Path) -> None:
    import asyncio
    import threading

    from aiestack.agents.config import make_agent
    from aiestack.agents.runs import RunKeeper
    from aiestack.build import build_stack
    from aiestack.models.fake import FakeModel, Script
    from aiestack.settings import load_settings

    text = agent_config.read_text(encoding="utf-8")  # the injection classifier off: it takes seconds to load
    agent_config.write_text(text.replace("[agents.helper]", '[guards]\ninjection = "off"\n[agents.helper]'), encoding="utf-8")
    ready, out = threading.Event(), {}

    def elsewhere() -> None:  # another stack on the same store, in a thread of its own: as a server would
        async def go() -> None:
            stack = build_stack(load_settings())
            try:
                fake = stack.models.resolve("echo").provider
                assert isinstance(fake, FakeModel)
                fake.enqueue([Script(pieces=["slow"] * 100, delay_s=0.1)])  # 10 s
                seen: list[object] = []
                keeper = RunKeeper(stack.store, poll_s=0.05)  # type: ignore[arg-type]
                task = asyncio.ensure_future(keeper.run(make_agent(stack, "helper"), "talk", on_event=seen.append))
                while not fake.requests:
                    await asyncio.sleep(0.01)
                out["run_id"] = seen[0].run_id  # type: ignore[attr-defined]
                ready.set()
                out["result"] = await asyncio.wait_for(task, 15)
            finally:
                ready.set()
                await stack.aclose()

        asyncio.run(go())

    thread = threading.Thread(target=elsewhere)
    thread.start()
    assert ready.wait(60) and "run_id" in out
    runner = CliRunner()
    app = build_app()
    cancelled = runner.invoke(app, ["agent", "cancel", str(out["run_id"]), "from the terminal"])
    thread.join(20)
    assert cancelled.exit_code == 0, cancelled.output
    assert "stopped (cancelled) — from the terminal" in cancelled.output
    assert out["result"].stop_reason == "cancelled"  # type: ignore[attr-defined]
    run_id = asyncio.run(_waiting_run(agent_config))
    stopped = runner.invoke(app, ["agent", "cancel", run_id])
    assert stopped.exit_code == 0 and "stopped (cancelled) — cancelled by a person" in stopped.output
    again = runner.invoke(app, ["agent", "cancel", run_id])
    assert again.exit_code != 0 and "has ended" in str(again.exception)
