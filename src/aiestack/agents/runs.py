"""Stored agent runs: a :class:`RunResult` as a :class:`~aiestack.stores.runs.RunRecord` and its steps.

What is stored follows the content-tracing rules of ``docs/security.md``:

- Always: who ran which agent on which model, the status and stop reason, the step count, tokens,
  cost and timings of every step, tool names, call ids, whether a call failed or was cut short.
- Content (the task, the model's text, tool arguments and results, error texts, the answer and the
  citations' text): with content tracing off, each non-empty text is replaced by
  :data:`NOT_STORED`; with it on, masked by the trace redactor (``<EMAIL>``, ``<OPENAI_KEY>``).
- A ``waiting`` run also stores ``pending``: what it resumes from (its conversation and the calls
  that wait), unmasked, because the approved calls must run with the arguments the model gave.
  It is removed when the run is claimed to resume, and never listed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiestack.agents.events import (
    ApprovalRequested,
    RunResult,
    RunStarted,
    RunStopped,
    StreamEvent,
    event_to_dict,
    message_to_dict,
)
from aiestack.agents.loop import Agent
from aiestack.agents.supervise import supervise
from aiestack.stores.runs import RunRecord, RunStore
from aiestack.types import Message, new_id

#: What a stored text says when content tracing is off.
NOT_STORED = "[not stored: content tracing is off]"

Redact = Callable[[str], str]

#: The content fields of each event type (texts; ``tool_calls``/``calls`` carry arguments).
_CONTENT: Mapping[str, tuple[str, ...]] = {
    "run_started": ("task",),
    "model_call": ("text", "error"),
    "tool_call": ("arguments",),
    "tool_result": ("content", "error"),
    "final_answer": ("text",),
    "run_stopped": (),
    "approval_requested": (),
    "approval_decided": ("reason",),
    "plan": ("reason", "error"),
    "reflection": ("feedback", "error"),
    "memory_summary": ("summary", "error"),
    "memory_recall": ("query", "error"),
    "model_delta": ("text",),
    "answer_delta": ("text",),
}
#: Lists of texts or of objects with texts, by event type: each text passes through the policy too.
_CONTENT_LISTS: Mapping[str, tuple[str, ...]] = {"plan": ("steps",), "memory_recall": ("facts",)}


def content_policy(content: bool, redact: Redact | None) -> Redact:
    """The function applied to every stored text: masking (content on) or :data:`NOT_STORED`."""
    if not content:
        return lambda text: NOT_STORED if text else text
    return redact if redact is not None else (lambda text: text)


def stored_step(event: Mapping[str, Any], text: Redact) -> dict[str, Any]:
    """One event's JSON with its content passed through ``text``."""
    out = dict(event)
    for name in _CONTENT.get(str(out.get("type")), ()):
        if isinstance(out.get(name), str):
            out[name] = text(out[name])
    for name in _CONTENT_LISTS.get(str(out.get("type")), ()):
        out[name] = [_texts(item, text) for item in out.get(name) or ()]
    for name in ("tool_calls", "calls"):
        if name in out:
            out[name] = [{**c, "arguments": text(str(c.get("arguments", "")))} for c in out[name]]
    if "citations" in out:
        out["citations"] = [_citation(c, text) for c in out["citations"]]
    return out


def _texts(item: Any, text: Redact) -> Any:
    if isinstance(item, str):
        return text(item)
    if isinstance(item, Mapping):
        return {k: (text(v) if k == "description" and isinstance(v, str) else v) for k, v in item.items()}
    return item


def _citation(citation: Mapping[str, Any], text: Redact) -> dict[str, Any]:
    return {k: (text(v) if k in ("text", "title") and isinstance(v, str) else v) for k, v in citation.items()}


def run_record(
    result: RunResult,
    *,
    agent: str,
    model: str,
    tenant: str,
    created_at: float,
    updated_at: float,
    key_id: str | None = None,
    content: bool = False,
    redact: Redact | None = None,
    previous: RunRecord | None = None,
) -> tuple[RunRecord, list[dict[str, Any]]]:
    """The record and the steps to append for ``result`` (``previous``: the stored run it resumed)."""
    text = content_policy(content, redact)
    stopped = result.stopped
    task = next((e.task for e in result.events if isinstance(e, RunStarted)), "")
    pending: dict[str, Any] | None = None
    if result.status == "waiting":
        asked = next(e for e in reversed(result.events) if isinstance(e, ApprovalRequested))
        pending = {
            "messages": [message_to_dict(m) for m in result.messages],
            "approval": event_to_dict(asked),
            "steps": stopped.steps,
            "input_tokens": stopped.input_tokens,
            "output_tokens": stopped.output_tokens,
            "cost_usd": stopped.cost_usd,
        }
    record = RunRecord(
        run_id=result.run_id,
        tenant=tenant,
        agent=agent,
        model=model,
        status=result.status,
        created_at=previous.created_at if previous is not None else created_at,
        updated_at=updated_at,
        stop_reason=result.stop_reason,
        key_id=key_id,
        task=previous.task if previous is not None else text(task),
        answer=None if result.answer is None else text(result.answer),
        detail=stopped.detail,
        steps=stopped.steps,
        input_tokens=stopped.input_tokens,
        output_tokens=stopped.output_tokens,
        cost_usd=stopped.cost_usd,
        pending=pending,
    )
    return record, [stored_step(event_to_dict(e), text) for e in result.events]


