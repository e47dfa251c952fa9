"""``aiestack eval`` driven as a user would (CliRunner), against the echoing fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aiestack.cli import evals


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps "eval" a sub-command
    evals.register(app)
    return app


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


unit = pytest.mark.unit


@pytest.fixture
def suite(fake_config: Path) -> Path:
    rows = [{"q": f"answer {i}", "a": f"answer {i}" if i % 4 else "something else"} for i in range(12)]
    (fake_config.parent / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    path = fake_config.parent / "suite.yaml"
    path.write_text(
        "name: echo-suite\n"
        "dataset: {path: data.jsonl, input: q, reference: a}\n"
        "systems: [{name: echo, model: echo}, {name: echo-b, model: echo, params: {temperature: 0}}]\n"
        "metrics: [{name: exact_match}, {name: latency}]\n"
        "gates: [{metric: exact_match, min: 0.5}]\n"
        "concurrency: 4\n",
        encoding="utf-8",
    )
    return path


@unit
def test_run_prints_a_leaderboard_and_writes_an_html_report(suite: Path) -> None:
    code, out, err = run("eval", "run", str(suite), "--html", "report.html", "--quiet")
    assert code == 0, err
    assert "echo-b" in out and "exact_match" in out and "p50 ms" in out
    assert "24 model calls" in err
    html = (suite.parent / "report.html").read_text()
    assert "<svg" in html and "echo-suite" in html


@unit
def test_the_leaderboard_piped_is_drawn_whole(suite: Path) -> None:
    # Piped (CI logs, `| tee`), rich drew 80 columns: "numeric_…", "20691.4…", system names cut.
    name = "echo-with-a-rather-long-system-name"
    text = suite.read_text(encoding="utf-8").replace("{name: echo-b,", "{name: " + name + ",")
    suite.write_text(text.replace("{name: latency}]", "{name: latency}, {name: cost}, {name: contains}]"), encoding="utf-8")
    code, out, err = run("eval", "run", str(suite), "--quiet")
    assert code == 0, err
    assert name in out and "exact_match" in out and "contains" in out and "…" not in out


@unit
def test_a_re_run_is_answered_from_the_cache_and_compare_finds_the_baseline(suite: Path) -> None:
    assert run("eval", "run", str(suite), "-q")[0] == 0
    code, _, err = run("eval", "run", str(suite), "-q", "--system", "echo")
    assert code == 0 and "0 model calls, 12 from the eval cache" in err
    code, out, _ = run("eval", "list")
    assert code == 0 and out.count("echo-suite") == 2
    run_id = err.split("run ")[1].split(":")[0].strip()
    code, out, _ = run("eval", "compare", run_id, "--gate", "exact_match drop<=0")
    assert code == 0, out
    assert "baseline: run" in out and "+0.000" in out


@unit
def test_eval_calls_bypass_the_gateway_caches_and_a_suite_may_opt_back_in(suite: Path) -> None:
    """At temperature 0 every call is cacheable by the gateway; an evaluation must still call the model."""
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store

    for _ in range(2):
        code, _, err = run("eval", "run", str(suite), "-q", "--no-cache", "--system", "echo-b")
        assert code == 0 and "12 model calls, 0 from the eval cache" in err
    store = open_store(load_settings().store_url, "exchanges")
    try:
        records = store.list_exchanges(limit=100)
        assert len(records) == 24 and {r.outcome for r in records} == {"ok"}
        assert all(r.total_ms is not None and r.output_tokens > 0 for r in records)
    finally:
        store.close()
    suite.write_text(suite.read_text(encoding="utf-8") + "gateway_cache: true\n", encoding="utf-8")
    for expected in ("(0 answered by the gateway cache)", "(12 answered by the gateway cache)"):
        code, _, err = run("eval", "run", str(suite), "-q", "--no-cache", "--system", "echo-b")
        assert code == 0 and expected in err


@unit
def test_list_shows_whole_run_ids_that_baseline_accepts(suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal must not cut the ids
    assert run("eval", "run", str(suite), "-q")[0] == 0
    code, out, _ = run("eval", "list")
    ids = [word for word in out.split() if word.startswith("run_")]
    assert code == 0 and len(ids) == 1 and "…" not in out
    code, out, _ = run("eval", "run", str(suite), "-q", "--baseline", ids[0])
    assert code == 0 and f"baseline: run {ids[0]}" in out


@unit
def test_a_max_drop_gate_in_the_suite_compares_with_the_previous_run(suite: Path) -> None:
    """The suite's max_drop gate uses the previous finished run of the suite when no --baseline is given."""
    suite.write_text(
        suite.read_text(encoding="utf-8").replace(
            "gates: [{metric: exact_match, min: 0.5}]", "gates: [{metric: exact_match, max_drop: 0.05}]"
        ),
        encoding="utf-8",
    )
    code, out, _ = run("eval", "run", str(suite), "-q")
    assert code == 0 and "no baseline" in out  # the very first run has nothing to compare with
    code, out, _ = run("eval", "run", str(suite), "-q")
    assert code == 0 and "baseline: run" in out and "no baseline" not in out
    broken = suite.read_text(encoding="utf-8").replace("name: echo-suite", "name: echo-suite\nprompt: 'x{{ input }}'")
    suite.write_text(broken, encoding="utf-8")
    code, out, err = run("eval", "run", str(suite), "-q", "--no-cache")
    assert code == 1 and "gate failed" in err  # every answer is now wrong: a clear drop


