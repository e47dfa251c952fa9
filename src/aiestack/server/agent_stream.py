"""``model = "agent:NAME"`` with ``stream: true``: an agent's run as an OpenAI chat-completion stream.

The content deltas are the final answer's (:class:`~aiestack.agents.events.AnswerDelta`: on the
text protocol as the model writes it, with native tool calls once the last reply is known to be
the answer). Each step of the run (model call, tool call and result, approval asked, answer, stop)
goes out as it happens in a chunk of its own whose delta is empty and whose extra field
``aiestack_step`` is the step as the stored run keeps it (content-tracing rules applied), so an
OpenAI client reads the answer and skips the steps. The last chunk has ``finish_reason: "stop"``
and ``aiestack_run``, the stored run as ``GET /v1/agents/NAME/runs/RUN_ID`` gives it; with
``stream_options.include_usage`` a usage chunk (the run's tokens) follows. A client that goes away
cancels the run (stored ``stopped`` / ``cancelled``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response

from aiestack.agents.events import AnswerDelta, ModelDelta, RunResult, RunStarted, StreamEvent, event_to_dict
from aiestack.agents.runs import content_policy, stored_step
from aiestack.build import Stack
from aiestack.server import sse
from aiestack.server.translate import chat_id
from aiestack.stores.runs import RunStore

#: Starts the run, calling the function it is given with each event (deltas included).
StartRun = Callable[..., Awaitable[RunResult]]


def agent_sse(stack: Stack, store: RunStore, start: StartRun, *, model: str, include_usage: bool) -> Response:
    """The streamed response of one agent run (``start(on_event=...)`` runs and stores it)."""
    return sse.EventStreamResponse(
        _body(stack, store, start, model=model, include_usage=include_usage),
        media_type="text/event-stream",
        headers=sse.SSE_HEADERS,
    )


async def _body(stack: Stack, store: RunStore, start: StartRun, *, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    from aiestack.server.routes_agents import _content, _usage, run_json

    events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
    text = content_policy(stack.tracing.content, stack.tracing.redact)
    created = int(time.time())
    run = asyncio.ensure_future(start(on_event=events.put_nowait))
    run.add_done_callback(lambda _: events.put_nowait(None))
    chunk_id = "chatcmpl-run"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse.event({"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice], **extra})

    try:
        answered = False
        while (event := await events.get()) is not None:
            if isinstance(event, RunStarted):
                chunk_id = chat_id(event.run_id)
                yield chunk({"role": "assistant", "content": ""})
            if isinstance(event, AnswerDelta):
                answered = True
                yield chunk({"content": event.text})
            elif not isinstance(event, ModelDelta):
                yield chunk({}, aiestack_step=stored_step(event_to_dict(event), text))
        result = run.result()  # the keeper's own failure (the store) ends the stream as an error
        if result.answer is None or not answered:
            yield chunk({"content": _content(result)})
        record = await asyncio.to_thread(store.get_run, result.run_id)
        steps = await asyncio.to_thread(store.run_steps, result.run_id)
        assert record is not None
        yield chunk({}, "stop", aiestack_run=run_json(record, steps))
        if include_usage:
            yield sse.event({"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [], "usage": _usage(result.stopped)})  # fmt: skip
    except Exception as exc:
        yield sse.error_event(exc, chunk_id)
        return
    finally:
        if not run.done():  # the client went away: the keeper stores the run as cancelled
            run.cancel()
            await asyncio.wait((run,))
    yield sse.DONE
