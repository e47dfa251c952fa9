"""The console's exchange list at 100k stored exchanges: server time per page render.

Fills a fresh SQLite store (the default backend) with N exchanges spread over 90 days (bulk
inserted in one transaction), then renders ``/exchanges`` in-process through the real app (login,
session cookie, template, feedback counts, filter pickers: everything a browser request does,
minus the socket) and times it:

- first page: the 50 newest;
- filtered page: one model and one status (an index range scan on ``(model, created_at)``);
- guard page: exchanges a guardrail blocked (a rare value, on the 0007 index);
- deep page: keyset cursor ~90% of the way down (what "Older »" reaches after 1,800 clicks);
- unindexed filter: latency ≥ 2.9 s, a numeric filter with no index of its own (checked within a
  scan window of 5,000 exchanges per page);
- no match: a latency no exchange has, the worst case (the page reads one whole scan window).

The anchor, measured in the same run, is what OFFSET pagination would cost for the deep page
(``ORDER BY created_at DESC LIMIT 50 OFFSET …`` straight on the store), and the store's own
``list_exchanges`` first page. Target: every list page ≤ 300 ms p50 and p95 (issue #7); the script
exits 1 when one is missed. The metrics dashboard (not a target) is timed too.

    .venv/bin/python bench/console.py                # --rows 100000 --reps 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from aiestack.build import build_stack
from aiestack.server.app import create_app
from aiestack.settings import GatewaySettings, Settings
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.sql.tables import exchanges

ADMIN_KEY_ENV = "AIESTACK_BENCH_ADMIN_KEY"
ADMIN_KEY = "bench-admin-key"
TARGET_MS = 300.0
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-haiku", "llama-3-8b", "gemma-3-270m"]
ROUTES = [None, "support", "search", "summarise", "code"]
TENANTS = [f"tenant-{i}" for i in range(10)]
OUTCOMES = ["ok"] * 90 + ["error"] * 4 + ["cached"] * 5 + ["blocked"]


def fill(store: SqlExchangeStore, rows: int, seed: int = 1) -> float:
    """Bulk-insert ``rows`` exchanges; seconds taken."""
    rng = random.Random(seed)
    now = time.time()
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    # The usual bulk-load recipe: drop the secondary indexes, insert in one transaction, rebuild them.
    indexes = list(exchanges.indexes)
    with store.engine.begin() as connection:
        for index in indexes:
            index.drop(connection)
        for i in range(rows):
            outcome = rng.choice(OUTCOMES)
            total = rng.lognormvariate(6.0, 0.8)
            tin, tout = rng.randint(10, 3000), rng.randint(1, 800)
            batch.append(
                {
                    "id": f"ex_{i:032x}",
                    "created_at": now - rng.uniform(0, 90 * 86400),
                    "model": rng.choice(MODELS),
                    "outcome": outcome,
                    "tenant": rng.choice(TENANTS),
                    "key_id": f"key_{rng.randint(0, 40)}",
                    "route": rng.choice(ROUTES),
                    "provider": "openai",
                    "stream": rng.random() < 0.5,
                    "finish_reason": "stop",
                    "error_type": "ProviderTimeout" if outcome == "error" else None,
                    "error_message": None,
                    "input_tokens": tin,
                    "output_tokens": tout,
                    "cached_tokens": 0,
                    "queue_ms": 0.0,
                    "ttft_ms": total * 0.2,
                    "tpot_ms": total * 0.8 / max(tout, 1),
                    "total_ms": total,
                    "cost_usd": (tin * 0.15 + tout * 0.6) / 1e6,
                    "cached": outcome == "cached",
                    "trace_id": None,
                    "request": {"model": "x", "params": {"temperature": 0.7}},
                    "response": None,
                    "attributes": {},
                    "guard_action": "block" if outcome == "blocked" else rng.choice([None] * 30 + ["redact", "flag"]),
                }
            )
            if len(batch) == 10_000:
                _insert(connection, batch)
                batch = []
        if batch:
            _insert(connection, batch)
        for index in indexes:
            index.create(connection)
    with store.engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def _insert(connection: sa.Connection, batch: list[dict[str, Any]]) -> None:
    """Rows straight to the driver's ``executemany`` (JSON pre-serialised): the fast path for a bulk load."""
    columns = [c.name for c in exchanges.columns]
    placeholders = ", ".join("?" if connection.dialect.paramstyle == "qmark" else "%s" for _ in columns)
    sql = f"INSERT INTO exchanges ({', '.join(columns)}) VALUES ({placeholders})"
    rows = [
        tuple(json.dumps(row[c]) if c in ("request", "attributes") else row[c] for c in columns) for row in batch
    ]
    connection.exec_driver_sql(sql, rows)


