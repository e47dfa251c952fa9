"""``aiestack flywheel run|runs|show`` driven as a user would, on the echoing fake model."""

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
def flywheel_file(fake_config: Path) -> Path:
    folder = fake_config.parent
    rows = [{"id": f"d{i}", "q": f"word {i}", "a": f"WORD {i}"} for i in range(6)]
    (folder / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (folder / "dev.yaml").write_text(
        "name: dev\ndataset: {path: dev.jsonl, id: id, input: q, reference: a}\n"
        "systems: [{name: echo, model: echo, prompt_ref: shout@production}]\nmetrics: [{name: exact_match}]\n",
        encoding="utf-8",
    )
    (folder / "seed.jsonl").write_text("\n".join(json.dumps({"question": f"seed {i}", "answer": f"SEED {i}"}) for i in range(4)), encoding="utf-8")
    (folder / "shout.j2").write_text("Repeat the words.", encoding="utf-8")
    path = folder / "flywheel.yaml"
    path.write_text(
        "name: shout\n"
        "dataset: {name: seeds, from: file, path: seed.jsonl, curate: [exact]}\n"
        "candidate: {kind: prompt, prompt: shout, suite: dev.yaml, rewrites: 0, shots: [2], sets: 1}\n"
        "evaluate: {suite: dev.yaml}\n",
        encoding="utf-8",
    )
    return path


def test_a_refused_run_exits_1_and_its_lineage_is_shown(flywheel_file: Path) -> None:
    assert run("prompts", "push", "shout", str(flywheel_file.parent / "shout.j2"), "--label", "production").exit_code == 0
    result = run("flywheel", "run", str(flywheel_file))
    assert result.exit_code == 1, result.output
    assert ": refused: no candidate beat shout@1" in result.stdout
    run_id = result.stdout.split("run ")[1].split(":")[0]
    listed = run("flywheel", "runs")
    assert listed.exit_code == 0 and run_id in listed.stdout and "refused" in listed.stdout
    shown = run("flywheel", "show", run_id)
    assert shown.exit_code == 0, shown.output
    assert "1. dataset (build) done" in shown.stdout and "dataset: seeds@1" in shown.stdout
    assert "2. curate (curate) done" in shown.stdout and "3. candidate (optimise_prompt) done" in shown.stdout
    assert "eval runs: run_" in shown.stdout
    data = json.loads(run("flywheel", "show", run_id, "--json").stdout)
    assert data["run"]["outcome"] == "refused" and [s["name"] for s in data["steps"]] == ["dataset", "curate", "candidate"]
    missing = run("flywheel", "show", "fw_nope")
    assert missing.exit_code != 0


def test_a_bad_file_says_which_field(flywheel_file: Path) -> None:
    flywheel_file.write_text(flywheel_file.read_text().replace("evaluate: {suite: dev.yaml}", "evaluate: {suit: dev.yaml}"))
    from aiestack.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(["flywheel", "run", str(flywheel_file)])
    assert info.value.code == 2


def test_runs_prints_the_detail_as_written(fake_config: Path) -> None:
    """A DICL promotion's detail names the TOML table ``[routes.triage.dicl]``: the table shows it
    (rich took it for a style tag and printed ``promoted:  dataset = ...``)."""
    import time

    from aiestack.cli.flywheel import _open_store
    from aiestack.stores.flywheel import FlywheelRun

    detail = "promoted: [routes.triage.dicl] dataset = triage-seed@2 in aiestack.toml"
    store = _open_store()
    try:
        now = time.time()
        store.put_flywheel_run(FlywheelRun("fw_1", "triage", "finished", now, now, outcome="promoted", detail=detail))
    finally:
        store.close()
    listed = run("flywheel", "runs")
    assert listed.exit_code == 0, listed.output
    assert detail in listed.stdout
