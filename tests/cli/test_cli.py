"""The CLI driven as a user would (CliRunner), with the scripted fake model."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiestack.cli import build_app, main

pytestmark = pytest.mark.unit


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_the_commands() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in ("init", "serve", "models", "chat", "logs"):
        assert command in out


def test_init_writes_a_valid_commented_config(workdir: Path) -> None:
    code, out, _ = run("init")
    assert code == 0 and "Wrote" in out
    text = (workdir / "aiestack.toml").read_text()
    assert text.count("#") > 40  # commented
    tomllib.loads(text)  # and valid TOML
    code, out, _ = run("init")
    assert code == 1 and "already exists" in out
    assert run("init", "--force")[0] == 0


def test_every_key_the_example_mentions_exists(workdir: Path) -> None:
    """The commented example must not drift from the real settings and provider configs."""
    import re

    from aiestack.models.anthropic import AnthropicModelConfig
    from aiestack.models.llama_cpp import LlamaCppModelConfig
    from aiestack.models.openai import OpenAIModelConfig
    from aiestack.settings import PriceSettings, Settings

    run("init")
    mentioned = set(re.findall(r"^# (\w+) = ", (workdir / "aiestack.toml").read_text(), flags=re.M))
    known = set(Settings.model_fields) | set(PriceSettings.model_fields)
    for section in ("store", "tracing", "embeddings"):
        known |= set(Settings.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
    from aiestack.gateway.routes import BreakerConfig, RouteConfig

    for section in ("gateway", "cache", "router"):
        known |= set(Settings.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
    for cfg in (OpenAIModelConfig, AnthropicModelConfig, LlamaCppModelConfig, RouteConfig, BreakerConfig):
        known |= set(cfg.model_fields)
    assert mentioned and mentioned <= known, mentioned - known


def test_chat_streams_the_answer_and_prints_statistics(fake_config: Path) -> None:
    code, out, err = run("chat", "hello from the test")
    assert code == 0
    assert out.strip() == "hello from the test"
    assert "echo" in err and "in /" in err and "TTFT" in err and "ex_" in err
    # The time is the whole request, as `logs` shows it (it was the model's alone), then the model's.
    found = re.search(r"· (\d+\.\d\d) s \(model (\d+\.\d\d) s\)", " ".join(err.split()))
    assert found is not None and float(found[1]) >= float(found[2]), err


def test_chat_says_when_the_answer_came_from_the_cache(fake_config: Path) -> None:
    # A cache hit printed "echo · 0 in / 0 out tokens · 0.00 s · $0.000000 · finish stop": nothing said why.
    assert run("chat", "-t", "0", "the same question")[0] == 0
    code, out, err = run("chat", "-t", "0", "the same question")
    assert code == 0 and out.strip() == "the same question"
    stats = " ".join(err.split())
    assert "cached" in stats and "ex_" in stats, stats
    first = run("chat", "-t", "0", "another question")[2]
    assert "cached" not in first


def test_chat_statistics_stay_on_one_line_when_piped(workdir: Path) -> None:
    # rich wrapped the line at 80 columns when stderr was not a terminal: "(16 tok/s) · \n18.11 s · ...".
    name = "echo-model-with-a-name-long-enough-to-push-the-line-past-eighty-columns"
    (workdir / "aiestack.toml").write_text(
        f'default_model = "{name}"\nembedded_model = false\n[models.{name}]\nprovider = "fake"\n', encoding="utf-8"
    )
    code, _, err = run("chat", "hello")
    assert code == 0
    (stats,) = [line for line in err.splitlines() if line.strip()]
    assert stats.startswith(name) and "ex_" in stats


def test_chat_quiet_prints_only_the_answer(fake_config: Path) -> None:
    code, out, err = run("chat", "-q", "just this")
    assert code == 0 and out.strip() == "just this" and err == ""


def test_chat_reads_the_prompt_from_stdin(fake_config: Path) -> None:
    code, out, _ = run("chat", "-q", "-", input="piped prompt\n")
    assert code == 0 and out.strip() == "piped prompt"


def test_chat_then_logs_shows_the_exchange(fake_config: Path) -> None:
    run("chat", "one two three")
    code, out, _ = run("logs", "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 1
    r = records[0]
    assert r["model"] == "echo" and r["outcome"] == "ok" and r["output_tokens"] == 3
    assert r["ttft_ms"] is not None and r["total_ms"] > 0
    assert r["response"] is None  # content tracing is off by default
    code, out, _ = run("logs")
    assert code == 0 and "echo" in out and "TTFT" in out


def test_logs_piped_keeps_every_column_whole(workdir: Path) -> None:
    """Not on a terminal (a pipe, a file), tables are drawn wide: rich would cut them to 80 columns."""
    model = "a-deployment-name-long-enough-to-crowd-an-eighty-column-table"
    (workdir / "aiestack.toml").write_text(
        f'default_model = "{model}"\nembedded_model = false\n[models.{model}]\nprovider = "fake"\n', encoding="utf-8"
    )
    run("chat", "one two three")
    code, out, _ = run("logs")
    assert code == 0 and model in out
    header = next(line for line in out.splitlines() if "TTFT" in line)
    assert header.split() == ["time", "exchange", "model", "outcome", "in", "out", "TTFT", "TPOT", "total", "cost", "$"]


def test_chat_unknown_model_is_a_clear_error(fake_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["chat", "-m", "ech", "hi"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Did you mean 'echo'" in err


def test_invalid_config_names_the_key_and_fix(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "aiestack.toml").write_text("[store]\nbatch_size = -1\n")
    with pytest.raises(SystemExit) as info:
        main(["logs"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "store.batch_size" in err and "Fix:" in err


def test_a_hint_in_square_brackets_is_printed_whole(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # rich read "[models]" in a hint as markup and dropped it: "name a model configured under  (known: ...)".
    (workdir / "aiestack.toml").write_text(
        'embedded_model = false\ndefault_model = "x"\n[models.x]\nprovider = "fake"\n'
        '[routes.billing]\ndeployments = ["gpt-4o-mini"]\n'
    )
    with pytest.raises(SystemExit):
        main(["chat", "hi"])
    err = " ".join(capsys.readouterr().err.split())
    assert "a model configured under [models]" in err and "gpt-4o-mini" in err


def test_unknown_provider_is_a_config_error(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "aiestack.toml").write_text('embedded_model = false\ndefault_model = "x"\n[models.x]\nprovider = "opnai"\n')
    with pytest.raises(SystemExit):
        main(["chat", "hi"])
    assert "models.x.provider" in capsys.readouterr().err


def test_json_schema_that_is_not_a_schema_is_rejected(fake_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fake_config.parent / "bad.json").write_text('{"type": 12}')
    with pytest.raises(SystemExit) as info:
        main(["chat", "--json-schema", "bad.json", "x"])
    assert info.value.code == 2
    assert "not a valid JSON Schema" in capsys.readouterr().err


def test_chat_json_schema_validates_the_answer(fake_config: Path) -> None:
    """The fake echoes: a JSON prompt passes validation, a non-JSON one is reported (exit 1)."""
    schema = fake_config.parent / "s.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}')
    code, out, _ = run("chat", "-q", "--json-schema", str(schema), '{"a": 1}')
    assert code == 0 and json.loads(out) == {"a": 1}
    code, _, err = run("chat", "-q", "--json-schema", str(schema), "not json")
    assert code == 1 and "does not validate" in err


def test_models_lists_and_checks(fake_config: Path) -> None:
    code, out, _ = run("models")
    assert code == 0 and "echo" in out and "fake" in out and "yes" in out


def test_models_reports_unreachable_openai_server(workdir: Path) -> None:
    (workdir / "aiestack.toml").write_text(
        'embedded_model = false\ndefault_model = "down"\n[models.down]\nprovider = "openai"\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key_env = ""\n'
    )
    code, out, _ = run("models")
    assert code == 1 and "down" in out and "no" in out


def test_serve_keeps_idle_connections_longer_than_clients_do(fake_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's keep-alive outlives httpx's and the OpenAI SDK's 5 s idle pool (soak: ReadErrors at 5 s)."""
    import uvicorn

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    assert run("serve")[0] == 0
    assert calls[-1]["timeout_keep_alive"] == 75
    fake_config.write_text(fake_config.read_text() + "[gateway]\nkeep_alive_s = 20\n", encoding="utf-8")
    assert run("serve")[0] == 0
    assert calls[-1]["timeout_keep_alive"] == 20
