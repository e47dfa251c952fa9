"""``model = "agent:NAME"`` with ``stream: true``: the answer as content deltas, the steps as extra fields."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from aiestack.build import build_stack
from aiestack.models.fake import FakeModel, Script
from aiestack.server.app import create_app

from .conftest import ADMIN, ADMIN_KEY, settings, stack_of

pytestmark = pytest.mark.unit
AGENTS = {
    "calc": {"tools": ["calculator"], "max_steps": 4},
    "json": {"tools": ["calculator"], "protocol": "text", "max_steps": 4},
}


@pytest.fixture
async def client(tmp_path: Path) -> Any:
    # The JSON-schema guard off: it checks a JSON reply whole before passing it on, so the text
    # protocol's tokens would come as one delta (docs/agents.md, "Streaming"). The injection
    # classifier off: loading it takes seconds, and it is not what these tests are about.
    guards = {"json_schema": "off", "injection": "off"}
    app = create_app(lambda: build_stack(settings(tmp_path, agents=AGENTS, guards=guards)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


def fake(app: FastAPI) -> FakeModel:
    provider = stack_of(app).models.resolve("fake").provider
    assert isinstance(provider, FakeModel)
    return provider


async def test_the_openai_client_reads_a_streamed_agent_answer_and_skips_the_steps(client: Any) -> None:
    http, app = client
    fake(app).enqueue([Script(tool_calls=[("c1", "calculator", '{"expression": "6 * 7"}')]), "It is 42, as computed."])
    sdk = openai.AsyncOpenAI(api_key=ADMIN_KEY, base_url="http://testserver/v1", http_client=http)
    stream = await sdk.chat.completions.create(
        model="agent:calc", messages=[{"role": "user", "content": "6 times 7?"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [c async for c in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "It is 42, as computed."
    steps = [c.model_extra["aiestack_step"] for c in chunks if c.model_extra and "aiestack_step" in c.model_extra]
    assert [s["type"] for s in steps] == [
        "run_started", "model_call", "tool_call", "tool_result", "model_call", "final_answer", "run_stopped",
    ]  # fmt: skip
    assert steps[3]["content"] == "[not stored: content tracing is off]"  # the steps as the store keeps them
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finished) == 1 and finished[0].model_extra is not None
    run = finished[0].model_extra["aiestack_run"]
    assert run["status"] == "finished" and len(run["steps"]) == len(steps)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id == "chatcmpl-" + run["run_id"].split("_", 1)[1]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == run["input_tokens"] + run["output_tokens"]
    stored = (await http.get(f"/v1/agents/calc/runs/{run['run_id']}", headers=ADMIN)).json()
    assert stored["status"] == "finished"


async def test_text_protocol_answers_stream_as_the_model_writes_them(client: Any) -> None:
    http, app = client
    answer = '{"answer": "The product \\u00e9 is 42."}'
    pieces = [answer[i : i + 5] for i in range(0, len(answer), 5)]
    fake(app).enqueue([['{"tool": "calculator", ', '"arguments": {"expression": "6 * 7"}}'], pieces])
    async with http.stream("POST", "/v1/chat/completions", headers=ADMIN, json={
        "model": "agent:json", "stream": True, "messages": [{"role": "user", "content": "6 times 7?"}],
    }) as response:  # fmt: skip
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    contents = [e["choices"][0]["delta"]["content"] for e in events if e["choices"][0]["delta"].get("content")]
    assert "".join(contents) == "The product é is 42."
    assert len(contents) > 1  # piece by piece, not the whole answer at the end
    kinds = [e.get("aiestack_step", {}).get("type") for e in events]
    assert kinds.index("final_answer") > max(i for i, e in enumerate(events) if e["choices"][0]["delta"].get("content"))


async def test_the_agent_sees_the_whole_conversation(client: Any) -> None:
    http, app = client
    fake(app).enqueue(["Paris, still."])
    body = {"model": "agent:calc", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And now?"},
    ]}  # fmt: skip
    for stream in (False, True):
        fake(app).enqueue(["Paris, still."])
        reply = await http.post("/v1/chat/completions", json={**body, "stream": stream}, headers=ADMIN)
        assert reply.status_code == 200, reply.text
        seen = [(m.role, m.text) for m in fake(app).requests[-1].messages if m.role != "system"]
        assert seen == [("user", "Capital of France?"), ("assistant", "Paris."), ("user", "And now?")]
        assert any(m.role == "system" and m.text == "Be brief." for m in fake(app).requests[-1].messages)
        if not stream:
            assert reply.json()["aiestack_run"]["task"] == "[not stored: content tracing is off]"


async def test_a_stream_without_a_user_message_or_of_an_unknown_agent_is_refused(client: Any) -> None:
    http, _ = client
    nothing = await http.post("/v1/chat/completions", headers=ADMIN, json={
        "model": "agent:calc", "stream": True, "messages": [{"role": "system", "content": "x"}]})  # fmt: skip
    assert nothing.status_code == 400 and "needs a task" in nothing.text
    unknown = await http.post("/v1/chat/completions", headers=ADMIN, json={
        "model": "agent:nope", "stream": True, "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
    assert unknown.status_code == 404


async def test_a_client_that_goes_away_cancels_the_streamed_run(client: Any) -> None:
    import functools

    from aiestack.agents.config import open_agent
    from aiestack.agents.runs import RunKeeper
    from aiestack.server.agent_stream import agent_sse

    _, app = client
    stack = stack_of(app)
    fake(app).enqueue([Script(pieces=["slow"] * 100, delay_s=0.1)])  # 10 s of answer
    keeper = RunKeeper(stack.store)  # type: ignore[arg-type]
    start = functools.partial(keeper.run, await open_agent(stack, "calc"), "talk", deltas=True)
    response = agent_sse(stack, stack.store, start, model="agent:calc", include_usage=False)  # type: ignore[arg-type]
    body = response.body_iterator
    first = await anext(body)  # the role chunk, sent when the run started
    assert b'"role":"assistant"' in first
    while not fake(app).requests:
        await asyncio.sleep(0.01)
    await body.aclose()  # type: ignore[attr-defined]  # what the server does when the client disconnects
    runs = stack.store.list_runs(agent="calc")  # type: ignore[attr-defined]
    assert len(runs) == 1 and runs[0].status == "stopped" and runs[0].stop_reason == "cancelled"
    assert [s["type"] for s in stack.store.run_steps(runs[0].run_id)] == ["run_started", "run_stopped"]  # type: ignore[attr-defined]
