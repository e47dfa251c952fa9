"""The foundation's 'done when', tried as a new user would: the real CLI in subprocesses.

Uses the real embedded model (Gemma 3 270M), the real SQLite store, and a real aiestack server
standing in for "any OpenAI-compatible server on localhost".
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from aiestack.testing.net import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIESTACK_")}
    env.update(AIESTACK_DATA_DIR=str(data), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def aiestack(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiestack", *args],
        cwd=cwd, env=_env(cwd / "data"), capture_output=True, text=True, timeout=timeout, check=False,
    )


def _stream_chunks(proc: subprocess.Popen[bytes], timeout: float = 180) -> list[tuple[float, bytes]]:
    """Read stdout as it arrives; return (time, bytes) per read."""
    assert proc.stdout is not None
    chunks: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = os.read(proc.stdout.fileno(), 4096)
        if not data:
            break
        chunks.append((time.monotonic(), data))
    return chunks


def test_chat_streams_a_continuation_and_logs_show_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiestack", "chat", "-n", "40", "--seed", "7", "The capital of France is"],
        cwd=tmp_path, env=_env(tmp_path / "data"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    chunks = _stream_chunks(proc)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    text = b"".join(c for _, c in chunks).decode()
    assert len(text.strip()) > 10
    assert "<start_of" not in text and "<end_of" not in text  # no special tokens leak into text
    # streamed: the text arrived in several pieces spread over time, not all at the end
    assert len(chunks) >= 3 and chunks[-1][0] - chunks[0][0] > 0.1

    logs = aiestack(tmp_path, "logs", "--json")
    assert logs.returncode == 0, logs.stderr
    (record,) = [json.loads(line) for line in logs.stdout.splitlines()]
    assert record["model"] == "gemma-3-270m" and record["outcome"] == "ok"
    assert record["input_tokens"] > 0 and 0 < record["output_tokens"] <= 40
    assert record["ttft_ms"] > 0 and record["tpot_ms"] > 0 and record["cost_usd"] == 0
    table = aiestack(tmp_path, "logs")
    assert "gemma-3-270m" in table.stdout and "TTFT" in table.stdout


def test_chat_with_json_schema_prints_valid_json(tmp_path: Path) -> None:
    schema_path = ROOT / "examples" / "person.json"
    result = aiestack(tmp_path, "chat", "-q", "--seed", "3", "--json-schema", str(schema_path), "Invent a person")
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), json.loads(schema_path.read_text()))




@pytest.fixture
def openai_compatible_server(tmp_path: Path) -> Iterator[str]:
    """An OpenAI-compatible server on localhost: aiestack itself, serving a scripted echo model."""
    srv = tmp_path / "server"
    srv.mkdir()
    (srv / "aiestack.toml").write_text(
        'embedded_model = false\ndefault_model = "echo"\n[models.echo]\nprovider = "fake"\ndelay_s = 0.05\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiestack", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=srv, env=_env(srv / "data"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the mock server did not start")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_chat_with_an_openai_compatible_server_streams(tmp_path: Path, openai_compatible_server: str) -> None:
    client = tmp_path / "client"
    client.mkdir()
    (client / "aiestack.toml").write_text(
        f'[models.remote]\nprovider = "openai"\nbase_url = "{openai_compatible_server}"\nmodel = "echo"\napi_key_env = ""\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiestack", "chat", "-m", "remote", "-q", "one two three four five six"],
        cwd=client, env=_env(client / "data"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    chunks = _stream_chunks(proc, timeout=60)
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    assert b"".join(c for _, c in chunks).decode().strip() == "one two three four five six"
    assert len(chunks) >= 3  # word by word, 50 ms apart
    models = aiestack(client, "models")
    assert "remote" in models.stdout and "yes" in models.stdout


def test_killing_a_chat_midway_leaves_the_store_readable(tmp_path: Path) -> None:
    first = aiestack(tmp_path, "chat", "-q", "-n", "8", "Hello")  # leaves one finished exchange
    assert first.returncode == 0, first.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiestack", "chat", "-n", "400", "Once upon a time"],
        cwd=tmp_path, env=_env(tmp_path / "data"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert os.read(proc.stdout.fileno(), 64)  # it is streaming now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    db = tmp_path / "data" / "aiestack.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    logs = aiestack(tmp_path, "logs", "--json")  # migrations re-run on open
    assert logs.returncode == 0, logs.stderr
    assert len(logs.stdout.splitlines()) >= 1
    again = aiestack(tmp_path, "chat", "-q", "-n", "8", "Hello")
    assert again.returncode == 0, again.stderr
