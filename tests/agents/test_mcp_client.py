"""MCP servers' tools as agent tools, against a real MCP server (tests/agents/mcp_server.py) over stdio and HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the agents extra: pip install -e '.[agents]'")

from aiestack.agents import Agent, tool
from aiestack.agents.mcp import McpServer, McpServerGone, mcp_tools
from aiestack.errors import ConfigError
from aiestack.models.fake import Script
from aiestack.testing.net import free_port
from aiestack.tracing import GEN_AI_TOOL_NAME

from .conftest import make_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
SERVER = Path(__file__).with_name("mcp_server.py")


def stdio_server(**kw: object) -> McpServer:
    return McpServer(name="t", command=[sys.executable, str(SERVER)], **kw)  # type: ignore[arg-type]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MCP test server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the MCP test server did not listen on 127.0.0.1:{port} within {timeout_s} s")


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def calls(*specs: tuple[str, str, dict[str, object]]) -> Script:
    return Script(tool_calls=[(cid, name, json.dumps(args)) for cid, name, args in specs])


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_agent_uses_an_mcp_servers_tools(
    transport: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if transport == "stdio":
        server = stdio_server(tools=["add", "shout"], prefix="t_")
    else:
        server = McpServer(
            name="t", url=request.getfixturevalue("http_url"), tools=["add", "shout"], prefix="t_"
        )

    @tool
    def local(x: int) -> int:
        """A local tool beside the MCP ones."""
        return x * 10

    stack, model, _ = make_stack(tmp_path)
    try:
        async with mcp_tools(server) as tools:
            assert [t.name for t in tools] == ["t_add", "t_shout"]
            schema = tools.get("t_add").parameters  # type: ignore[union-attr]
            assert schema["required"] == ["a", "b"] and schema["properties"]["a"]["type"] == "integer"
            model.enqueue([
                calls(("c1", "t_add", {"a": 2, "b": 40}), ("c2", "t_shout", {"text": "hi", "times": 2}),
                      ("c3", "local", {"x": 4})),
                calls(("c4", "t_add", {"a": "two"})),
                "42, HI HI and 40.",
            ])  # fmt: skip
            result = await Agent(model="m", stack=stack, tools=[tools, local]).run("compute")
        assert result.status == "finished" and result.answer == "42, HI HI and 40."
        by_id = {r.call_id: r for r in result.tool_results}
        assert by_id["c1"].content == "42" and by_id["c1"].ok
        assert by_id["c2"].content == "HI HI"
        assert by_id["c3"].content == "40"
        # A bad argument goes back to the model as an error it can correct, checked against the server's schema.
        assert not by_id["c4"].ok and "'two' is not of type 'integer'" in (by_id["c4"].error or "")
        # The model was shown the server's tools with their schemas.
        sent = {t.name: t for t in model.requests[0].params.tools}
        assert set(sent) == {"t_add", "t_shout", "local"}
        assert sent["t_shout"].parameters["properties"]["times"]["default"] == 1
        assert "Upper-case" in sent["t_shout"].description
        # The loop's execute_tool spans cover MCP tools as they do local ones.
        stack.writer.flush(timeout=10)
        record = stack.store.get_exchange(result.model_calls[0].exchange_id)
        assert record is not None
        spans = stack.store.spans(trace_id=record.trace_id)
        names = [s.attributes.get(GEN_AI_TOOL_NAME) for s in spans if s.name.startswith("execute_tool ")]
        assert names.count("t_add") == 2 and names.count("t_shout") == 1
    finally:
        await stack.aclose()


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_errors_hangs_and_size_become_tool_errors(
    transport: str, request: pytest.FixtureRequest
) -> None:
    if transport == "stdio":
        server = stdio_server(timeout_s=2, max_result_chars=100)
    else:
        server = McpServer(
            name="t", url=request.getfixturevalue("http_url"), timeout_s=2, max_result_chars=100
        )
    async with mcp_tools(server) as tools:
        failed = await tools.get("fail").call({"why": "no way"})  # type: ignore[union-attr]
        assert not failed.ok and "refused: no way" in (failed.error or "")
        hung = await tools.get("hang").call({})  # type: ignore[union-attr]
        assert not hung.ok and "timed out after 2 s" in (hung.error or "")  # ended by the client's timeout
        large = await tools.get("big").call({"n": 5000})  # type: ignore[union-attr]
        assert large.ok and large.truncated and large.content.startswith("x" * 100)
        assert "[truncated: 4900 more characters]" in large.content
        # The server is still usable after a hung call.
        assert (await tools.get("add").call('{"a": 1, "b": 2}')).content == "3"  # type: ignore[union-attr]


async def test_a_server_that_dies_mid_call_stops_nothing(tmp_path: Path) -> None:
    stack, model, _ = make_stack(tmp_path)
    try:
        async with mcp_tools(stdio_server(timeout_s=20)) as tools:
            model.enqueue(
                [calls(("c1", "die", {})), calls(("c2", "add", {"a": 1, "b": 1})), "the server died"]
            )
            result = await Agent(model="m", stack=stack, tools=[tools], timeout_s=60).run("go")
        assert result.status == "finished" and result.answer == "the server died"
        died, after = result.tool_results
        assert not died.ok and "mcp server 't'" in (died.error or "")
        assert not after.ok and "mcp server 't'" in (after.error or "")
    finally:
        await stack.aclose()


async def test_bad_configurations_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="exactly one of command"):
        McpServer(name="x")
    with pytest.raises(ConfigError, match="exactly one of command"):
        McpServer(name="x", command=["a"], url="http://127.0.0.1:1/mcp")
    with pytest.raises(ConfigError, match="unknown keys"):
        McpServer.from_dict("x", {"command": ["a"], "comand": 1})
    with pytest.raises(ConfigError, match="list of strings"):
        McpServer.from_dict("x", {"command": "python server.py"})
    assert McpServer.from_dict("x", {"command": ["a", "b"], "approval": ["b"]}).approval == ("b",)
    with pytest.raises(ConfigError, match="no tool named"):
        async with mcp_tools(stdio_server(tools=["nope"])):
            pass
    with pytest.raises(McpServerGone, match=r"could not be reached|did not start"):
        async with mcp_tools(
            McpServer(name="gone", command=[sys.executable, "-c", "pass"], connect_timeout_s=30)
        ):
            pass
    with pytest.raises(McpServerGone, match=r"could not be reached|did not start"):
        async with mcp_tools(
            McpServer(name="gone", url=f"http://127.0.0.1:{free_port()}/mcp", connect_timeout_s=30)
        ):
            pass


async def test_approval_and_env_are_carried_per_server() -> None:
    server = stdio_server(
        tools=["add", "shout", "env_var"], approval=["shout"], env={"MCP_TEST_VALUE": "v42"}
    )
    async with mcp_tools(server) as tools:
        assert [(t.name, t.approval) for t in tools] == [("add", False), ("shout", True), ("env_var", False)]
        assert (await tools.get("env_var").call({"name": "MCP_TEST_VALUE"})).content == "v42"  # type: ignore[union-attr]


async def test_headers_reach_an_http_server(http_url: str) -> None:
    server = McpServer(name="h", url=http_url, tools=["header"], headers={"X-Team": "search"})
    async with mcp_tools(server) as tools:
        assert (await tools.get("header").call({"name": "X-Team"})).content == "search"  # type: ignore[union-attr]


def test_only_text_reaches_the_model() -> None:
    from mcp_types import CallToolResult, ImageContent, TextContent

    from aiestack.agents.mcp import _result_text

    result = CallToolResult(
        content=[TextContent(text="a chart:"), ImageContent(data="AAAA", mime_type="image/png")],
        is_error=False,
    )
    assert _result_text(result) == ("a chart:\n[image omitted: only text reaches the model]", False)
    structured = CallToolResult(content=[], structured_content={"n": 1}, is_error=True)
    assert _result_text(structured) == ('{"n": 1}', True)