def cursor_at(store: SqlExchangeStore, offset: int) -> str:
    c = exchanges.c
    query = sa.select(c.created_at, c.id).order_by(c.created_at.desc(), c.id.desc()).offset(offset).limit(1)
    with store.engine.connect() as connection:
        created, exchange_id = connection.execute(query).one()
    return f"{created!r},{exchange_id}"


def offset_page(store: SqlExchangeStore, offset: int) -> None:
    query = sa.select(exchanges).order_by(exchanges.c.created_at.desc(), exchanges.c.id.desc()).offset(offset).limit(50)
    with store.engine.connect() as connection:
        assert len(connection.execute(query).all()) == 50


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[None]], reps: int) -> list[float]:
    await fn()  # warm-up (template compilation, SQLite page cache)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def run(rows: int, reps: int, data_dir: Path) -> int:
    os.environ[ADMIN_KEY_ENV] = ADMIN_KEY
    settings = Settings(
        data_dir=data_dir,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        gateway=GatewaySettings(admin_key_env=ADMIN_KEY_ENV),
    )
    store = SqlExchangeStore(settings.store_url)
    store.migrate()
    fill_s = fill(store, rows)
    print(f"inserted {rows:,} exchanges in {fill_s:.1f} s ({rows / fill_s:,.0f}/s)")
    deep = cursor_at(store, int(rows * 0.9))
    offset = int(rows * 0.9)
    app = create_app(lambda: build_stack(settings))
    results: list[tuple[str, list[float], bool]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            login = await client.post("/login", data={"key": ADMIN_KEY})
            assert login.status_code == 303, login.text

            def page(url: str, expect: int | None = 50) -> Callable[[], Awaitable[None]]:
                async def get() -> None:
                    r = await client.get(url)
                    assert r.status_code == 200, r.text[:300]
                    if expect is not None:
                        found = len(re.findall(r'<tr data-exchange="', r.text))
                        assert found == expect, f"{url}: {found} rows"

                return get

            cases = [
                ("first page", "/exchanges", 50),
                ("filtered: model + status", "/exchanges?model=gpt-4o&outcome=error", 50),
                ("filtered: guard blocked", "/exchanges?guard=block", 50),
                ("deep page (keyset, 90%)", f"/exchanges?after={deep}", 50),
                ("unindexed filter: latency >= 2.9 s", "/exchanges?min_ms=2900", None),
                ("no match: latency >= 1000 s (a full scan window)", "/exchanges?min_ms=1000000", 0),
            ]
            for name, url, expect in cases:
                results.append((name, await timed(page(url, expect), reps), True))
            results.append(("dashboard 24h (no target)", await timed(page("/dashboard?period=24h", None), max(5, reps // 3)), False))
            results.append(("dashboard 30d (no target)", await timed(page("/dashboard?period=30d", None), 3), False))

    async def offset_anchor() -> None:
        await asyncio.to_thread(offset_page, store, offset)

    async def list_anchor() -> None:
        await asyncio.to_thread(store.list_exchanges, limit=50)

    anchor_offset = await timed(offset_anchor, reps)
    anchor_list = await timed(list_anchor, reps)
    store.close()
    base = statistics.median(anchor_offset)
    print(f"\nConsole exchange list, {rows:,} exchanges in SQLite, {reps} renders each (ms, in-process server time)\n")
    print("| page | p50 | p95 | p50 / OFFSET anchor | target ≤ 300 ms |")
    print("|---|---:|---:|---:|---|")
    failed = False
    for name, times, targeted in results:
        p50, p95 = statistics.median(times), pct(times, 95)
        verdict = "–"
        if targeted:
            ok = p95 <= TARGET_MS
            failed |= not ok
            verdict = "ok" if ok else "MISSED"
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / base:.2f} | {verdict} |")
    print(f"| anchor: SQL OFFSET {offset:,} LIMIT 50 | {base:.1f} | {pct(anchor_offset, 95):.1f} | 1.00 | – |")
    print(f"| anchor: store.list_exchanges(50) | {statistics.median(anchor_list):.1f} | {pct(anchor_list, 95):.1f} | {statistics.median(anchor_list) / base:.2f} | – |")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiestack-bench-console-") as tmp:
        sys.exit(asyncio.run(run(args.rows, args.reps, Path(tmp))))


if __name__ == "__main__":
    main()
