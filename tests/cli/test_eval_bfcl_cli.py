"""``aiestack eval bfcl`` as a user runs it: importing the data from a wheel, scoring the echoing fake model."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aiestack.cli import evals
from aiestack.errors import ConfigError, ModelNotFound
from aiestack.evals.bfcl.data import CATEGORIES, NO_ANSWER, find_data

FUNCTION = {"name": "math.factorial", "description": "n!", "parameters": {"type": "dict", "properties": {"number": {"type": "integer"}}, "required": ["number"]}}


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("noop")(lambda: None)
    evals.register(app)
    return app


def _wheel(path: Path, *, skip: str | None = None) -> Path:
    """A small stand-in for the bfcl-eval wheel: three questions per category, the layout of the real one."""
    with zipfile.ZipFile(path, "w") as wheel:
        for category in CATEGORIES:
            name = f"bfcl_eval/data/BFCL_v4_{category}.json"
            if name == skip:
                continue
            questions = [
                {"id": f"{category}_{i}", "question": [[{"role": "user", "content": f"What is {i + 3} factorial?"}]], "function": [FUNCTION]}
                for i in range(3)
            ]
            wheel.writestr(name, "\n".join(json.dumps(q) for q in questions))
            if category not in NO_ANSWER:
                answers = [{"id": f"{category}_{i}", "ground_truth": [{"math.factorial": {"number": [i + 3]}}]} for i in range(3)]
                wheel.writestr(f"bfcl_eval/data/possible_answer/BFCL_v4_{category}.json", "\n".join(json.dumps(a) for a in answers))
    return path


def test_import_wheel_then_score_the_echo_model(fake_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = fake_config.parent / "bfcl"
    result = CliRunner().invoke(_app(), ["eval", "bfcl", "--import-wheel", str(_wheel(fake_config.parent / "b.whl")), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert find_data(data) == data
    result = CliRunner().invoke(
        _app(), ["eval", "bfcl", "--model", "echo", "--data", str(data), "--category", "simple_python", "--category", "irrelevance", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["category"]: r for r in json.loads(result.stdout.strip().splitlines()[-1])}
    # The echo model answers in text: never a call, so right on irrelevance and wrong on simple calls.
    assert rows["irrelevance"]["accuracy"] == 1.0 and rows["simple_python"]["accuracy"] == 0.0
    assert rows["simple_python"]["entries"] == 3 and rows["simple_python"]["protocol"] == "native"
    table = CliRunner().invoke(_app(), ["eval", "bfcl", "--model", "echo", "--data", str(data), "--limit", "1"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "live_parallel_multiple" in table.stdout and "all (micro)" in table.stdout
    # a name that is neither a model nor a route: the gateway's error at once, not a table of failed calls
    unknown = CliRunner().invoke(_app(), ["eval", "bfcl", "--model", "ehco", "--data", str(data), "--limit", "1"])
    assert unknown.exit_code != 0
    assert isinstance(unknown.exception, ModelNotFound) and "Did you mean 'echo'" in (unknown.exception.hint or "")


def test_a_wheel_without_the_files_and_missing_data_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiestack.evals.bfcl.data import import_wheel

    bad = _wheel(tmp_path / "bad.whl", skip="bfcl_eval/data/BFCL_v4_multiple.json")
    with pytest.raises(ConfigError, match=r"lacks bfcl_eval/data/BFCL_v4_multiple\.json"):
        import_wheel(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-imported
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "nowhere"))
    monkeypatch.delenv("AIESTACK_BFCL_DATA", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip download bfcl-eval"):
        find_data()


def test_scripts_setup_imports_the_wheel_version_the_code_names() -> None:
    from aiestack.evals.bfcl.data import WHEEL_VERSION

    setup = (Path(__file__).resolve().parents[2] / "scripts" / "setup").read_text(encoding="utf-8")
    assert f"BFCL_VERSION={WHEEL_VERSION}" in setup
    test = (Path(__file__).resolve().parents[2] / "scripts" / "test").read_text(encoding="utf-8")
    assert "bfcl" in test.split("./scripts/setup", 1)[1].splitlines()[0]  # CI imports the data, so its tests run
