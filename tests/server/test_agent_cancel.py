"""``POST /v1/agents/NAME/runs/RUN_ID/cancel`` on a running run (the waiting case: test_agent_runs_api)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiestack.build import build_stack
from aiestack.models.fake import FakeModel, Script
from aiestack.server.app import create_app

from .conftest import settings, stack_of

pytestmark = pytest.mark.unit


@pytest.fixture
async def client(tmp_path: Path) -> Any:
    agents = {"talker": {"tools": ["calculator"]}}
    app = create_app(lambda: build_stack(settings(tmp_path, agents=agents, guards={"injection": "off"})))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, app


async def test_a_running_run_is_cancelled_over_http_and_stored_whole(client: Any) -> None:
    http, app = client
    fake = stack_of(app).models.resolve("fake").provider
    assert isinstance(fake, FakeModel)
    fake.enqueue([Script(tool_calls=[("c1", "calculator", '{"expression": "1 + 1"}')]),
                  Script(pieces=["slow"] * 100, delay_s=0.1)])  # fmt: skip
    _, acme = stack_of(app).keys.create(tenant="acme")
    _, globex = stack_of(app).keys.create(tenant="globex")
    as_acme, as_globex = {"authorization": f"Bearer {acme}"}, {"authorization": f"Bearer {globex}"}
    started = asyncio.ensure_future(http.post("/v1/agents/talker/runs", json={"task": "count"}, headers=as_acme))
    while len(fake.requests) < 2:  # the second model call is in flight (10 s)
        await asyncio.sleep(0.01)
    running = (await http.get("/v1/agents/talker/runs?status=running", headers=as_acme)).json()["data"]
    assert len(running) == 1 and running[0]["status"] == "running"
    path = f"/v1/agents/talker/runs/{running[0]['run_id']}"
    assert (await http.post(f"{path}/cancel", headers=as_globex)).status_code == 404  # another tenant's run
    cancelled = await http.post(f"{path}/cancel", json={"reason": "too slow"}, headers=as_acme)
    assert cancelled.status_code == 200, cancelled.text
    run = cancelled.json()
    assert run["status"] == "stopped" and run["stop_reason"] == "cancelled" and run["detail"] == "too slow"
    assert [s["type"] for s in run["steps"]] == ["run_started", "model_call", "tool_call", "tool_result", "run_stopped"]
    assert run["steps"][-1]["input_tokens"] == run["input_tokens"] > 0
    first = await asyncio.wait_for(started, 5)
    assert first.status_code == 200 and first.json()["stop_reason"] == "cancelled"
    again = await http.post(f"{path}/cancel", headers=as_acme)
    assert again.status_code == 409 and "only a running or waiting run can be cancelled" in again.text
    bad = await http.post(f"{path}/cancel", json={"wait_s": 100}, headers=as_acme)
    assert bad.status_code == 400
