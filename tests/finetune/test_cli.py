"""``aiestack finetune sft|dpo|export|merge`` from the terminal (the tiny Gemma 3 stands in for the embedded model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiestack.cli.app import build_app
from aiestack.errors import ConfigError

pytest.importorskip("trl")
pytest.importorskip("llama_cpp")


@pytest.mark.slow
def test_sft_then_export_then_merge(tiny_gemma3: Path, tmp_path: Path, one_thread: None) -> None:
    data = tmp_path / "facts.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]}) + "\n")
    app = build_app(entry_points=False)
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["finetune", "sft", str(data), "--model", str(tiny_gemma3), "--out", str(out), "--steps", "2",
                                 "--rank", "4", "--alpha", "8", "--lr", "1e-3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Training on the CPU" in result.output and "step    2  loss" in result.output
    for noise in ("it/s", "examples/s", "Loading weights", "FutureWarning", "Could not find a config file"):
        assert noise not in result.output  # library progress bars and warnings (aiestack --verbose shows the bars)
    assert f'path = "{tiny_gemma3}"' in result.output and f'lora = "{(out / "adapter.gguf").resolve()}"' in result.output
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == 2 and record["lora"]["alpha"] == 8

    exported = runner.invoke(app, ["finetune", "export", str(out / "adapter"), "--out", str(tmp_path / "again.gguf")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "again.gguf").read_bytes() == (out / "adapter.gguf").read_bytes()

    merged = runner.invoke(app, ["finetune", "merge", str(out / "adapter"), str(out / "adapter"), "--method", "ties",
                                 "--out", str(tmp_path / "merged"), "--gguf"])
    assert merged.exit_code == 0, merged.output
    assert "merged 2 adapters (ties)" in merged.output and (tmp_path / "merged.gguf").is_file()


def test_dpo_on_chat_rows_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    result = CliRunner().invoke(build_app(entry_points=False), ["finetune", "dpo", str(data), "--device", "cpu"])
    assert isinstance(result.exception, ConfigError) and "preference pairs" in str(result.exception)  # main() prints it


def test_data_is_read_from_the_configured_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from aiestack.datasets import build_dataset, from_file
    from aiestack.stores.exchanges_sql import SqlExchangeStore

    for key in list(os.environ):
        if key.startswith("AIESTACK_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIESTACK_DATA_DIR", str(tmp_path / "data"))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'data' / 'aiestack.db'}")
    store.migrate()
    build_dataset(store, "facts", from_file(rows))
    store.close()
    app = build_app(entry_points=False)
    chat = CliRunner().invoke(app, ["finetune", "dpo", "facts@1", "--device", "cpu"])
    assert isinstance(chat.exception, ConfigError) and "facts@1" in str(chat.exception) and "preference pairs" in str(chat.exception)
    missing = CliRunner().invoke(app, ["finetune", "sft", "facts@7", "--device", "cpu"])
    assert isinstance(missing.exception, ConfigError) and "it has versions 1" in str(missing.exception)
