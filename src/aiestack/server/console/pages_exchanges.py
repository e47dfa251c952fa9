"""The exchanges pages: a filterable, keyset-paginated list, and one exchange in detail.

The detail page shows the span waterfall (from the stored spans), the messages and the answer
(stored only with content tracing), the retrieved chunks with their scores and the guard
verdicts (both recorded in the exchange's attributes by the Trace stage), and its feedback,
with a form to give more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.server.console import charts, queries
from aiestack.server.console.auth import Session, require_session
from aiestack.server.console.feedback_form import feedback_list, feedback_of
from aiestack.server.console.render import page, svg
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.queries import Cursor, ExchangeFilter
from aiestack.types import SpanRecord

router = APIRouter(include_in_schema=False)

#: The time ranges offered, in seconds back from now (``all``: no bound).
#: The largest magnitude a numeric filter takes: far past any real token count, latency or cost, and
#: well inside a 64-bit SQL integer (a larger value would overflow the query, a 500 instead of a hint).
MAX_FILTER_NUMBER = 1e15
RANGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "all": None}


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = (params.get(name) or "").strip()
    return value or None


def _number(params: Mapping[str, str], name: str, problems: list[str]) -> float | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        problems.append(f"{name} must be a number, got {value!r}")
        return None
    if number != number or number in (float("inf"), float("-inf")):
        problems.append(f"{name} must be a finite number")
        return None
    if abs(number) > MAX_FILTER_NUMBER:
        problems.append(f"{name} must be between -{MAX_FILTER_NUMBER:.0e} and {MAX_FILTER_NUMBER:.0e}, got {value!r}")
        return None
    return number


def _date(params: Mapping[str, str], name: str, problems: list[str]) -> float | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{name} must be a date like 2026-11-28 or 2026-11-28T09:30, got {value!r}")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_filter(params: Mapping[str, str], *, now: float | None = None) -> tuple[ExchangeFilter, list[str]]:
    """The list's filters from query parameters, and what was wrong with any (those are ignored)."""
    problems: list[str] = []
    now = time.time() if now is None else now
    since = _date(params, "since", problems)
    chosen = _text(params, "range")
    if since is None and chosen is not None:
        if chosen not in RANGES:
            problems.append(f"range must be one of {', '.join(RANGES)}")
        elif RANGES[chosen] is not None:
            since = now - RANGES[chosen]  # type: ignore[operator]
    outcome = _text(params, "outcome")
    if outcome is not None and outcome not in queries.OUTCOMES:
        problems.append(f"status must be one of {', '.join(queries.OUTCOMES)}")
        outcome = None
    guard = _text(params, "guard")
    if guard is not None and guard not in (*queries.GUARD_ACTIONS, "any"):
        problems.append(f"guard must be any, {', '.join(queries.GUARD_ACTIONS)}")
        guard = None
    feedback = _text(params, "feedback")
    if feedback is not None and feedback not in queries.FEEDBACK_FILTERS:
        problems.append(f"feedback must be one of {', '.join(queries.FEEDBACK_FILTERS)}")
        feedback = None
    cached_text = _text(params, "cached")
    cached = {"yes": True, "no": False}.get(cached_text or "")
    min_tokens = _number(params, "min_tokens", problems)
    flt = ExchangeFilter(
        since=since,
        until=_date(params, "until", problems),
        tenant=_text(params, "tenant"),
        key_id=_text(params, "key"),
        route=_text(params, "route"),
        model=_text(params, "model"),
        outcome=outcome,
        min_latency_ms=_number(params, "min_ms", problems),
        max_latency_ms=_number(params, "max_ms", problems),
        min_tokens=int(min_tokens) if min_tokens is not None else None,
        min_cost_usd=_number(params, "min_cost", problems),
        cached=cached,
        guard_action=guard,
        feedback=feedback,
    )
    return flt, problems


#: Query parameters the list keeps when paging.
_KEPT = ("range", "since", "until", "tenant", "key", "route", "model", "outcome", "min_ms", "max_ms",
         "min_tokens", "min_cost", "cached", "guard", "feedback", "limit")


