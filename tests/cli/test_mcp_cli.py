"""``aiestack mcp`` end to end: the real CLI in a subprocess, driven by the official MCP SDK's client (stdio and HTTP).

A tiny collection is ingested with the real CLI; the answering model is the scripted ``fake``
provider (it echoes its prompt, so the answer shows that the sources reached the model).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the agents extra: pip install -e '.[agents]'")

from mcp import Client, StdioServerParameters

from aiestack.testing.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONFIG = 'default_model = "echo"\nembedded_model = false\n[models.echo]\nprovider = "fake"\n'
DOCS = {
    "tea.md": "# Tea\n\nGreen tea is brewed at 80 degrees; black tea at boiling temperature.\n",
    "cats.md": "# Cats\n\nCats purr when they are content and sleep most of the day.\n",
}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIESTACK_")}
    env.update(
        AIESTACK_CONFIG=str(home / "aiestack.toml"),
        AIESTACK_DATA_DIR=str(home / "data"),
        AIESTACK_GUARDS__ENABLED="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("mcp-home")
    (home / "aiestack.toml").write_text(CONFIG, encoding="utf-8")
    (home / "docs").mkdir()
    for name, text in DOCS.items():
        (home / "docs" / name).write_text(text, encoding="utf-8")
    rows = [{"q": f"answer {i}", "a": f"answer {i}" if i % 4 else "something else"} for i in range(8)]
    (home / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (home / "suite.yaml").write_text(
        "name: mcp-suite\n"
        "dataset: {path: data.jsonl, input: q, reference: a}\n"
        "systems: [{name: echo, model: echo}]\n"
        "metrics: [{name: exact_match}]\n",
        encoding="utf-8",
    )
    ingest = subprocess.run(
        [sys.executable, "-m", "aiestack", "ingest", "docs", "--collection", "kb", "--quiet"],
        cwd=home, env=_env(home), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr + ingest.stdout
    return home


@pytest.fixture(scope="module")
def http_url(home: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiestack", "mcp", "--http", "--port", str(port)],
        cwd=home, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"aiestack mcp --http exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("aiestack mcp --http did not listen within 120 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@asynccontextmanager
async def connect(transport: str, home: Path, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    if transport == "stdio":
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "aiestack", "mcp"], env=_env(home), cwd=str(home)
        )
        client = Client(params, read_timeout_seconds=120, mode="legacy")
    else:
        client = Client(request.getfixturevalue("http_url"), read_timeout_seconds=120)
    async with client:
        yield client


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    data = result.structured_content
    return data["result"] if isinstance(data, dict) and set(data) == {"result"} else data


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_mcp_client_lists_searches_and_asks(
    transport: str, home: Path, request: pytest.FixtureRequest
) -> None:
    async with connect(transport, home, request) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"collections", "search", "ask", "eval_run"}
        assert tools["search"].input_schema["required"] == ["collection", "query"]
        assert "citing" in (tools["ask"].description or "")

        listed = structured(await client.call_tool("collections", {}))
        assert [(c["name"], c["documents"]) for c in listed] == [("kb", 2)]

        hits = structured(
            await client.call_tool("search", {"collection": "kb", "query": "green tea", "mode": "bm25"})
        )
        assert (
            hits[0]["rank"] == 1 and hits[0]["source"].endswith("tea.md") and "80 degrees" in hits[0]["text"]
        )

        answered = structured(
            await client.call_tool("ask", {"question": "How hot for green tea?", "collection": "kb"})
        )
        # The echo model repeats its prompt: the retrieved source reached the model through the RAG stage.
        assert "80 degrees" in answered["answer"] and answered["exchange_id"]
        sources = [c["source"] for c in answered["citations"]]
        assert any(s.endswith("tea.md") for s in sources)

        missing = await client.call_tool("search", {"collection": "nope", "query": "x"})
        assert missing.is_error and "does not exist (collections: kb)" in missing.content[0].text  # type: ignore[union-attr]


async def test_eval_run_over_mcp(home: Path, request: pytest.FixtureRequest) -> None:
    async with connect("stdio", home, request) as client:
        summary = structured(
            await client.call_tool("eval_run", {"suite_file": str(home / "suite.yaml"), "limit": 4})
        )
        assert summary["run_id"] and summary["calls"] == 4
        assert summary["systems"]["echo"]["metrics"]["exact_match"]["mean"] == pytest.approx(0.75)
        bad = await client.call_tool("eval_run", {"suite_file": str(home / "missing.yaml")})
        assert bad.is_error and "no suite file" in bad.content[0].text  # type: ignore[union-attr]
