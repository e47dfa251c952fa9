"""What the Prompt stage and the implicit-feedback Signals stage add to a request.

In one process, on the same machine, each variant is a fresh stack (SQLite store in a temporary
directory, the fake model, tracing on as by default, guardrails and caches off so that only the
stages measured differ) driven by ``stack.chat`` one request at a time:

- anchor: a route without a prompt, implicit feedback off;
- prompt: the same route with ``prompt = "support@production"`` (label lookups cached 1 s);
- prompt, no cache: ``prompts.label_cache_s = 0`` (one store read per request);
- signals: implicit feedback on; its matching runs in a background thread after each answer, so
  the table shows the request's own latency and, separately, the time per request including
  waiting for that background work to finish (``drain``).

    .venv/bin/python bench/prompts_feedback.py            # --requests 2000 --warmup 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiestack.build import Stack, build_stack
from aiestack.settings import Settings
from aiestack.types import ChatRequest, Message

TEMPLATE = "You are the support assistant of {{ product }} for {{ tenant }}. Today is {{ today }}. Be brief."


def _settings(data: Path, *, prompt: bool, implicit: bool, label_cache_s: float = 1.0) -> Settings:
    route: dict[str, Any] = {"deployments": ["fake"]}
    if prompt:
        route["prompt"] = "support@production"
    return Settings(
        data_dir=data,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        routes={"help": route},
        feedback={"implicit": implicit},  # type: ignore[arg-type]
        prompts={"label_cache_s": label_cache_s},  # type: ignore[arg-type]
        guards={"enabled": False},  # type: ignore[arg-type]
        cache={"enabled": False},  # type: ignore[arg-type]
    )


async def _run(stack: Stack, n: int, warmup: int) -> tuple[list[float], float]:
    if stack.prompts is not None:
        stack.prompts.push("support", TEMPLATE, label="production")
    times: list[float] = []
    for i in range(warmup + n):
        request = ChatRequest(
            model="help",
            messages=(Message("user", f"Question number {i}?"),),
            metadata={"product": "Acme Router"},
        )
        start = time.perf_counter()
        await stack.chat(request)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    drain_start = time.perf_counter()
    if stack.signals is not None:
        await stack.signals.drain()
    return times, time.perf_counter() - drain_start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    variants: list[tuple[str, dict[str, Any]]] = [
        ("anchor (route, no prompt, signals off)", {"prompt": False, "implicit": False}),
        ("prompt@label, cached 1 s", {"prompt": True, "implicit": False}),
        ("prompt@label, no cache", {"prompt": True, "implicit": False, "label_cache_s": 0.0}),
        ("signals on (implicit feedback)", {"prompt": False, "implicit": True}),
    ]
    rows = []
    for name, options in variants:
        with tempfile.TemporaryDirectory() as tmp:
            stack = build_stack(_settings(Path(tmp), **options))
            try:
                times, drain = await _run(stack, args.requests, args.warmup)
            finally:
                await stack.aclose()
        total = sum(times) + drain
        rows.append((name, statistics.median(times) * 1e6, _p95(times) * 1e6, total / len(times) * 1e6))
    anchor = rows[0][1]
    anchor_total = rows[0][3]
    print(f"\n{args.requests} sequential requests per variant (after {args.warmup} warm-up), fake model, SQLite store\n")
    print("| variant | p50 (µs) | p95 (µs) | per request incl. background (µs) | p50 ratio | incl. background ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, p50, p95, per in rows:
        print(f"| {name} | {p50:.0f} | {p95:.0f} | {per:.0f} | {p50 / anchor:.2f} | {per / anchor_total:.2f} |")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


if __name__ == "__main__":
    asyncio.run(main())