def _limit(params: Mapping[str, str]) -> int:
    try:
        return max(1, min(int(params.get("limit", "50")), queries.MAX_PAGE))
    except ValueError:
        return 50


@router.get("/exchanges")
async def exchange_list(request: Request) -> Response:
    session = await require_session(request)
    return await render_list(request, session)


async def render_list(request: Request, session: Session) -> Response:
    """The list page (also what ``bench/console.py`` times)."""
    stack: Stack = request.app.state.stack
    params = dict(request.query_params)
    flt, problems = parse_filter(params)
    after = Cursor.decode(params.get("after"))
    limit = _limit(params)
    result = await asyncio.to_thread(queries.list_page, stack.queries, flt, feedback=stack.store, after=after, limit=limit)
    counts = await asyncio.to_thread(feedback_of, stack.store, [r.id for r in result.records])
    choices = await asyncio.to_thread(queries.distinct_values, stack.queries)
    kept = {k: v for k, v in params.items() if k in _KEPT and v}
    next_link = f"/exchanges?{urlencode({**kept, 'after': result.next.encode()})}" if result.next else None
    return page(
        request,
        "exchanges.html",
        session,
        title="Exchanges",
        records=result.records,
        feedback=counts,
        params=params,
        problems=problems,
        choices=choices,
        ranges=list(RANGES),
        outcomes=queries.OUTCOMES,
        guard_actions=queries.GUARD_ACTIONS,
        feedback_filters=queries.FEEDBACK_FILTERS,
        next_link=next_link,
        searched=result.searched,
        first_link=f"/exchanges?{urlencode(kept)}" if after is not None else None,
    )


def _spans(stack: Stack, record: ExchangeRecord) -> list[SpanRecord]:
    found = stack.store.spans(trace_id=record.trace_id) if record.trace_id else []
    return found or stack.store.spans(exchange_id=record.id)


def _messages(record: ExchangeRecord) -> list[dict[str, Any]]:
    """The stored messages as (role, text) pairs; empty when content tracing was off."""
    out: list[dict[str, Any]] = []
    for message in record.request.get("messages") or []:
        parts = message.get("parts")
        if parts is not None:
            text = "\n".join(_part_text(p) for p in parts if isinstance(p, dict))
        else:
            text = str(message.get("content", ""))
        out.append({"role": message.get("role", "?"), "text": text})
    return out


def _part_text(part: Mapping[str, Any]) -> str:
    kind = part.get("type")
    if kind == "text":
        return str(part.get("content", ""))
    if kind == "tool_call":
        return f"[tool call {part.get('name')}({part.get('arguments', '')})]"
    if kind == "tool_call_response":
        return str(part.get("response", ""))
    if kind == "uri":
        return f"[{part.get('modality', 'attachment')}]"
    return str(part.get("content", ""))


@router.get("/exchanges/{exchange_id}")
async def exchange_detail(request: Request, exchange_id: str) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    record = await asyncio.to_thread(stack.store.get_exchange, exchange_id)
    if record is None:
        return page(
            request, "error.html", session, status_code=404, title="Exchange not found",
            message=f"No exchange has the id {exchange_id!r}.",
            hint="Exchanges are written in batches: a very recent one may take a second to appear.",
        )
    spans = await asyncio.to_thread(_spans, stack, record)
    given = await asyncio.to_thread(feedback_list, stack.store, record.id)
    attributes = dict(record.attributes)
    return page(
        request,
        "exchange.html",
        session,
        title=f"Exchange {record.id}",
        ex=record,
        waterfall=svg(charts.waterfall(spans)),
        spans=spans,
        messages=_messages(record),
        hits=attributes.pop("hits", None) or [],
        verdicts=attributes.pop("verdicts", None) or [],
        attributes=attributes,
        feedback=given,
        feedback_enabled=given is not None,
        sent=request.query_params.get("feedback") == "sent",
    )
