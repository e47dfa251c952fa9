"""The metrics page (``/dashboard``): charts over time and a calendar heatmap of usage by day.

Charts: requests (and errors), latency p50/p95, TTFT and TPOT, tokens in and out, cost, cache hit
rate and guardrail actions, over the chosen period in round buckets. The heatmap counts
exchanges per UTC day over the last year; imported conversations are exchanges, so they count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.server.console import charts, queries
from aiestack.server.console.auth import require_session
from aiestack.server.console.render import page, svg

router = APIRouter(include_in_schema=False)

PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "90d": 90 * 86400}


def metric_charts(buckets: list[queries.Bucket], width_s: int) -> dict[str, str]:
    """Every chart of the metrics page, by name, as SVG."""
    starts = [b.start for b in buckets]
    actions = sorted({a for b in buckets for a in (b.guard_actions or {})})
    return {
        "requests": charts.bar_chart(
            "Requests",
            starts,
            {
                "answered": [float(b.requests - b.errors) for b in buckets],
                "errors": [float(b.errors) for b in buckets],
            },
            width_s=width_s,
        ),
        "latency": charts.line_chart(
            "Latency",
            starts,
            {"p50": [b.latency_p50_ms for b in buckets], "p95": [b.latency_p95_ms for b in buckets]},
            width_s=width_s,
            unit="ms",
        ),
        "ttft": charts.line_chart(
            "Time to first token / per output token (p50)",
            starts,
            {"TTFT": [b.ttft_p50_ms for b in buckets], "TPOT": [b.tpot_p50_ms for b in buckets]},
            width_s=width_s,
            unit="ms",
        ),
        "tokens": charts.bar_chart(
            "Tokens",
            starts,
            {"input": [float(b.input_tokens) for b in buckets], "output": [float(b.output_tokens) for b in buckets]},
            width_s=width_s,
        ),
        "cost": charts.bar_chart("Cost", starts, {"USD": [b.cost_usd for b in buckets]}, width_s=width_s, unit="USD"),
        "cache": charts.line_chart(
            "Cache hit rate",
            starts,
            {"hit rate": [None if b.cache_hit_rate is None else 100 * b.cache_hit_rate for b in buckets]},
            width_s=width_s,
            unit="%",
        ),
        "guards": charts.bar_chart(
            "Guardrail actions",
            starts,
            {a: [float((b.guard_actions or {}).get(a, 0)) for b in buckets] for a in actions} or {"none": [0.0] * len(buckets)},
            width_s=width_s,
        ),
    }


def _year(text: str | None, years: list[int]) -> int | None:
    """The calendar year asked for, if it is one with exchanges; ``None``: the last twelve months."""
    if text is None or not text.isdigit():
        return None
    year = int(text)
    return year if year in years else None


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    session = await require_session(request)
    stack: Stack = request.app.state.stack
    period = request.query_params.get("period", "24h")
    if period not in PERIODS:
        period = "24h"
    now = time.time()
    since = now - PERIODS[period]
    width_s = queries.bucket_seconds(PERIODS[period])
    buckets = await asyncio.to_thread(queries.series, stack.queries, since=since, until=now, width_s=width_s)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    first = await asyncio.to_thread(queries.first_exchange_at, stack.queries)
    first_year = dt.datetime.fromtimestamp(first, dt.UTC).year if first is not None else today.year
    years = list(range(today.year, min(first_year, today.year) - 1, -1))
    year = _year(request.query_params.get("year"), years)
    # The last twelve months, or one calendar year (imported conversations may be years old).
    end = today if year is None or year == today.year else dt.date(year, 12, 31)
    start = end - dt.timedelta(days=371)
    since_day = dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()
    until_day = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()
    days = await asyncio.to_thread(queries.day_counts, stack.queries, since=since_day, until=until_day)
    totals = {
        "requests": sum(b.requests for b in buckets),
        "errors": sum(b.errors for b in buckets),
        "tokens": sum(b.input_tokens + b.output_tokens for b in buckets),
        "cost": sum(b.cost_usd for b in buckets),
    }
    return page(
        request,
        "dashboard.html",
        session,
        title="Metrics",
        period=period,
        periods=list(PERIODS),
        charts={name: svg(markup) for name, markup in metric_charts(buckets, width_s).items()},
        heatmap=svg(charts.calendar_heatmap(days, end=end)),
        years=years,
        year=year,
        totals=totals,
    )
