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

from collections.abc import Callable, Mapping
from typing import Any

from aiestack.agents.events import ApprovalRequested, RunResult, RunStarted, event_to_dict, message_to_dict
from aiestack.stores.runs import RunRecord

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
}


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
    for name in ("tool_calls", "calls"):
        if name in out:
            out[name] = [{**c, "arguments": text(str(c.get("arguments", "")))} for c in out[name]]
    if "citations" in out:
        out["citations"] = [_citation(c, text) for c in out["citations"]]
    return out


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
