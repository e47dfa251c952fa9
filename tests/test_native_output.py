"""Native libraries' output during a model load stays off the terminal unless --verbose (native_output.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from aiestack.native_output import VERBOSE_ENV, quiet_native_output

NATIVE = b"llama_kv_cache_iswa: using full-size SWA cache\nload_tensors: loading model tensors\n........\n"


@pytest.mark.unit
def test_native_log_lines_written_to_fd_2_are_dropped_and_other_lines_kept(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with quiet_native_output():
        os.write(2, NATIVE)  # as C writes: below Python's sys.stderr
        os.write(2, b"Loading weights: 100%|\xe2\x96\x88\xe2\x96\x88\xe2\x96\x88| 103/103 [00:00<00:00]\r\n")
        print("UserWarning: another thread's warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "llama_kv_cache_iswa" not in err and "load_tensors" not in err and "Loading weights" not in err
    assert "UserWarning: another thread's warning" in err
    os.write(2, b"after: fd 2 is the terminal again\n")
    assert "after: fd 2 is the terminal again" in capfd.readouterr().err


@pytest.mark.unit
def test_when_the_block_fails_everything_captured_is_shown(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with pytest.raises(RuntimeError), quiet_native_output():
        os.write(2, b"llama_model_load: error loading model: bad magic\n")
        raise RuntimeError("load failed")
    assert "error loading model: bad magic" in capfd.readouterr().err


@pytest.mark.unit
def test_verbose_lets_native_output_through(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with quiet_native_output():
        os.write(2, NATIVE)
    assert "llama_kv_cache_iswa" in capfd.readouterr().err


_LOAD = textwrap.dedent(
    """
    import asyncio
    from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig
    async def main():
        model = LlamaCppModel(LlamaCppModelConfig())
        health = await model.check("gemma-3-270m")
        assert health.ok, health.detail
        await model.aclose()
    asyncio.run(main())
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the local extra (llama-cpp-python)")
@pytest.mark.parametrize("verbose", [False, True])
def test_loading_the_embedded_model_prints_nothing_unless_verbose(verbose: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    if verbose:
        env[VERBOSE_ENV] = "1"
    done = subprocess.run([sys.executable, "-c", _LOAD], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    if verbose:
        assert "llama_" in done.stderr  # the premise: llama.cpp does print, from C, whatever verbose=False says
    else:
        assert done.stderr == "" and done.stdout == ""


@pytest.mark.unit
def test_the_cli_verbose_flag_sets_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from aiestack.cli import build_app

    monkeypatch.setenv(VERBOSE_ENV, "")  # restored (removed) after the test
    result = CliRunner().invoke(build_app(), ["--verbose", "init", "--help"])
    assert result.exit_code == 0, result.output
    assert os.environ.get(VERBOSE_ENV) == "1"


_EMBED = textwrap.dedent(
    """
    import asyncio
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings
    async def main():
        model = SentenceTransformerEmbeddings("all-MiniLM-L6-v2")
        await model.load()
        await model.aclose()
    asyncio.run(main())
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="needs sentence-transformers")
def test_loading_the_embedding_model_draws_no_progress_bar() -> None:
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-c", _EMBED], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and done.stderr.strip() == "", done.stderr
