"""Every suite under examples/ works from a copy of the repository with no ../shared beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aiestack.cli import evals
from aiestack.evals.datasets import load_examples
from aiestack.evals.suite import load_suite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.unit


def run(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps "eval" a sub-command
    evals.register(app)
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def clone(workdir: Path) -> Path:
    """examples/ copied into an empty folder: what a user's clone has, and nothing more."""
    target = workdir / "clone" / "examples"
    shutil.copytree(EXAMPLES, target)
    assert not (workdir / "shared").exists() and not (target.parents[1] / "shared").exists()
    return target


def _suites(root: Path) -> list[Path]:
    """Every eval suite (a flywheel.yaml is not one: tests/flywheel/test_example.py loads it)."""
    return sorted(p for p in root.rglob("*.yaml") if p.name != "flywheel.yaml")


def test_there_are_example_suites() -> None:
    assert len(_suites(EXAMPLES / "evals")) >= 4 and len(_suites(EXAMPLES / "companion")) == 6


@pytest.mark.parametrize("name", [p.relative_to(EXAMPLES).as_posix() for p in _suites(EXAMPLES)])
def test_each_example_suite_loads_its_shipped_data(clone: Path, name: str) -> None:
    suite = load_suite(clone / name)
    path = suite.dataset_path.resolve()
    assert path.is_relative_to(clone.resolve()), f"{name} reads {path}, outside examples/"
    examples = load_examples(suite.dataset, suite.dataset_path)
    assert len(examples) == suite.dataset.limit or (suite.dataset.limit is None and examples)
    if suite.dataset.reference is not None:
        assert all(e.reference not in (None, "", []) for e in examples)


@pytest.mark.slow  # 40 calls through the default guards
def test_gsm8k_runs_end_to_end_from_the_copy_and_its_gate_finds_the_previous_run(
    clone: Path, fake_config: Path
) -> None:
    suite = clone / "evals" / "gsm8k.yaml"
    text = suite.read_text(encoding="utf-8").replace("model: gemma-3-270m", "model: echo")
    suite.write_text(text, encoding="utf-8")
    code, out, err = run("eval", "run", str(suite), "-q")
    assert code == 0, err
    assert "20 model calls" in err and "numeric_match" in out and "no baseline" in out
    code, out, err = run("eval", "run", str(suite), "-q")
    assert code == 0 and "baseline: run" in out and "no baseline" not in out


def test_dataset_points_a_suite_at_other_data(clone: Path, fake_config: Path) -> None:
    other = fake_config.parent / "full.jsonl"
    lines = (clone / "evals" / "data" / "gsm8k.jsonl").read_text(encoding="utf-8").splitlines()
    other.write_text("\n".join(lines[:3]), encoding="utf-8")
    suite = clone / "evals" / "gsm8k.yaml"
    suite.write_text(suite.read_text(encoding="utf-8").replace("model: gemma-3-270m", "model: echo"), encoding="utf-8")
    code, _, err = run("eval", "run", str(suite), "-q", "--dataset", str(other))
    assert code == 0 and "3 model calls" in err, err


def test_companion_prompts_are_imported_and_a_suite_runs_on_them_from_the_cli(clone: Path, fake_config: Path) -> None:
    from aiestack.cli import prompts

    app = typer.Typer()
    app.command("noop")(lambda: None)
    prompts.register(app)
    suite = clone / "companion" / "cursor.yaml"
    suite.write_text(suite.read_text(encoding="utf-8").replace("model: gemma-3-270m", "model: echo"), encoding="utf-8")
    from aiestack.errors import ConfigError

    with pytest.raises(ConfigError, match="prompts import"):  # not pushed yet: the error says how
        run("eval", "run", str(suite), "-q")
    result = CliRunner().invoke(app, ["prompts", "import", str(clone / "companion" / "prompts")])
    assert result.exit_code == 0, result.output
    assert "cursor-task-classifier@1 pushed [production]" in result.output and result.output.count("pushed") == 6
    again = CliRunner().invoke(app, ["prompts", "import", str(clone / "companion" / "prompts")])
    assert again.output.count("unchanged, still") == 6
    code, out, err = run("eval", "run", str(suite), "-q")
    assert code == 0, err
    assert "12 model calls" in err and "prompts: gemma = cursor-task-classifier@1" in out


@pytest.mark.slow  # 8 agent runs through the default guards
def test_the_agent_suite_runs_from_the_copy_and_stores_its_runs(clone: Path, fake_config: Path) -> None:
    suite = clone / "evals" / "agent_calculator.yaml"
    suite.write_text(suite.read_text(encoding="utf-8").replace("model: gemma-3-270m", "model: echo"), encoding="utf-8")
    code, out, err = run("eval", "run", str(suite), "-q")
    assert code == 0, err
    assert "agent-calculator" in out and "no baseline" in out and "8 model calls" in err  # one step a run
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    try:
        runs = store.list_runs(agent="calculator-agent")  # type: ignore[attr-defined]
        assert len(runs) == 8 and all(r.status == "finished" for r in runs)  # the echo model answers at once
        (evaluated,) = store.list_eval_runs(suite="agent-calculator")  # type: ignore[attr-defined]
        results = store.eval_results(evaluated.id)  # type: ignore[attr-defined]
        assert len(results) == 8 and {r.details["agent"]["run_id"] for r in results} == {r.run_id for r in runs}
        for r in results:  # the echo answers with the question: no tool call, one step, no right number
            assert r.scores["agent_steps"] == 1.0 and r.scores["tool_call_accuracy"] == 0.0
            assert r.scores["task_success"] == 0.0 and r.scores["invalid_tool_calls"] == 0.0
    finally:
        store.close()


@pytest.mark.parametrize("name", [p.relative_to(EXAMPLES).as_posix() for p in _suites(EXAMPLES)])
def test_each_example_prompt_ends_at_its_cue(clone: Path, name: str) -> None:
    # A prompt ending "Answer:\n" (a YAML `|` block keeps the newline) is continued by the embedded base
    # model with the next "Question:", which the suite's stop cuts to nothing: gsm8k scored 0 of 20 on
    # 20 empty answers. Each example prompt must end where the answer starts.
    from aiestack.evals.runner import render_messages, suite_templates

    suite = load_suite(clone / name)
    example = load_examples(suite.dataset, suite.dataset_path)[0]
    for system in suite.systems:
        if system.agent is not None:
            continue
        user, sys_template = suite_templates(suite, system)
        prompt = render_messages(user, sys_template, example)[-1].text
        assert prompt == prompt.rstrip(), f"{name}, system {system.name}: the prompt ends in whitespace"
