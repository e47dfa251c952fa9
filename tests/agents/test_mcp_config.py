"""MCP servers named in ``[agents.NAME.mcp.SERVER]``: checked at build time, connected on first use, closed with the stack.

The servers are the real MCP server of tests/agents/mcp_server.py, over stdio and streamable HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mcp", reason="the MCP tests need the agents extra: pip install -e '.[agents]'")

from aiestack.agents.config import agent_specs, make_agent, open_agent
from aiestack.agents.mcp_agents import McpUnavailable
from aiestack.agents.runs import RunKeeper
from aiestack.errors import ConfigError
from aiestack.models.fake import Script
from aiestack.testing.net import free_port

from .conftest import make_stack
from .test_mcp_client import wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
SERVER = Path(__file__).with_name("mcp_server.py")
STDIO = {"command": sys.executable, "args": [str(SERVER)], "tools": ["add", "env_var", "die"], "prefix": "t_",
         "env": {"AIESTACK_MCP_TEST": "from the table"}}  # fmt: skip


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def call(name: str, args: dict[str, Any], cid: str = "c1") -> Script:
    return Script(tool_calls=[(cid, name, json.dumps(args))])


@pytest.mark.parametrize(
    ("table", "key", "says"),
    [
        ({"url": "http://x/mcp", "command": ["python"]}, "agents.a.mcp.s", "exactly one of command"),
        ({"tools": ["add"]}, "agents.a.mcp.s", "exactly one of command"),
        ({"url": "ftp://x"}, "agents.a.mcp.s.url", "not an http(s) URL"),
        ({"command": "python server.py"}, "agents.a.mcp.s.command", "is not on PATH"),
        ({"command": []}, "agents.a.mcp.s.command", ""),
        ({"url": "http://x/mcp", "args": ["-v"]}, "agents.a.mcp.s.args", "go with a stdio server"),
        ({"command": ["no-such-mcp-server-x"]}, "agents.a.mcp.s.command", "is not on PATH"),
        ({"command": ["./missing/server"]}, "agents.a.mcp.s.command", "not an executable file"),
        ({"url": "http://x/mcp", "timeout_s": 0}, "agents.a.mcp.s.timeout_s", ""),
        ({"url": "http://x/mcp", "colour": "red"}, "agents.a.mcp.s.colour", ""),
        ({"url": "http://x/mcp", "tools": ["add"], "approval": ["send"]}, "agents.a.mcp.s.approval", "not among"),
        ({"url": "http://x/mcp", "tools": ["calculator"]}, "agents.a.mcp.s.tools", "taken by a built-in tool"),
        ({"url": "http://x/mcp", "headers": {"X-N": 3}}, "agents.a.mcp.s.headers", ""),
        ("not a table", "agents.a.mcp.s", "is not a table"),
    ],
)
def test_bad_mcp_tables_are_refused_at_build_time_naming_the_key(table: Any, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        agent_specs({"a": {"tools": ["calculator"], "mcp": {"s": table}}})
    assert caught.value.key.startswith(key) and says in str(caught.value)


async def test_an_agents_stdio_server_is_started_lazily_shared_and_closed(tmp_path: Path) -> None:
    stack, model, _ = make_stack(tmp_path, guards={"injection": "off"}, agents={"helper": {"tools": ["calculator"], "mcp": {"t": STDIO}}})
    try:
        assert stack.mcp is None  # nothing started at build time
        with pytest.raises(ConfigError, match="open_agent"):
            make_agent(stack, "helper")
        agent = await open_agent(stack, "helper")
        assert [t.name for t in agent.toolset] == ["calculator", "t_add", "t_env_var", "t_die"]
        model.enqueue([call("t_add", {"a": 2, "b": 3}), call("t_env_var", {"name": "AIESTACK_MCP_TEST"}, "c2"), "done"])
        result = await RunKeeper(stack.store, content=True).run(agent, "add")  # type: ignore[arg-type]
        assert [r.content for r in result.tool_results] == ["5", "from the table"] and result.answer == "done"
        again = await open_agent(stack, "helper")  # the next run: the same connection, the same tools
        assert [id(t) for t in again.toolset][1:] == [id(t) for t in agent.toolset][1:]
        model.enqueue([call("t_die", {}), "the server died"])  # the server exits mid-call
        died = await again.run("die")
        error = died.tool_results[0].error
        assert error is not None and ("gone" in error or "Connection closed" in error)
        revived = await open_agent(stack, "helper")  # a dead server is started again on the next use
        model.enqueue([call("t_add", {"a": 1, "b": 1}), "2"])
        assert (await revived.run("1+1")).tool_results[0].content == "2"
    finally:
        await stack.aclose()
    assert stack.mcp is not None and not stack.mcp._open  # every connection closed
    with pytest.raises(McpUnavailable, match="closed"):
        await open_agent(stack, "helper")


async def test_an_http_server_gets_the_tables_headers(tmp_path: Path, http_url: str) -> None:
    table = {"url": http_url, "headers": {"X-Team": "blue"}, "tools": ["header"], "approval": True}
    stack, _, _ = make_stack(tmp_path, guards={"injection": "off"}, agents={"h": {"mcp": {"remote": table}}})
    try:
        agent = await open_agent(stack, "h")
        tool = agent.toolset.get("header")
        assert tool is not None and tool.approval  # approval = true: every tool of the server
        outcome = await tool.call('{"name": "X-Team"}')
        assert outcome.content == "blue" and outcome.error is None
    finally:
        await stack.aclose()


async def test_a_server_that_cannot_start_or_lacks_a_tool_is_a_clear_error(tmp_path: Path) -> None:
    agents = {
        "broken": {"mcp": {"s": {"command": [sys.executable, "-c", "pass"], "connect_timeout_s": 10}}},
        "missing": {"mcp": {"s": {"command": [sys.executable, str(SERVER)], "tools": ["nope"]}}},
    }
    stack, _, _ = make_stack(tmp_path, agents=agents)
    try:
        with pytest.raises(McpUnavailable, match="Agent 'broken'") as broken:
            await open_agent(stack, "broken")
        assert broken.value.http_status == 502 and "[agents.broken.mcp.s]" in str(broken.value)
        with pytest.raises(McpUnavailable, match=r"no tool named \['nope'\]"):
            await open_agent(stack, "missing")
    finally:
        await stack.aclose()


async def test_the_http_api_runs_an_agent_with_mcp_tools(tmp_path: Path) -> None:
    from aiestack.build import build_stack
    from aiestack.models.fake import FakeModel
    from aiestack.server.app import create_app

    from ..server.conftest import ADMIN, settings, stack_of

    agents = {"calc": {"mcp": {"t": {"command": [sys.executable, str(SERVER)], "tools": ["add"]}}}}
    app = create_app(lambda: build_stack(settings(tmp_path, agents=agents, guards={"injection": "off"})))
    async with app.router.lifespan_context(app):
        fake = stack_of(app).models.resolve("fake").provider
        assert isinstance(fake, FakeModel)
        fake.enqueue([call("add", {"a": 20, "b": 22}), "42"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            ran = await http.post("/v1/agents/calc/runs", json={"task": "20+22"}, headers=ADMIN)
        assert ran.status_code == 200, ran.text
        assert [s.get("content") for s in ran.json()["steps"] if s["type"] == "tool_result"] == ["[not stored: content tracing is off]"]
        assert ran.json()["status"] == "finished" and stack_of(app).mcp._open  # connected, kept for the next run
    assert not stack_of(app).mcp._open  # the app's shutdown closed it


async def test_an_eval_suites_agent_system_gets_its_mcp_tools(tmp_path: Path) -> None:
    from aiestack.evals.agent_systems import stack_agents
    from aiestack.evals.datasets import load_examples
    from aiestack.evals.runner import EvalRunner
    from aiestack.evals.suite import parse_suite

    (tmp_path / "sums.jsonl").write_text(
        "\n".join(json.dumps({"id": str(i), "question": f"{i} plus {i}?", "answer": 2 * i}) for i in (1, 2)), encoding="utf-8"
    )
    agent = {"tools": [], "mcp": {"t": {"command": [sys.executable, str(SERVER)], "tools": ["add"]}}, "max_steps": 3}
    suite = parse_suite({
        "name": "mcp-sums", "dataset": {"path": "sums.jsonl", "id": "id", "input": "question", "reference": "answer"},
        "prompt": "{{ input }}", "systems": [{"name": "adder", "model": "m", "agent": agent}],
        "metrics": [{"name": "task_success"}], "concurrency": 2,
    }, base_dir=tmp_path)  # fmt: skip
    stack, model, _ = make_stack(tmp_path / "s", guards={"injection": "off"})
    try:
        for i in (1, 2):  # the two examples run at once: each gets a tool call, then answers with its result
            model.enqueue([call("add", {"a": i, "b": i}, f"c{i}")])
        model.enqueue(["The answer is 2.", "The answer is 4."])

        runner = EvalRunner(stack.chat, stack.store, agents=stack_agents(stack), run_agent=RunKeeper(stack.store).run)  # type: ignore[arg-type]
        result = await runner.run(suite, load_examples(suite.dataset, suite.dataset_path))
        assert all(r.error is None for r in result.results), [r.error for r in result.results]
        tool_results = [m.text for r in model.requests for m in r.messages if m.role == "tool"]
        assert sorted(set(tool_results)) == ["2", "4"]  # the MCP server added
        assert len(stack.mcp._open) == 1  # one connection for the system, however many examples
    finally:
        await stack.aclose()
