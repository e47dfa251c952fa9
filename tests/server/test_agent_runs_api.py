"""/v1/agents/NAME/runs: start, inspect, approve, deny, cancel; tenant-scoped."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aiestack.build import build_stack
from aiestack.models.fake import FakeModel, Script
from aiestack.server.app import create_app

from .conftest import ADMIN, settings, stack_of

pytestmark = pytest.mark.unit
AGENTS = {"calc": {"tools": ["calculator"], "approval": ["calculator"], "max_steps": 4}}


@pytest.fixture
async def client(tmp_path: Path) -> object:
    app = create_app(lambda: build_stack(settings(tmp_path, agents=AGENTS)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


def fake(app: FastAPI) -> FakeModel:
    provider = stack_of(app).models.resolve("fake").provider
    assert isinstance(provider, FakeModel)
    return provider


async def test_a_run_waits_and_is_approved_once_on_its_tenants_key(client: tuple[httpx.AsyncClient, FastAPI]) -> None:
    http, app = client
    _, acme = stack_of(app).keys.create(tenant="acme")
    _, globex = stack_of(app).keys.create(tenant="globex")
    as_acme, as_globex = {"authorization": f"Bearer {acme}"}, {"authorization": f"Bearer {globex}"}
    fake(app).enqueue([Script(tool_calls=[("c1", "calculator", '{"expression": "6 * 7"}')]), "It is 42."])
    started = await http.post("/v1/agents/calc/runs", json={"task": "what is 6 times 7"}, headers=as_acme)
    assert started.status_code == 200, started.text
    run = started.json()
    assert run["status"] == "waiting" and run["tenant"] == "acme"
    assert run["waiting_calls"] == [{"id": "c1", "name": "calculator", "arguments": '{"expression": "6 * 7"}'}]
    assert "pending" not in run and [s["type"] for s in run["steps"]][-2:] == ["approval_requested", "run_stopped"]
    path = f"/v1/agents/calc/runs/{run['run_id']}"
    assert (await http.get(path, headers=as_globex)).status_code == 404  # another tenant's run
    assert (await http.post(f"{path}/approve", headers=as_globex)).status_code == 404
    assert (await http.post(f"{path}/approve")).status_code == 401  # no key
    listed = (await http.get("/v1/agents/calc/runs", headers=as_globex)).json()["data"]
    assert listed == []
    approved = await http.post(f"{path}/approve", headers=as_acme)
    assert approved.status_code == 200, approved.text
    done = approved.json()
    # the caller gets the answer; the store keeps it under the content-tracing rules (off by default)
    assert done["status"] == "finished" and done["answer"] == "It is 42."
    stored = (await http.get(path, headers=as_acme)).json()
    assert stored["answer"] == "[not stored: content tracing is off]" and stored["steps"] == done["steps"]
    assert done["waiting_calls"] == [] and sum(s["type"] == "tool_result" for s in done["steps"]) == 1
    again = await http.post(f"{path}/approve", headers=as_acme)
    assert again.status_code == 409 and "not waiting for approval" in again.text
    assert [r["run_id"] for r in (await http.get("/v1/agents/calc/runs", headers=ADMIN)).json()["data"]] == [run["run_id"]]


async def test_deny_tells_the_model_and_cancel_stops(client: tuple[httpx.AsyncClient, FastAPI]) -> None:
    http, app = client
    model = fake(app)
    model.enqueue([Script(tool_calls=[("c1", "calculator", '{"expression": "1 + 1"}')]), "Fine, I will not."])
    run = (await http.post("/v1/agents/calc/runs", json={"task": "add"}, headers=ADMIN)).json()
    denied = await http.post(f"/v1/agents/calc/runs/{run['run_id']}/deny", json={"reason": "no maths today"}, headers=ADMIN)
    assert denied.status_code == 200 and denied.json()["status"] == "finished"
    assert denied.json()["answer"] == "Fine, I will not."
    tool_messages = [m.text for m in model.requests[-1].messages if m.role == "tool"]
    assert tool_messages == ["A person denied this call: no maths today"]
    model.enqueue([Script(tool_calls=[("c2", "calculator", '{"expression": "2 + 2"}')])])
    other = (await http.post("/v1/agents/calc/runs", json={"task": "add"}, headers=ADMIN)).json()
    cancelled = await http.post(f"/v1/agents/calc/runs/{other['run_id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["stop_reason"] == "cancelled"
    model.enqueue(["No tool needed: 4."])  # a run that needs no approval answers at once
    direct = (await http.post("/v1/agents/calc/runs", json={"task": "2 + 2?"}, headers=ADMIN)).json()
    assert direct["status"] == "finished" and direct["answer"] == "No tool needed: 4."
    assert (await http.post("/v1/agents/nope/runs", json={"task": "x"}, headers=ADMIN)).status_code == 404
    assert (await http.post("/v1/agents/calc/runs", json={"task": ""}, headers=ADMIN)).status_code == 400


async def test_an_agent_answers_like_a_model_on_chat_completions(client: tuple[httpx.AsyncClient, FastAPI]) -> None:
    http, app = client
    fake(app).enqueue(["Forty-two."])
    body = {"model": "agent:calc", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "6 * 7?"}]}
    answered = await http.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert answered.status_code == 200, answered.text
    data = answered.json()
    assert data["object"] == "chat.completion" and data["model"] == "agent:calc"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Forty-two."}
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] > 0
    run = data["aiestack_run"]
    assert run["status"] == "finished" and run["steps"][0]["type"] == "run_started"
    assert fake(app).requests[-1].messages[-1].text == "6 * 7?"
    unknown = await http.post("/v1/chat/completions", json={**body, "model": "agent:nope"}, headers=ADMIN)
    assert unknown.status_code == 404 and "no agent 'nope'" in unknown.text


async def test_openai_clients_read_the_agents_answer(client: tuple[httpx.AsyncClient, FastAPI]) -> None:
    import openai

    http, app = client
    fake(app).enqueue(["Done."])
    sdk = openai.AsyncOpenAI(api_key="admin-secret", base_url="http://testserver/v1", http_client=http)
    reply = await sdk.chat.completions.create(model="agent:calc", messages=[{"role": "user", "content": "go"}])
    assert reply.choices[0].message.content == "Done." and reply.model == "agent:calc"


async def test_an_agents_patterns_from_its_table_run_over_http_and_its_memory_stays_with_the_tenant(tmp_path: Path) -> None:
    import json

    from aiestack.testing.embeddings import BagOfWordsEmbeddings

    agents = {"keeper": {"planning": True, "long_term_memory": {"collection": "notes"}, "max_steps": 5}}
    app = create_app(lambda: build_stack(settings(tmp_path, agents=agents)))
    async with app.router.lifespan_context(app):
        stack = stack_of(app)
        stack.resources.use(embeddings=BagOfWordsEmbeddings())
        _, acme = stack.keys.create(tenant="acme")
        _, globex = stack.keys.create(tenant="globex")
        plan = json.dumps({"steps": [{"description": "Remember the fact", "tool": "remember"}]})
        fake(app).enqueue([plan, Script(tool_calls=[("c1", "remember", '{"fact": "the office wifi is Kestrel"}')]), "Noted.",
                           json.dumps({"steps": [{"description": "Answer", "tool": None}]}), "I do not know."])  # fmt: skip
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            first = await http.post("/v1/agents/keeper/runs", json={"task": "Remember: the office wifi is Kestrel."},
                                    headers={"authorization": f"Bearer {acme}"})  # fmt: skip
            assert first.status_code == 200, first.text
            kinds = [s["type"] for s in first.json()["steps"]]
            assert kinds[:3] == ["run_started", "memory_recall", "plan"] and "tool_result" in kinds
            other = await http.post("/v1/agents/keeper/runs", json={"task": "What is the office wifi?"},
                                    headers={"authorization": f"Bearer {globex}"})  # fmt: skip
            assert other.status_code == 200, other.text
            recalled = next(s for s in other.json()["steps"] if s["type"] == "memory_recall")
            assert recalled["facts"] == []  # acme's fact is not globex's
        memory = stack.documents.get_collection("notes--acme")
        assert memory is not None and memory.tenant == "acme" and memory.chunks == 1
        assert stack.documents.get_collection("notes--globex") is None
