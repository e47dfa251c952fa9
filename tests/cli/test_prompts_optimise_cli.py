"""``aiestack prompts optimise`` driven as a user would, on the echoing fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aiestack.cli.app import build_app

pytestmark = pytest.mark.unit


def run(*args: str) -> Result:
    return CliRunner().invoke(build_app(), list(args))


@pytest.fixture
def dev_suite(fake_config: Path) -> Path:
    rows = [{"id": f"d{i}", "q": f"word {i}", "a": f"WORD {i}"} for i in range(6)]
    (fake_config.parent / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    path = fake_config.parent / "dev.yaml"
    path.write_text(
        "name: dev\ndataset: {path: dev.jsonl, id: id, input: q, reference: a}\n"
        "systems: [{name: echo, model: echo, prompt_ref: shout@production}]\nmetrics: [{name: exact_match}]\n",
        encoding="utf-8",
    )
    return path


def test_nothing_better_means_nothing_pushed_and_exit_1(dev_suite: Path) -> None:
    template = dev_suite.parent / "shout.j2"
    template.write_text("Repeat the words.", encoding="utf-8")
    assert run("prompts", "push", "shout", str(template), "--label", "production").exit_code == 0
    result = run("prompts", "optimise", "shout", "--suite", str(dev_suite), "--rewrites", "1")
    assert result.exit_code == 1, result.output
    # the echo model echoes the instructions back, whose first <prompt> block is the current prompt
    assert "not tried: rewrite-1: the same as an earlier candidate" in result.stdout
    assert "decision: fail: no candidate scored better than the current version" in result.stdout
    assert "current" in result.stdout and "exact_match" in result.stdout
    assert "nothing pushed: shout@1 stays as it is" in result.stdout
    assert run("prompts", "show", "shout@2").exit_code != 0  # no version 2


def test_bad_options_say_what_to_do(dev_suite: Path) -> None:
    result = run("prompts", "optimise", "shout", "--suite", str(dev_suite), "--shots", "two")
    assert result.exit_code == 2 and "--shots" in result.output
    result = run("prompts", "optimise", "shout", "--suite", str(dev_suite), "--rewrites", "0")
    assert result.exit_code == 2 and "nothing to try" in result.output
