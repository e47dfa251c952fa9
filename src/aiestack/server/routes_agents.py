"""``/v1/agents/NAME/runs``: start, list, inspect, approve, deny and cancel runs of ``[agents.NAME]``.

Every endpoint takes a virtual key like the others; a key sees and decides only its own tenant's
runs (the admin key: all), and the model calls of a run are made on the caller's key (its budget
and limits apply). A run of another tenant is a 404, like one that does not exist. Runs are stored
under the content-tracing rules (docs/agents.md, "Stored runs").
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from aiestack.agents.config import open_agent
from aiestack.agents.events import RunResult, RunStopped
from aiestack.agents.loop import Agent
from aiestack.agents.runs import RunKeeper, RunNotWaiting
from aiestack.build import Stack
from aiestack.errors import AiestackError, InvalidRequest, NotFound
from aiestack.gateway.keys import Principal
from aiestack.server.auth import principal
from aiestack.server.bodies import body_openapi, parse_body
from aiestack.server.responses import JSONBytesResponse
from aiestack.stores.runs import RunRecord, RunStore
from aiestack.types import last_user_index

router = APIRouter(prefix="/v1/agents", tags=["agents"])


class RunRequest(BaseModel):
    """The body of ``POST /v1/agents/NAME/runs``."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200_000, description="What the agent should do.")


class DenyRequest(BaseModel):
    """The body of ``POST .../deny`` (optional): the reason the model sees."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=10_000)


class CancelRequest(BaseModel):
    """The body of ``POST .../cancel`` (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=10_000, description="Why: the run's stop detail.")
    wait_s: float = Field(default=10.0, ge=0, le=60, description="How long to wait for a running run to stop.")


def _keeper(stack: Stack) -> tuple[RunKeeper, RunStore]:
    store = stack.store
    if not isinstance(store, RunStore):
        raise AiestackError(
            f"The store {type(store).__name__} cannot hold agent runs.",
            hint="Use the SQLite, PostgreSQL or memory store, or implement aiestack.stores.runs.RunStore in your store plugin.",
        )
    return RunKeeper(store, content=stack.tracing.content, redact=stack.tracing.redact), store


async def _agent(stack: Stack, name: str) -> Agent:
    try:
        return await open_agent(stack, name)
    except KeyError as exc:
        raise NotFound(str(exc.args[0]), hint="Add an [agents.NAME] table to aiestack.toml.") from None


def _tenant(who: Principal) -> str | None:
    return None if who.is_admin else who.tenant


