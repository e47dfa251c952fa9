"""Memory soak: does the gateway's memory level off under a steady load? (issue #13, defect 6)

Runs the app in this process (uvicorn on 127.0.0.1, a free port) on the ``fake`` model with the
default stages (tracing to SQLite, guards, caches), and a closed loop of ``--concurrency`` clients
sending ``--requests`` chat requests, every question different (cache misses, as in a soak). It
prints RSS and Python heap (tracemalloc) after a warm-up and after each of ``--rounds`` equal
rounds, the bytes per request each round added, and the allocation sites that grew most over the
measured rounds. The anchor is the first measured round: a leak keeps adding about the same per
round; a bounded structure stops adding once full.

    .venv/bin/python bench/soak_memory.py --requests 4000 --rounds 4 --concurrency 16

Bounded in count and time (``--max-seconds``), loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import uvicorn

from aiestack.build import build_stack
from aiestack.server.app import create_app
from aiestack.settings import Settings


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


#: With ``--known-words`` every question is a new combination of these (no new words at all).
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")


def question(i: int, known_words: bool) -> str:
    if not known_words:
        return f"question number {i} about topic {i % 97}"
    n = len(WORDS)
    return f"question {WORDS[i % n]} {WORDS[i // n % n]} {WORDS[i // n // n % n]} {WORDS[i // n // n // n % n]}"


async def load(url: str, start: int, count: int, concurrency: int, deadline: float, known_words: bool = False) -> int:
    sent = 0
    next_id = start

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, next_id
        while sent < count and time.monotonic() < deadline:
            i = next_id
            next_id += 1
            sent += 1
            body = {"model": "fake", "messages": [{"role": "user", "content": question(i, known_words)}]}
            r = await client.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per measured round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--known-words", action="store_true",
                        help="questions from a fixed vocabulary (isolates growth other than the word cache)")
    parser.add_argument("--tracebacks", type=int, default=0, help="print the whole traceback of this many top sites")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="aiestack-soak-"))
    settings = Settings(data_dir=data, embedded_model=False, default_model="fake", models={"fake": {"provider": "fake"}})
    app = create_app(lambda: build_stack(settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    deadline = time.monotonic() + args.max_seconds

    tracemalloc.start(25 if args.tracebacks else 8)
    asyncio.run(load(url, 0, args.warmup, args.concurrency, deadline, args.known_words))
    gc.collect()
    base = tracemalloc.take_snapshot()
    rows = [("warm-up", args.warmup, rss_mb(), tracemalloc.get_traced_memory()[0] / 2**20)]
    done = args.warmup
    for r in range(args.rounds):
        sent = asyncio.run(load(url, done, args.requests, args.concurrency, deadline, args.known_words))
        done += sent
        gc.collect()
        rows.append((f"round {r + 1}", sent, rss_mb(), tracemalloc.get_traced_memory()[0] / 2**20))
    last = tracemalloc.take_snapshot()
    server.should_exit = True
    thread.join(timeout=30)

    print(f"{'':10} {'requests':>9} {'RSS MB':>8} {'heap MB':>8} {'heap B/req':>11} {'ratio to round 1':>17}")
    anchor = None
    for i, (name, sent, rss, heap) in enumerate(rows):
        per = None
        if i > 0 and sent:
            per = (heap - rows[i - 1][3]) * 2**20 / sent
            anchor = per if anchor is None else anchor
        ratio = f"{per / anchor:.2f}" if per is not None and anchor else ""
        print(f"{name:10} {sent:9d} {rss:8.1f} {heap:8.2f} {per if per is not None else float('nan'):11.1f} {ratio:>17}")
    print(f"\nGrowth over the measured rounds ({done - args.warmup} requests), by allocation site:")
    for stat in last.compare_to(base, "traceback")[: args.top]:
        if stat.size_diff <= 0:
            continue
        frame = next((f for f in stat.traceback if "aiestack" in f.filename), stat.traceback[0])
        print(f"  {stat.size_diff / 1024:9.1f} KiB {stat.count_diff:+7d} blocks  {frame.filename}:{frame.lineno}")
    for stat in last.compare_to(base, "traceback")[: args.tracebacks]:
        print(f"\n{stat.size_diff / 1024:.1f} KiB {stat.count_diff:+d} blocks:")
        for line in stat.traceback.format()[-30:]:
            print("   ", line)


if __name__ == "__main__":
    main()