@unit
def test_a_failing_gate_exits_1(suite: Path) -> None:
    code, out, err = run("eval", "run", str(suite), "-q", "--gate", "exact_match>=0.9")
    assert code == 1
    assert "fail" in out and "gate failed" in err


@unit
def test_unknown_system_is_a_config_error(suite: Path) -> None:
    result = CliRunner().invoke(_app(), ["eval", "run", str(suite), "--system", "ech"])
    assert result.exception is not None and "did you mean 'echo'" in str(result.exception)


@unit
def test_a_suite_with_compare_prints_and_draws_the_ranking(suite: Path, fake_config: Path) -> None:
    # The echoing model repeats the prompt, so this prompt file makes it a judge that always says "A":
    # pure position bias, which the swap turns into ties (consistency 0 %). The JSON guard is off:
    # its re-ask would be echoed back instead of the prompt.
    fake_config.write_text(fake_config.read_text(encoding="utf-8") + '[guards]\njson_schema = "off"\n', encoding="utf-8")
    prompt = suite.parent / "always_a.txt"
    prompt.write_text('Judge.\n---\n$question\n{"reasoning": "first", "winner": "A"}\n', encoding="utf-8")
    text = (
        suite.read_text(encoding="utf-8")
        + f"compare: {{judge: {{model: echo, prompt: {prompt}}}, bootstrap: 100}}\n"
    )
    suite.write_text(text, encoding="utf-8")
    code, out, err = run("eval", "run", str(suite), "--html", "report.html", "-q")
    assert code == 0, err
    assert "Pairwise ranking" in out and "Win rate" in out and "12 battles" in out and "consistency 0%" in out
    assert "24 model calls" not in err and "48 model calls" in err  # 24 answers + 12 × 2 judge calls
    html = (suite.parent / "report.html").read_text()
    assert "Pairwise ranking" in html and "consistency: <b>0%</b>" in html and "<circle" in html
    code, _, err = run("eval", "run", str(suite), "-q")
    assert code == 0 and "0 model calls" in err


@pytest.mark.integration
@pytest.mark.slow
def test_example_suite_end_to_end_on_the_embedded_model(workdir: Path) -> None:
    """examples/evals/gsm8k.yaml from the CLI on the real embedded model, with its HTML report."""
    suite = Path(__file__).resolve().parents[2] / "examples" / "evals" / "gsm8k.yaml"
    code, out, err = run("eval", "run", str(suite), "--limit", "2", "--html", "gsm8k.html", "-q")
    assert code == 0, err
    assert "gemma" in out and "numeric_match" in out and "2 model calls" in err
    html = (workdir / "gsm8k.html").read_text()
    assert "<svg" in html and "gsm8k-mini" in html


@unit
def test_the_eval_cache_re_runs_a_route_whose_configuration_or_prompt_changed(suite: Path, fake_config: Path) -> None:
    """The eval cache's key holds what a route resolves to: its models, its config, its prompt's version."""
    base = fake_config.read_text(encoding="utf-8") + '[models.echo2]\nprovider = "fake"\n'
    fake_config.write_text(base + '[routes.support]\ndeployments = ["echo"]\n', encoding="utf-8")
    suite.write_text(suite.read_text(encoding="utf-8").replace("model: echo}", "model: support}"), encoding="utf-8")
    args = ("eval", "run", str(suite), "-q", "--system", "echo")
    assert "12 model calls, 0 from the eval cache" in run(*args)[2]
    assert "0 model calls, 12 from the eval cache" in run(*args)[2]
    fake_config.write_text(base + '[routes.support]\ndeployments = ["echo2"]\n', encoding="utf-8")
    assert "12 model calls, 0 from the eval cache" in run(*args)[2]  # another model behind the route
    template = fake_config.parent / "support.j2"
    template.write_text("Be brief.", encoding="utf-8")
    from aiestack.cli import prompts

    app = typer.Typer()
    app.command("noop")(lambda: None)
    prompts.register(app)
    assert CliRunner().invoke(app, ["prompts", "push", "support", str(template), "--label", "production"]).exit_code == 0
    fake_config.write_text(base + '[routes.support]\ndeployments = ["echo2"]\nprompt = "support"\n', encoding="utf-8")
    assert "12 model calls" in run(*args)[2]
    assert "0 model calls, 12 from the eval cache" in run(*args)[2]
    template.write_text("Be very brief.", encoding="utf-8")
    assert CliRunner().invoke(app, ["prompts", "push", "support", str(template), "--label", "production"]).exit_code == 0
    assert "12 model calls, 0 from the eval cache" in run(*args)[2]  # a new version behind the same label
