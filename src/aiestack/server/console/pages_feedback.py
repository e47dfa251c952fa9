"""The feedback and prompts pages, and the exchange page's feedback form.

Feedback: the newest records (filtered by route, source and kind, paged backwards by time) and
rates by route, by prompt version and by day. Prompts: every prompt with its labels; one prompt's
versions with their labels and usage counts, and a unified diff between any two versions.
"""

from __future__ import annotations

import asyncio
import difflib
import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from aiestack.build import Stack
from aiestack.errors import InvalidRequest
from aiestack.offload import run_cpu
from aiestack.server.console import charts
from aiestack.server.console.auth import CSRF_FIELD, check_csrf, form_fields, require_session
from aiestack.server.console.feedback_form import record_from_form
from aiestack.server.console.render import page, svg
from aiestack.server.routes_feedback import find_exchange
from aiestack.stores.feedback import FeedbackRate, FeedbackStore
from aiestack.stores.prompts import PromptStore

router = APIRouter(include_in_schema=False)

_DAY = 86400


@router.post("/exchanges/{exchange_id}/feedback")
async def give_feedback(request: Request, exchange_id: str) -> Response:
    session = await require_session(request)
    fields = await form_fields(request)
    check_csrf(request, session, fields.get(CSRF_FIELD))
    stack: Stack = request.app.state.stack
    store = stack.store
    record = await find_exchange(stack, exchange_id)
    if record is None or not isinstance(store, FeedbackStore):
        return page(
            request, "error.html", session, status_code=404, title="Cannot give feedback",
            message=f"No exchange has the id {exchange_id!r}." if record is None
            else "This store keeps no feedback.",
            hint="Go back to the exchange list.",
        )
    try:
        feedback = await run_cpu(sum(map(len, fields.values())), record_from_form, fields, record, redact=stack.tracing.redact)
    except InvalidRequest as exc:
        return page(
            request, "error.html", session, status_code=400, title="Feedback not saved",
            message=exc.message, hint=exc.hint or "Go back and fill in the form.",
        )
    await asyncio.to_thread(store.write_feedback, [feedback])
    return RedirectResponse(f"/exchanges/{exchange_id}?feedback=sent#feedback", status_code=303)


def _rates(store: FeedbackStore, since: float) -> dict[str, list[FeedbackRate]]:
    return {
        "route": store.feedback_summary(by=("route",), since=since),
        "prompt": store.feedback_summary(by=("prompt", "prompt_version"), since=since),
        "source": store.feedback_summary(by=("source", "kind"), since=since),
        "day": store.feedback_summary(by=("day",), since=since),
    }


@router.get("/feedback")
async def feedback_page(request: Request) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    store = stack.store
    if not isinstance(store, FeedbackStore):
        return page(request, "feedback.html", session, title="Feedback", available=False)
    params = request.query_params
    filters: dict[str, Any] = {
        k: (params.get(k) or None) for k in ("route", "source", "kind")
    }
    if filters["source"] not in (None, "explicit", "implicit"):
        filters["source"] = None
    try:
        before = float(params["before"]) if params.get("before") else None
    except ValueError:
        before = None
    try:
        days = max(1, min(int(params.get("days", "30")), 3650))
    except ValueError:
        days = 30
    since = time.time() - days * _DAY
    records = await asyncio.to_thread(
        lambda: store.list_feedback(limit=51, before=before, **filters)
    )
    more = len(records) > 50
    records = records[:50]
    rates = await asyncio.to_thread(_rates, store, since)
    by_day = {r.day: r for r in rates["day"] if r.day is not None}
    start = (since // _DAY) * _DAY
    starts = [start + i * _DAY for i in range(days + 1)]
    keys = [time.strftime("%Y-%m-%d", time.gmtime(t)) for t in starts]
    chart = charts.bar_chart(
        "Feedback per day",
        starts,
        {
            "positive": [float(by_day[k].positive) if k in by_day else 0.0 for k in keys],
            "negative": [float(by_day[k].negative) if k in by_day else 0.0 for k in keys],
        },
        width_s=_DAY,
    )
    kept = {k: v for k, v in filters.items() if v}
    next_link = (
        f"/feedback?{urlencode({**kept, 'before': repr(records[-1].created_at)})}" if more and records else None
    )
    return page(
        request,
        "feedback.html",
        session,
        title="Feedback",
        available=True,
        records=records,
        rates=rates,
        chart=svg(chart),
        filters=filters,
        days=days,
        next_link=next_link,
    )


@router.get("/prompts")
async def prompts_page(request: Request) -> Response:
    session = await require_session(request)
    store = request.app.state.stack.store
    if not isinstance(store, PromptStore):
        return page(request, "prompts.html", session, title="Prompts", available=False, prompts=[])
    prompts = await asyncio.to_thread(store.list_prompts)
    return page(request, "prompts.html", session, title="Prompts", available=True, prompts=prompts)


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> list[tuple[str, str]]:
    """``(css class, line)`` pairs of a unified diff: ``add``, ``del``, ``hunk`` or ``same``."""
    out: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name, lineterm=""
    ):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append((kind, line))
    return out


@router.get("/prompts/{name}")
async def prompt_page(request: Request, name: str) -> Response:
    session = await require_session(request)
    store = request.app.state.stack.store
    if not isinstance(store, PromptStore):
        return page(request, "prompts.html", session, title="Prompts", available=False, prompts=[])
    versions = await asyncio.to_thread(store.prompt_versions, name)
    if not versions:
        return page(
            request, "error.html", session, status_code=404, title="Prompt not found",
            message=f"There is no prompt named {name!r}.", hint="Push one with `aiestack prompts push NAME FILE`.",
        )
    labels = await asyncio.to_thread(store.prompt_labels, name)
    usage = await asyncio.to_thread(store.prompt_usage, name)
    numbers = [v.version for v in versions]

    def pick(key: str, default: int) -> int:
        try:
            value = int(request.query_params.get(key, default))
        except ValueError:
            return default
        return value if value in numbers else default

    b = pick("b", numbers[-1])
    a = pick("a", numbers[-2] if len(numbers) > 1 else numbers[-1])
    by_number = {v.version: v for v in versions}
    diff = unified_diff(by_number[a].template, by_number[b].template, f"{name}@{a}", f"{name}@{b}")
    return page(
        request,
        "prompt.html",
        session,
        title=f"Prompt {name}",
        name=name,
        versions=list(reversed(versions)),
        labels=labels,
        labels_by_version={v: [lab.label for lab in labels if lab.version == v] for v in numbers},
        usage=usage,
        a=a,
        b=b,
        diff=diff,
    )
