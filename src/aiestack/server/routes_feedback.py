"""``POST /v1/feedback``: a user's judgement of one answer, attached by the answer's exchange id.

The exchange id comes from the ``x-aiestack-exchange-id`` response header, or from the response
body's ``id`` (``chatcmpl-…`` / ``cmpl-…`` name the same exchange). A key may give feedback only
on its own tenant's exchanges (the admin key on any). The answer is 201 with the stored record.

An exchange this process cannot see yet (another process answered and has not written it, or it
is another tenant's) is answered the same way for every well-formed id, 202 with
``status: "pending"``: the feedback is kept in the store and settled by
:mod:`aiestack.feedback.pending` once the exchange is stored (and dropped if it is another
tenant's), so ids of other tenants cannot be probed. A malformed id that is not a visible
exchange is a 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any, Literal, Protocol, cast

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.errors import AiestackError, NotFound
from aiestack.feedback.explicit import feedback_on, judgement
from aiestack.feedback.pending import PENDING_MAX_AGE_S
from aiestack.offload import run_cpu
from aiestack.server.auth import principal
from aiestack.server.bodies import body_openapi, parse_body
from aiestack.server.responses import JSONBytesResponse
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import FeedbackStore, PendingFeedback, PendingFeedbackStore
from aiestack.types import new_id

router = APIRouter(prefix="/v1", tags=["feedback"])

#: How long to wait for the trace writer when the exchange is not stored yet (it was just made).
FLUSH_WAIT_S = 2.0
#: What the gateway's exchange ids look like (``new_id("ex")``): only these can be pending.
_EXCHANGE_ID = re.compile(r"ex_[0-9a-f]{32}")


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


class _Feedbacks(FeedbackStore, PendingFeedbackStore, Protocol):
    """A store that holds feedback, pending feedback included."""


def _feedback_store(stack: Stack) -> _Feedbacks:
    if not isinstance(stack.store, FeedbackStore) or not isinstance(stack.store, PendingFeedbackStore):
        raise AiestackError(
            f"The store {type(stack.store).__name__} cannot hold feedback (it needs the FeedbackStore and "
            "PendingFeedbackStore methods of aiestack.stores.feedback).",
            hint="Use the SQLite, PostgreSQL or memory store, or implement both protocols in your store plugin.",
        )
    return cast(_Feedbacks, stack.store)


def other_writers_wait_s(stack: Stack) -> float:
    """How long the console waits for an exchange another process has answered but not written yet.

    Every process's writer flushes at least every ``store.flush_interval_s``; a batch takes a moment
    to commit. Two intervals and a second cover a loaded store; an id still unknown then is not
    an exchange at all (or the store is failing), and gets the 404.
    """
    return stack.settings.store.flush_interval_s * 2 + 1.0


async def find_exchange(stack: Stack, exchange_id: str, *, other_writers: bool = True) -> ExchangeRecord | None:
    """The exchange, also one made a moment ago by this process or another one sharing the store.

    The record may still be in this process's write queue (flushed now), or in another process's
    (``serve --workers N``, or several hosts), which this one cannot flush: with ``other_writers``
    it polls the store until that writer's next flush has landed (the console's exchange page).
    """
    found = await asyncio.to_thread(stack.store.get_exchange, exchange_id)
    if found is not None:
        return found
    await asyncio.to_thread(stack.writer.flush, FLUSH_WAIT_S)  # just made here? it may be in our queue
    if not other_writers:
        return await asyncio.to_thread(stack.store.get_exchange, exchange_id)
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
    """Store feedback on one exchange of the caller's tenant (201 with the stored record, or 202 pending)."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    body = parse_body(FeedbackRequest, await request.body())
    store = _feedback_store(stack)
    exchange_id = exchange_id_of(body.exchange_id)
    exchange = await find_exchange(stack, exchange_id, other_writers=False)
    visible = exchange is not None and (who.is_admin or exchange.tenant == who.tenant)
    if not visible and not _EXCHANGE_ID.fullmatch(exchange_id):
        raise NotFound(
            f"There is no exchange '{body.exchange_id}' that this key can see.",
            hint="Send the x-aiestack-exchange-id header (or the response id) of an answer made with a key of the same tenant.",
        )
    given = sum(len(t) for t in (body.comment or "", body.correction or "", body.user or "", *body.tags))
    judged = await run_cpu(given, lambda: judgement(
        thumbs=body.thumbs,
        rating=body.rating,
        score=body.score,
        comment=body.comment,
        correction=body.correction,
        tags=body.tags,
        user=body.user,
        redact=stack.tracing.redact,
    ))
    feedback_id, now = new_id("fb"), time.time()
    if exchange is not None and visible:
        record = feedback_on(exchange, judged, id=feedback_id, created_at=now, key_id=who.key_id)
        await asyncio.to_thread(store.write_feedback, [record])
        return JSONBytesResponse(record_json(record), status_code=201)
    # Not stored yet (another process's write batch), or another tenant's: the same answer either way.
    pending = PendingFeedback(
        id=feedback_id,
        exchange_id=exchange_id,
        created_at=now,
        tenant=None if who.is_admin else who.tenant,
        key_id=who.key_id,
        body=judged,
    )
    await asyncio.to_thread(store.write_pending_feedback, [pending])
    stack.metrics.pending_feedback_outcome("accepted")
    return JSONBytesResponse(
        {"id": feedback_id, "exchange_id": exchange_id, "status": "pending", "expires_at": now + PENDING_MAX_AGE_S},
        status_code=202,
    )