class RunNotWaiting(LookupError):
    """The run does not exist for this tenant, or is not waiting for approval (any more)."""


class RunNotActive(RunNotWaiting):
    """The run does not exist for this tenant, or has ended: there is nothing to cancel."""


class RunKeeper:
    """Runs agents and keeps their runs in a :class:`~aiestack.stores.runs.RunStore`.

    ``content``/``redact``: the stack's content tracing and trace redactor (what is stored of the
    runs' texts). ``poll_s``: how often a running run's stored status is read, to see whether someone
    asked it to stop (:meth:`cancel`, from any process); ``heartbeat_s``: how often its ``updated_at``
    is touched meanwhile; ``stale_s``: how old that heartbeat must be for :meth:`cancel` to stop a
    run itself (the process running it is gone). A run is stored as ``running`` when it starts and again when it stops; approving
    or denying a waiting run claims it in the store first, so a call is never run twice, also when
    two people approve at once or the process restarted in between (the run is read back from the
    store).
    """

    def __init__(
        self,
        store: RunStore,
        *,
        content: bool = False,
        redact: Redact | None = None,
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.5,
        heartbeat_s: float = 5.0,
        stale_s: float = 60.0,
    ) -> None:
        if min(poll_s, heartbeat_s) <= 0 or stale_s <= heartbeat_s:
            raise ValueError(f"poll_s and heartbeat_s must be positive and stale_s above heartbeat_s, got {poll_s}, {heartbeat_s}, {stale_s}")
        self._store = store
        self._content = content
        self._redact = redact
        self._clock = clock
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._stale_s = stale_s

    async def run(
        self,
        agent: Agent,
        task: str,
        *,
        tenant: str = "default",
        key_id: str | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        history: Sequence[Message] = (),
        deltas: bool = False,
    ) -> RunResult:
        """Run ``agent`` on ``task`` and store the run (the run id is stored before the first step).

        ``history``, ``deltas`` and ``on_event`` are :meth:`Agent.run`'s (deltas go to ``on_event``
        only: they are never stored)."""
        run_id = new_id("run")
        started = self._clock()
        text = content_policy(self._content, self._redact)
        first = RunRecord(
            run_id=run_id, tenant=tenant, agent=agent.name, model=agent.model, status="running",
            created_at=started, updated_at=started, key_id=key_id, task=text(task),
        )  # fmt: skip
        await asyncio.to_thread(self._store.put_run, first)
        result = await supervise(
            self._store, run_id,
            lambda seen: agent.run(task, run_id=run_id, tenant=tenant, key_id=key_id, on_event=seen, history=history, deltas=deltas),
            on_event, poll_s=self._poll_s, heartbeat_s=self._heartbeat_s, clock=self._clock, base=None,
            save_now=lambda cut: self._save(agent, cut, tenant, key_id, started, first),
        )  # fmt: skip
        await asyncio.to_thread(self._save, agent, result, tenant, key_id, started, first)
        return result

    async def decide(
        self,
        agent: Agent,
        run_id: str,
        *,
        approve: bool,
        reason: str = "",
        tenant: str | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        deltas: bool = False,
    ) -> RunResult:
        """Approve or deny the calls a waiting run asked for, and go on with it to its next stop.

        Raises :class:`RunNotWaiting` when the run is unknown (for ``tenant``) or not waiting."""
        claimed = await asyncio.to_thread(self._store.claim_run, run_id, tenant=tenant, at=self._clock())
        if claimed is None or claimed.pending is None:
            found = await asyncio.to_thread(self._store.get_run, run_id, tenant=tenant)
            raise RunNotWaiting(_not_waiting(found, run_id))
        pending = claimed.pending
        result = await supervise(
            self._store, run_id,
            lambda seen: agent.resume(
                pending, run_id=run_id, approve=approve, reason=reason,
                tenant=claimed.tenant, key_id=claimed.key_id, on_event=seen, deltas=deltas,
            ),
            on_event, poll_s=self._poll_s, heartbeat_s=self._heartbeat_s, clock=self._clock, base=claimed,
            save_now=lambda cut: self._save(agent, cut, claimed.tenant, claimed.key_id, claimed.created_at, claimed),
        )  # fmt: skip
        await asyncio.to_thread(self._save, agent, result, claimed.tenant, claimed.key_id, claimed.created_at, claimed)
        return result

    async def cancel(
        self, run_id: str, *, tenant: str | None = None, reason: str = "cancelled by a person", wait_s: float = 10.0
    ) -> RunRecord:
        """Stop a waiting or running run for good (status ``stopped``, reason ``cancelled``) and return its record.

        A waiting run stops here (its pending state is dropped). A running one, in this process or
        any other that shares the store, is asked to stop (``cancelling``); the keeper running it
        stops it within its poll interval and stores it complete. This waits up to ``wait_s`` for
        that and returns the record as it then is (still ``cancelling`` if the process running it
        has not stopped it yet; a run that ended by itself meanwhile keeps its own ending).
        Raises :class:`RunNotActive` for an unknown run or one that has already ended.
        """
        now = self._clock()
        claimed = await asyncio.to_thread(self._store.claim_run, run_id, tenant=tenant, at=now)
        if claimed is not None:
            return await asyncio.to_thread(self._cancel_claimed, claimed, reason, now)
        asked = await asyncio.to_thread(self._store.request_cancel, run_id, tenant=tenant, reason=reason)
        if asked is None:
            asked = await asyncio.to_thread(self._store.get_run, run_id, tenant=tenant)
            if asked is None or asked.status != "cancelling":  # (asked already: wait for it like the first asker)
                raise RunNotActive(_not_active(asked, run_id))
        deadline = time.monotonic() + wait_s
        record: RunRecord | None = asked
        while record is not None and record.status == "cancelling":
            if self._clock() - record.updated_at > self._stale_s:  # no heartbeat: the process running it is gone
                return await asyncio.to_thread(self._stop_orphan, record)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(self._poll_s, max(deadline - time.monotonic(), 0.0)))
            record = await asyncio.to_thread(self._store.get_run, run_id, tenant=tenant)
        return record if record is not None else asked

    def _stop_orphan(self, record: RunRecord) -> RunRecord:
        """Stop a ``cancelling`` run whose process stopped beating (killed, or its host gone)."""
        now = self._clock()
        detail = (
            f"{record.detail} (the process running it has given no heartbeat for {now - record.updated_at:.0f} s: "
            "it is gone, and the steps it made were not stored)"
        )
        stopped = RunStopped(
            record.run_id, "cancelled", "stopped", detail, steps=record.steps, input_tokens=record.input_tokens,
            output_tokens=record.output_tokens, cost_usd=record.cost_usd,
        )  # fmt: skip
        ended = dataclasses.replace(record, status="stopped", stop_reason="cancelled", detail=detail, updated_at=now)
        self._store.put_run(ended, [event_to_dict(stopped)])
        return ended

    def _cancel_claimed(self, claimed: RunRecord, reason: str, now: float) -> RunRecord:
        stopped = RunStopped(
            claimed.run_id, "cancelled", "stopped", reason, steps=claimed.steps, input_tokens=claimed.input_tokens,
            output_tokens=claimed.output_tokens, cost_usd=claimed.cost_usd,
        )  # fmt: skip
        record = dataclasses.replace(
            claimed, status="stopped", stop_reason="cancelled", detail=reason, updated_at=now, pending=None
        )
        self._store.put_run(record, [event_to_dict(stopped)])
        return record

    def _save(
        self, agent: Agent, result: RunResult, tenant: str, key_id: str | None, created_at: float, previous: RunRecord | None
    ) -> None:
        record, steps = run_record(
            result, agent=agent.name, model=agent.model, tenant=tenant, created_at=created_at,
            updated_at=self._clock(), key_id=key_id, content=self._content, redact=self._redact, previous=previous,
        )  # fmt: skip
        self._store.put_run(record, steps)


def _not_active(record: RunRecord | None, run_id: str) -> str:
    if record is None:
        return f"no run {run_id!r}: list runs with `aiestack agent runs` or GET /v1/agents/NAME/runs"
    return f"run {run_id!r} has ended ({record.status}, {record.stop_reason}): only a running or waiting run can be cancelled"


def _not_waiting(record: RunRecord | None, run_id: str) -> str:
    if record is None:
        return f"no run {run_id!r}: list runs with `aiestack agent runs` or GET /v1/agents/NAME/runs"
    return f"run {run_id!r} is {record.status} ({record.stop_reason or 'in progress'}), not waiting for approval"
