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
