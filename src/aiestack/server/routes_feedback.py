"""``POST /v1/feedback``: a user's judgement of one answer, attached by the answer's exchange id.

The exchange id comes from the ``x-aiestack-exchange-id`` response header, or from the response
body's ``id`` (``chatcmpl-…`` / ``cmpl-…`` name the same exchange). A key may give feedback only
on its own tenant's exchanges (the admin key on any); any other id is a 404, so ids of other
tenants cannot be probed. The answer is 201 with the stored record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.errors import AiestackError, NotFound
from aiestack.feedback.explicit import explicit_feedback
from aiestack.offload import run_cpu
from aiestack.server.auth import principal
from aiestack.server.bodies import body_openapi, parse_body
from aiestack.server.responses import JSONBytesResponse
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import FeedbackStore

router = APIRouter(prefix="/v1", tags=["feedback"])

#: How long to wait for the trace writer when the exchange is not stored yet (it was just made).
FLUSH_WAIT_S = 2.0


class FeedbackRequest(BaseModel):
    """The body of ``POST /v1/feedback``. At least one of thumbs, rating, score, comment, correction."""

    model_config = ConfigDict(extra="forbid")

    exchange_id: str = Field(min_length=1, max_length=200, description="x-aiestack-exchange-id, or the response id.")
    thumbs: Literal["up", "down", 1, -1] | None = Field(default=None, description="'up'/'down' or 1/-1.")
    rating: int | None = Field(default=None, ge=1, le=5, description="1 (bad) to 5 (excellent).")
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False, description="0 (bad) to 1 (good).")
    comment: str | None = Field(default=None, max_length=10_000)
    correction: str | None = Field(default=None, max_length=100_000, description="What the answer should have been.")
    tags: list[str] = Field(default_factory=list, max_length=50)
    user: str | None = Field(default=None, max_length=200, description="Your end user's id, if any.")


def exchange_id_of(given: str) -> str:
    """``chatcmpl-HEX`` and ``cmpl-HEX`` (response ids) name the exchange ``ex_HEX``."""
    for prefix in ("chatcmpl-", "cmpl-"):
        if given.startswith(prefix):
            return "ex_" + given[len(prefix) :]
    return given


def _feedback_store(stack: Stack) -> FeedbackStore:
    if not isinstance(stack.store, FeedbackStore):
        raise AiestackError(
            f"The store {type(stack.store).__name__} cannot hold feedback.",
            hint="Use the SQLite, PostgreSQL or memory store.",
        )
    return stack.store


def other_writers_wait_s(stack: Stack) -> float:
    """How long feedback waits for an exchange another process has answered but not written yet.

    Every process's writer flushes at least every ``store.flush_interval_s``; a batch takes a moment
    to commit. Two intervals and a second cover a loaded store; an id still unknown then is not
    an exchange at all (or the store is failing), and gets the 404.
    """
    return stack.settings.store.flush_interval_s * 2 + 1.0


async def find_exchange(stack: Stack, exchange_id: str) -> ExchangeRecord | None:
    """The exchange, also one made a moment ago by this process or another one sharing the store.

    Feedback is often sent right after the answer: the record may still be in this process's write
    queue (flushed now), or in another process's (``serve --workers N``, or several hosts), which
    this one cannot flush: then it polls the store until that writer's next flush has landed.
    """
    found = await asyncio.to_thread(stack.store.get_exchange, exchange_id)
    if found is not None:
        return found
    await asyncio.to_thread(stack.writer.flush, FLUSH_WAIT_S)  # just made here? it may be in our queue
    deadline = time.monotonic() + other_writers_wait_s(stack)
    pause = 0.02
    while True:
        found = await asyncio.to_thread(stack.store.get_exchange, exchange_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(pause * 2, 0.25)


def record_json(record: Any) -> dict[str, Any]:
    body = dataclasses.asdict(record)
    body["tags"] = list(record.tags)
    return body


@router.post("/feedback", status_code=201, response_model=None, openapi_extra=body_openapi(FeedbackRequest))
async def give_feedback(request: Request) -> Response:
    """Store feedback on one exchange of the caller's tenant (201 with the stored record)."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    body = parse_body(FeedbackRequest, await request.body())
    store = _feedback_store(stack)
    exchange_id = exchange_id_of(body.exchange_id)
    exchange = await find_exchange(stack, exchange_id)
    if exchange is None or (not who.is_admin and exchange.tenant != who.tenant):
        raise NotFound(
            f"There is no exchange '{body.exchange_id}' that this key can see.",
            hint="Send the x-aiestack-exchange-id header (or the response id) of an answer made with a key of the same tenant.",
        )
    given = sum(len(t) for t in (body.comment or "", body.correction or "", body.user or "", *body.tags))
    record = await run_cpu(given, lambda: explicit_feedback(
        exchange,
        thumbs=body.thumbs,
        rating=body.rating,
        score=body.score,
        comment=body.comment,
        correction=body.correction,
        tags=body.tags,
        user=body.user,
        key_id=who.key_id,
        redact=stack.tracing.redact,
    ))
    await asyncio.to_thread(store.write_feedback, [record])
    return JSONBytesResponse(record_json(record), status_code=201)
