"""Runs that can be stopped while they run: from this process (its task cancelled, an HTTP client
gone) or from any other one (a cancel request in the shared store).

:func:`supervise` runs a run's task beside a watcher that polls the run's stored status; when
someone asks the run to stop (:meth:`~aiestack.stores.runs.RunStore.request_cancel` set it
``cancelling``), the task is cancelled at once: a model call in flight is abandoned (its exchange
is recorded as cancelled by the pipeline), an async tool is cancelled, a sync tool's thread runs on
to its end but its result is dropped. The run is then what :func:`cut` makes of the events it had
produced: every step so far, a ``cancelled`` result for each tool call that had not returned, and a
``RunStopped`` with reason ``cancelled`` and the tokens and cost it used — so the stored record is
complete, never left ``running``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiestack.agents.events import (
    AgentEvent,
    AnswerDelta,
    FinalAnswer,
    ModelDelta,
    RunResult,
    RunStopped,
    StreamEvent,
    ToolCalled,
    ToolResult,
)
from aiestack.stores.runs import RunRecord, RunStore

_log = logging.getLogger(__name__)

#: What a tool call that was in flight when its run was cancelled returns.
CANCELLED_CALL = "the run was cancelled before this call finished"
OnEvent = Callable[[StreamEvent], None]


async def supervise(
    store: RunStore,
    run_id: str,
    start: Callable[[OnEvent], Awaitable[RunResult]],
    on_event: OnEvent | None,
    *,
    poll_s: float,
    heartbeat_s: float,
    clock: Callable[[], float],
    base: RunRecord | None,
    save_now: Callable[[RunResult], None],
) -> RunResult:
    """Run ``start(on_event)``; stop it when the store says ``cancelling`` (then return the cut run).

    ``base``: the stored run a resumed run goes on from (its steps, tokens and cost count on). When
    the caller's own task is cancelled (or the run raises), the run cut so far is saved at once with
    the blocking ``save_now`` and the exception goes on.
    """
    events: list[AgentEvent] = []

    def seen(event: StreamEvent) -> None:
        if not isinstance(event, ModelDelta | AnswerDelta):
            events.append(event)
        if on_event is not None:
            on_event(event)

    runner = asyncio.ensure_future(start(seen))
    watcher = asyncio.ensure_future(_watch(store, run_id, poll_s, heartbeat_s, clock))
    try:
        await asyncio.wait((runner, watcher), return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            return runner.result()
        reason = watcher.result()
        runner.cancel()
        await asyncio.wait((runner,))
        if not runner.cancelled():  # it ended by itself meanwhile
            return runner.result()
        return cut(run_id, events, reason, base)
    except BaseException as exc:  # our task cancelled (a client went away), or a bug: never left "running"
        runner.cancel()
        why = "the run was interrupted" if isinstance(exc, asyncio.CancelledError) else f"the run failed: {exc!r}"
        save_now(cut(run_id, events, why, base))
        raise
    finally:
        watcher.cancel()


async def _watch(store: RunStore, run_id: str, poll_s: float, heartbeat_s: float, clock: Callable[[], float]) -> str:
    """Return the reason once the run is asked to stop (a store that fails is asked again later);
    beat the run's heartbeat every ``heartbeat_s`` meanwhile."""
    beat = time.monotonic()
    while True:
        await asyncio.sleep(poll_s)
        try:
            if time.monotonic() - beat >= heartbeat_s:
                beat = time.monotonic()
                await asyncio.to_thread(store.touch_run, run_id, at=clock())
            record = await asyncio.to_thread(store.get_run, run_id)
        except Exception:  # the store is down for a moment: the run goes on, and so does the watch
            _log.warning("could not read the status of run %s", run_id, exc_info=True)
            continue
        if record is not None and record.status == "cancelling":
            return record.detail or "cancelled"


def cut(run_id: str, events: list[AgentEvent], reason: str, base: RunRecord | None = None) -> RunResult:
    """The run made of ``events`` so far, stopped as ``cancelled`` because of ``reason``."""
    kept = [e for e in events if not isinstance(e, RunStopped)]
    returned = {(e.step, e.call_id) for e in kept if isinstance(e, ToolResult)}
    for event in list(kept):
        if isinstance(event, ToolCalled) and (event.step, event.call_id) not in returned:
            kept.append(ToolResult(run_id, event.step, event.call_id, event.name, CANCELLED_CALL, error="cancelled"))
    stopped = RunStopped(
        run_id,
        "cancelled",
        "stopped",
        reason,
        steps=max([base.steps if base else 0, *(int(getattr(e, "step", 0)) for e in kept)]),
        input_tokens=(base.input_tokens if base else 0) + sum(int(getattr(e, "input_tokens", 0) or 0) for e in kept),
        output_tokens=(base.output_tokens if base else 0) + sum(int(getattr(e, "output_tokens", 0) or 0) for e in kept),
        cost_usd=(base.cost_usd if base else 0.0) + sum(float(getattr(e, "cost_usd", 0.0) or 0.0) for e in kept),
    )
    answer = next((e.text for e in reversed(kept) if isinstance(e, FinalAnswer)), None)
    return RunResult(run_id, "stopped", "cancelled", answer, (*kept, stopped), detail=reason)
