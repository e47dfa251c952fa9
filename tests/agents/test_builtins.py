"""The built-in tools through the loop: search (with citations), fetch_url (SSRF-safe), python (sandboxed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aiestack.agents import Agent, fetch_url_tool, python_tool, search_tool
from aiestack.build import Stack
from aiestack.context.chunking import RegexTokenizer
from aiestack.context.ingest import IngestOptions, ingest
from aiestack.context.urls import URLPolicy
from aiestack.models.fake import FakeModel, Script
from aiestack.sandbox import Limits
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings

from .conftest import TextOnlyModel

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]


def call(name: str, args: dict[str, object], cid: str = "c1") -> Script:
    return Script(tool_calls=[(cid, name, json.dumps(args))])


# ---------------------------------------------------------------- search


@pytest.fixture
async def kb(agent_stack: Fixture, tmp_path: Path) -> Fixture:
    stack = agent_stack[0]
    store = MemoryDocumentStore()
    store.migrate()
    embeddings = BagOfWordsEmbeddings()
    stack.resources.use(embeddings=embeddings, documents=store)
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "tea.md").write_text("# Tea\n\nBrew green tea at 80 degrees for two minutes.\n", encoding="utf-8")
    (docs / "coffee.md").write_text("# Coffee\n\nEspresso is brewed at 93 degrees.\n", encoding="utf-8")
    await ingest([str(docs)], "kb", store, embeddings, options=IngestOptions(tokenizer=RegexTokenizer()))
    return agent_stack


async def test_search_numbers_sources_across_the_run_and_the_answer_carries_citations(kb: Fixture) -> None:
    stack, model, _ = kb
    search = search_tool(stack.resources, "kb")
    model.enqueue(
        [
            call("search", {"query": "green tea degrees"}),
            call("search", {"query": "espresso brewed"}, "c2"),
            "Green tea wants 80 degrees [1]; espresso 93 [2].",
        ]
    )
    result = await Agent(model="m", stack=stack, tools=[search]).run("How hot should tea and coffee be?")
    first, second = result.tool_results
    assert first.content.startswith("[1] Tea") and "80 degrees" in first.content
    assert "[2] Coffee" in second.content and "[1] Tea" in second.content  # the tea chunk keeps its number
    cited = {c["index"]: c for c in result.citations}
    assert cited[1]["source"].endswith("tea.md") and cited[1]["cited"] is True
    assert cited[2]["source"].endswith("coffee.md") and cited[2]["cited"] is True
    assert result.events[-2].citations == result.citations  # the FinalAnswer event carries them


async def test_search_refuses_another_tenants_collection(kb: Fixture) -> None:
    stack, model, _ = kb
    model.enqueue([call("search", {"query": "tea"}), "no access"])
    result = await Agent(model="m", stack=stack, tools=[search_tool(stack.resources, "kb")]).run(
        "tea?", tenant="acme"
    )
    assert result.tool_results[0].error == "the collection 'kb' belongs to another tenant"
    assert not result.citations


# ---------------------------------------------------------------- fetch_url


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (
            b"<html><head><title>Hello</title></head><body><h1>Hello</h1><p>World of pages.</p></body></html>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def local_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page"
    server.shutdown()
    server.server_close()


async def test_fetch_url_refuses_the_internal_network(agent_stack: Fixture, local_site: str) -> None:
    stack, model, _ = agent_stack
    model.enqueue(
        [call("fetch_url", {"url": local_site}), call("fetch_url", {"url": "file:///etc/passwd"}, "c2"), "no"]
    )
    result = await Agent(model="m", stack=stack, tools=[fetch_url_tool()]).run("read it")
    loopback, scheme = result.tool_results
    assert loopback.error is not None and "UnsafeURL" in loopback.error and "127.0.0.1" in loopback.error
    assert scheme.error is not None and "Only http and https" in scheme.error


async def test_fetch_url_returns_a_page_as_markdown(agent_stack: Fixture, local_site: str) -> None:
    stack, model, _ = agent_stack
    model.enqueue([call("fetch_url", {"url": local_site}), "It says hello."])
    tool = fetch_url_tool(URLPolicy(allow_private=True, timeout_s=5))  # this test's site is on loopback
    result = await Agent(model="m", stack=stack, tools=[tool]).run("read it")
    page = result.tool_results[0]
    assert page.ok and page.content.startswith(f"URL: {local_site}") and "World of pages." in page.content
    assert "<p>" not in page.content


# ---------------------------------------------------------------- python


@pytest.fixture(scope="module")
def python() -> object:
    return python_tool(Limits(timeout_s=5, memory_mb=256))


async def test_python_runs_code_and_reports_failures(agent_stack: Fixture, python: object) -> None:
    stack, model, _ = agent_stack
    model.enqueue(
        [call("python", {"code": "print(sum(range(10)))"}), call("python", {"code": "1/0"}, "c2"), "45"]
    )
    result = await Agent(model="m", stack=stack, tools=[python]).run("sum 0..9")  # type: ignore[list-item]
    ok, failed = result.tool_results
    assert ok.ok and ok.content == "stdout:\n45"
    assert failed.error is not None and failed.error.startswith(
        "the code exited with status 1: ZeroDivisionError"
    )


@pytest.mark.parametrize(
    ("code", "expect"),
    [
        # The environment is empty: a secret of the server's is not there to read.
        ("import os; print(sorted(os.environ)); print(os.environ['AIESTACK_TEST_SECRET'])", "KeyError"),
        ("open('/tmp/aiestack-escaped-by-agent', 'w').write('x')", "PermissionError"),
        ("import socket; socket.create_connection(('127.0.0.1', 5432), timeout=1)", "PermissionError"),
        ("import os\nwhile True:\n    os.fork()", "PermissionError"),
    ],
    ids=["environment", "write-outside", "socket", "fork-bomb"],
)
async def test_python_escapes_end_in_a_clear_step_error(
    agent_stack: Fixture, python: object, code: str, expect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIESTACK_TEST_SECRET", "hunter2")
    stack, model, _ = agent_stack
    model.enqueue([call("python", {"code": code}), "refused"])
    result = await Agent(model="m", stack=stack, tools=[python], timeout_s=30).run("try")  # type: ignore[list-item]
    (step,) = result.tool_results
    assert step.error is not None and expect in step.error, step.content
    assert "hunter2" not in step.content
    assert result.stop_reason == "final_answer"
    assert not Path("/tmp/aiestack-escaped-by-agent").exists()