def run_json(record: RunRecord, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A stored run as the API shows it: the record, the calls waiting for approval, the steps."""
    body = dataclasses.asdict(record)
    pending = body.pop("pending")
    body["waiting_calls"] = []
    if pending is not None:
        approval = pending["approval"]
        body["waiting_calls"] = [c for c in approval["calls"] if c["id"] in approval["needs_approval"]]
    if steps is not None:
        body["steps"] = steps
    return body


async def _run_of(store: RunStore, name: str, run_id: str, who: Principal) -> RunRecord:
    record = await asyncio.to_thread(store.get_run, run_id, tenant=_tenant(who))
    if record is None or record.agent != name:
        raise NotFound(f"There is no run '{run_id}' of agent '{name}' that this key can see.", hint="GET /v1/agents/NAME/runs lists them.")
    return record


async def _show(store: RunStore, run_id: str, result: RunResult | None = None) -> Response:
    """The stored run; with ``result``, the run this request just made go on, whose ``answer`` is the
    answer itself: the caller gets it, as a chat completion's caller does, while the store keeps it
    under the content-tracing rules."""
    record = await asyncio.to_thread(store.get_run, run_id)
    steps = await asyncio.to_thread(store.run_steps, run_id)
    assert record is not None
    body = run_json(record, steps)
    if result is not None and result.run_id == run_id:
        body["answer"] = result.answer
    # 202: asked to stop, and the process running it has not stopped it yet
    return JSONBytesResponse(body, status_code=202 if record.status == "cancelling" else 200)


@router.post("/{name}/runs", response_model=None, openapi_extra=body_openapi(RunRequest))
async def start_run(name: str, request: Request) -> Response:
    """Run the agent on a task to its next stop (finished, stopped, failed, or waiting for approval)."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    body = parse_body(RunRequest, await request.body())
    keeper, store = _keeper(stack)
    agent = await _agent(stack, name)
    result = await keeper.run(agent, body.task, tenant=who.tenant, key_id=who.key_id)
    return await _show(store, result.run_id, result)


@router.get("/{name}/runs", response_model=None)
async def list_runs(name: str, request: Request, status: str | None = None, limit: int = 50, offset: int = 0) -> Response:
    """The agent's runs of the caller's tenant, newest first (``status``, ``limit``, ``offset``)."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    _, store = _keeper(stack)
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidRequest("limit must be 1 to 1000 and offset 0 or more.", hint="Page with ?limit=50&offset=50.")
    records = await asyncio.to_thread(store.list_runs, tenant=_tenant(who), agent=name, status=status, limit=limit, offset=offset)
    return JSONBytesResponse({"object": "list", "data": [run_json(r) for r in records]})


@router.get("/{name}/runs/{run_id}", response_model=None)
async def get_run(name: str, run_id: str, request: Request) -> Response:
    """One run with its steps and, when it waits, the calls waiting for approval."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    _, store = _keeper(stack)
    record = await _run_of(store, name, run_id, who)
    return await _show(store, record.run_id)


async def _decide(name: str, run_id: str, request: Request, *, approve: bool) -> Response:
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    reason = ""
    if not approve:
        raw = await request.body()
        reason = parse_body(DenyRequest, raw).reason if raw.strip() else ""
    keeper, store = _keeper(stack)
    await _run_of(store, name, run_id, who)
    try:
        result = await keeper.decide(await _agent(stack, name), run_id, approve=approve, reason=reason, tenant=_tenant(who))
    except RunNotWaiting as exc:
        raise _conflict(str(exc.args[0])) from None
    return await _show(store, run_id, result)


class RunConflict(InvalidRequest):
    """The run is not waiting for approval (any more)."""

    http_status = 409
    code = "run_not_waiting"


def _conflict(message: str, hint: str = "Only a run with status 'waiting' can be approved or denied.") -> AiestackError:
    return RunConflict(message, hint=hint)


@router.post("/{name}/runs/{run_id}/approve", response_model=None)
async def approve_run(name: str, run_id: str, request: Request) -> Response:
    """Approve the calls a waiting run asked for; the run goes on to its next stop."""
    return await _decide(name, run_id, request, approve=True)


@router.post("/{name}/runs/{run_id}/deny", response_model=None, openapi_extra=body_openapi(DenyRequest))
async def deny_run(name: str, run_id: str, request: Request) -> Response:
    """Deny them (``{"reason": ...}``, which the model sees); the run goes on to its next stop."""
    return await _decide(name, run_id, request, approve=False)


@router.post("/{name}/runs/{run_id}/cancel", response_model=None, openapi_extra=body_openapi(CancelRequest))
async def cancel_run(name: str, run_id: str, request: Request) -> Response:
    """Stop a waiting or running run for good (status ``stopped``, reason ``cancelled``).

    A running run (in this server process or another one sharing the store) stops at once: its
    model call or tool in flight is cancelled, and it is stored with every step it made. The answer
    waits up to ``wait_s`` for that; 202 with status ``cancelling`` when it has not happened yet."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    raw = await request.body()
    body = parse_body(CancelRequest, raw) if raw.strip() else CancelRequest()
    keeper, store = _keeper(stack)
    await _run_of(store, name, run_id, who)
    try:
        await keeper.cancel(run_id, tenant=_tenant(who), reason=body.reason or "cancelled by a person", wait_s=body.wait_s)
    except RunNotWaiting as exc:
        raise _conflict(str(exc.args[0]), "Only a running or waiting run can be cancelled.") from None
    return await _show(store, run_id)


#: ``model = "agent:NAME"`` on /v1/chat/completions runs ``[agents.NAME]``.
AGENT_MODEL_PREFIX = "agent:"


async def chat_as_agent(stack: Stack, request: Request, body: Any) -> Response:
    """``/v1/chat/completions`` with ``model = "agent:NAME"``: the last user message is the task and
    the turns before it the conversation the agent sees; the final answer is the message, and the
    stored run (``aiestack_run``: status, steps) rides along as an extra field that OpenAI clients
    ignore. ``stream: true`` streams it (:func:`_agent_stream`)."""
    from aiestack.server import translate

    who = await principal(stack, request)
    name = body.model[len(AGENT_MODEL_PREFIX) :]
    messages = translate.chat_request(body).messages
    index = last_user_index(messages)
    if index is None or not messages[index].text.strip():
        raise InvalidRequest("an agent needs a task: the request has no user message with text.", hint="Send the task as the last user message.")
    task, history = messages[index].text, messages[:index]
    keeper, store = _keeper(stack)
    agent = await _agent(stack, name)
    if body.stream:
        from aiestack.server.agent_stream import agent_sse

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        start = functools.partial(keeper.run, agent, task, tenant=who.tenant, key_id=who.key_id, history=history, deltas=True)
        return agent_sse(stack, store, start, model=body.model, include_usage=include_usage)
    result = await keeper.run(agent, task, tenant=who.tenant, key_id=who.key_id, history=history)
    record = await asyncio.to_thread(store.get_run, result.run_id)
    steps = await asyncio.to_thread(store.run_steps, result.run_id)
    assert record is not None
    stopped = result.stopped
    return JSONBytesResponse({
        "id": "chatcmpl-" + result.run_id.removeprefix("run_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _content(result)}, "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(stopped),
        "aiestack_run": run_json(record, steps),
    })  # fmt: skip


def _content(result: RunResult) -> str:
    """The message an agent's run answers with: its answer, or why there is none."""
    return result.answer if result.answer is not None else f"[the agent run is {result.status}: {result.detail}]"


def _usage(stopped: RunStopped) -> dict[str, int]:
    total = stopped.input_tokens + stopped.output_tokens
    return {"prompt_tokens": stopped.input_tokens, "completion_tokens": stopped.output_tokens, "total_tokens": total}
