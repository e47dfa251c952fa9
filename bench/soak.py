"""Soak: aiestack serving a steady mixed load for 10 minutes, watched for errors, memory growth and p99 drift.

Everything runs on 127.0.0.1 as separate processes: the fake OpenAI-compatible upstream
(``python -m aiestack.testing.upstream``), ``aiestack serve`` in its default configuration (SQLite
store and tracing, in-process limits, exact + semantic cache with the packaged MiniLM, default
guardrails; keys required so the Limits stage runs) with one ``openai`` model pointing at the
upstream, and this load generator. The load is paced (``--rps``, open loop) and mixed: whole
answers and streams, new questions (cache misses), repeated ones (exact hits) and long answers.

The anchor is the same process after warm-up: its resident memory (RSS, process tree) and its p99
latency in the first measured window. Targets, checked at the end (exit 1 when one is missed):

- 0 errors (any non-200, a broken stream, a timeout);
- RSS growth < 5% from the end of warm-up to the end;
- p99 stable: the last window's p99 ≤ 1.5 × the first measured window's (windows of 60 s).

    .venv/bin/python bench/soak.py                       # 10 minutes at 10 req/s after a 60 s warm-up
    .venv/bin/python bench/soak.py --minutes 2 --rps 30  # a shorter look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aiestack.testing.cluster import ServerProcess, clean_env, free_port, gateway_command, upstream_command

ADMIN_KEY = "soak-admin-key"
WINDOW_S = 60.0
TARGET_RSS_GROWTH = 0.05
TARGET_P99_RATIO = 1.5


@dataclass
class Window:
    started: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    rss_mb: float = 0.0

    def p(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (MB)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


async def one_request(client: httpx.AsyncClient, url: str, key: str, i: int) -> None:
    kind = i % 10
    question = f"question {i}" if kind < 5 else f"popular question {i % 20}"  # half repeat: cache hits
    if kind == 9:
        question = "please write a long answer about trains " * 20
    body = {"model": "mock", "messages": [{"role": "user", "content": question}], "temperature": 0,
            "stream": kind % 2 == 1}
    headers = {"authorization": f"Bearer {key}"}
    if not body["stream"]:
        response = await client.post(url, json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        done = False
        async for line in response.aiter_lines():
            done = done or line == "data: [DONE]"
        if not done:
            raise RuntimeError("the stream ended without [DONE]")


async def drive(url: str, key: str, pid: int, *, rps: float, warmup_s: float, seconds: float) -> list[Window]:
    windows: list[Window] = []
    warm = Window(time.monotonic())
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.monotonic()
        end = start + warmup_s + seconds
        tasks: set[asyncio.Task[None]] = set()
        i = 0

        async def timed(i: int, window: Window) -> None:
            t0 = time.perf_counter()
            try:
                await one_request(client, url, key, i)
                window.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except Exception as exc:
                window.errors += 1
                print(f"error (request {i}, kind {i % 10}): {type(exc).__name__}: {exc}", file=sys.stderr)

        while (now := time.monotonic()) < end:
            measuring = now - start >= warmup_s
            if measuring and (not windows or now - windows[-1].started >= WINDOW_S):
                if windows:
                    windows[-1].rss_mb = rss_mb(pid)
                else:
                    warm.rss_mb = rss_mb(pid)
                windows.append(Window(now))
                print(f"[{now - start:6.0f} s] window {len(windows)} · RSS {rss_mb(pid):.0f} MB", file=sys.stderr)
            task = asyncio.create_task(timed(i, windows[-1] if measuring else warm))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, start + i / rps - time.monotonic()))
        await asyncio.gather(*tasks)
        if windows:
            windows[-1].rss_mb = rss_mb(pid)
    return [warm, *windows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="Measured time after the warm-up.")
    parser.add_argument("--warmup", type=float, default=60.0, help="Warm-up seconds (not measured).")
    parser.add_argument("--rps", type=float, default=10.0,
                        help="Requests per second (open loop); keep it below what the machine serves (bench/README.md).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aiestack-soak-"))
    up_port, gw_port = free_port(), free_port()
    config = work / "aiestack.toml"
    config.write_text(
        'default_model = "mock"\nembedded_model = false\n[gateway]\nauth = "required"\n'
        f'[models.mock]\nprovider = "openai"\nmodel = "up-soak"\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
        'api_key_env = ""\n',
        encoding="utf-8",
    )
    env = clean_env(AIESTACK_CONFIG=str(config), AIESTACK_DATA_DIR=str(work / "data"),
                    AIESTACK_ADMIN_KEY=ADMIN_KEY, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with ServerProcess("upstream", upstream_command(up_port), port=up_port, log=work / "upstream.log",
                       env=clean_env(), ready_path="/stats"), \
         ServerProcess("aiestack", gateway_command(gw_port), port=gw_port, log=work / "aiestack.log", env=env,
                       ready_path="/ready") as gateway:
        created = httpx.post(f"{gateway.url}/admin/keys", json={"tenant": "soak", "rpm": 1_000_000},
                             headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        created.raise_for_status()
        windows = asyncio.run(drive(f"{gateway.url}/v1/chat/completions", created.json()["key"], gateway.pid,
                                    rps=args.rps, warmup_s=args.warmup, seconds=args.minutes * 60))
    warm, measured = windows[0], windows[1:]
    errors = sum(w.errors for w in windows)
    requests = sum(len(w.latencies_ms) + w.errors for w in windows)
    growth = measured[-1].rss_mb / warm.rss_mb - 1
    p99_ratio = measured[-1].p(0.99) / measured[0].p(0.99)
    print(f"\nsoak: {args.minutes:g} min at {args.rps:g} req/s after {args.warmup:g} s warm-up; "
          f"{requests} requests, load average {os.getloadavg()[0]:.1f}\n")
    print("| window | requests | errors | p50 ms | p99 ms | RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| warm-up | {len(warm.latencies_ms)} | {warm.errors} | {warm.p(0.5):.1f} | {warm.p(0.99):.1f} | {warm.rss_mb:.0f} |")
    for n, w in enumerate(measured, 1):
        print(f"| {n} | {len(w.latencies_ms)} | {w.errors} | {w.p(0.5):.1f} | {w.p(0.99):.1f} | {w.rss_mb:.0f} |")
    checks = [
        (f"errors: {errors} (target 0)", errors == 0),
        (f"RSS growth after warm-up: {growth:+.1%} (target < {TARGET_RSS_GROWTH:.0%})", growth < TARGET_RSS_GROWTH),
        (f"p99 last / first window: {p99_ratio:.2f} (target ≤ {TARGET_P99_RATIO})", p99_ratio <= TARGET_P99_RATIO),
    ]
    print()
    for line, ok in checks:
        print(f"{line} {'ok' if ok else 'MISSED'}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
