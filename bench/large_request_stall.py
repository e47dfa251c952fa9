"""Does one large request stall the others? (issue #13, defect 1)

Serves the app in a subprocess-free uvicorn thread on 127.0.0.1 (the ``fake`` model, default guards:
secrets and PII redaction, injection set to flag so that the repeated text is answered) and polls ``GET /health`` every 20 ms while one chat request
with a ``--chars``-character user message (prose with e-mail addresses and phone numbers, the worst
realistic case for the PII check) is checked and answered. Prints the /health latency while idle
(the anchor) and during the large request, and their ratio.

    .venv/bin/python bench/large_request_stall.py --chars 1000000

Before the fix the checks ran on the event loop: /health waited for all of them (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from aiestack.build import build_stack
from aiestack.server.app import create_app
from aiestack.settings import Settings

SENTENCE = "Please write to jane.doe@example.com or call +1 415-555-2671 about the order we discussed. "


async def poll(client: httpx.AsyncClient, url: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        (await client.get(f"{url}/health")).raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)
    return latencies


async def run(url: str, chars: int, idle_s: float) -> tuple[list[float], list[float], float]:
    async with httpx.AsyncClient(timeout=300) as client:
        stop = asyncio.Event()
        idle_task = asyncio.create_task(poll(client, url, stop))
        await asyncio.sleep(idle_s)
        stop.set()
        idle = await idle_task
        stop = asyncio.Event()
        busy_task = asyncio.create_task(poll(client, url, stop))
        text = (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]
        started = time.perf_counter()
        r = await client.post(f"{url}/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": text}]})
        took = time.perf_counter() - started
        stop.set()
        busy = await busy_task
        if r.status_code != 200:
            raise SystemExit(f"the large request failed: {r.status_code} {r.text[:300]}")
        return idle, busy, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--all-inline", action="store_true",
                        help="run every offloadable check on the event loop, as before the fix (the anchor)")
    args = parser.parse_args()
    if args.all_inline:
        import aiestack.offload

        aiestack.offload.INLINE_MAX_CHARS = 10**12
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="aiestack-stall-")), embedded_model=False,
                        default_model="fake", models={"fake": {"provider": "fake"}},
                        guards={"injection": "flag"})  # repeated text reads as an attack; let it through
    app = create_app(lambda: build_stack(settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        idle, busy, took = asyncio.run(run(url, args.chars, args.idle_s))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    print(f"one request of {args.chars:,} characters answered in {took:.2f} s")
    print(f"{'GET /health':24} {'n':>5} {'p50 ms':>8} {'max ms':>8}")
    for name, values in (("idle (anchor)", idle), ("during the large request", busy)):
        print(f"{name:24} {len(values):5d} {statistics.median(values):8.1f} {max(values):8.1f}")
    print(f"max during / max idle: {max(busy) / max(idle):.1f}x; "
          f"max during / time of the large request: {max(busy) / 1000 / took:.3f}")


if __name__ == "__main__":
    main()
