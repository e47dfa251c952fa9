"""Single flight: a burst of identical requests makes one upstream call, measured against the cache bypassed.

aiestack (in-process, default configuration: exact + semantic cache with single flight, guards,
tracing) on a fake model that streams its answer at a fixed pace (``--piece-ms`` per token, so one
call takes about ``pieces × piece-ms``). For each burst size, N identical requests (temperature 0, a
new question per burst, so the burst starts as a cache miss) are sent at once:

- **single flight**: the default configuration; the first request calls the model, the others wait
  for its answer;
- **anchor**: the same burst with ``metadata.cache = "off"``, so that every request calls the model
  (what happens without single flight, or before this feature).

It prints the upstream calls, the output tokens the provider would bill, and the latency of the
burst's requests (p50, p99, ms) for both, whole and streamed. Exits 1 if a burst made more than one
upstream call with single flight.

    .venv/bin/python bench/single_flight.py          # --bursts 1,8,32,128 --piece-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aiestack.build import open_stack
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.streams import collect
from aiestack.types import ChatRequest, Message, Params

QUESTION = "In one sentence, what does the warranty of the {n}th product cover and for how long"


async def burst(stack: object, model: FakeModel, n: int, size: int, *, stream: bool, bypass: bool) -> tuple[int, int, list[float]]:
    request = ChatRequest(
        model="fake", messages=(Message("user", QUESTION.format(n=n)),), params=Params(temperature=0),
        stream=stream, metadata={"cache": "off"} if bypass else {},
    )
    calls_before = len(model.requests)

    async def one() -> tuple[float, int]:
        t0 = time.perf_counter()
        ex = await stack.chat(request)  # type: ignore[attr-defined]
        assert ex.completion is not None, ex.error
        done = await collect(ex.completion) if stream else ex.completion
        billed = 0 if ex.attributes.get("aiestack.cache") in ("hit", "semantic-hit") else done.usage.output_tokens
        return (time.perf_counter() - t0) * 1000, billed

    results = await asyncio.gather(*(one() for _ in range(size)))
    return len(model.requests) - calls_before, sum(b for _, b in results), [t for t, _ in results]


async def run(sizes: list[int], piece_ms: float) -> int:
    model = FakeModel(default_delay_s=piece_ms / 1000)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedded_model=False, default_model="fake")
        async with open_stack(settings, models=[ModelEntry("fake", model, "fake")]) as stack:
            await stack.warm()
            await burst(stack, model, 0, 2, stream=False, bypass=True)  # warm-up
            print(f"fake model: one call streams {len(QUESTION.split())} tokens, {piece_ms:g} ms apart\n")
            print("| mode | burst | upstream calls (single flight / anchor) | tokens billed | p50 ms | p99 ms | anchor p50 | anchor p99 |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            n = 1
            for stream in (False, True):
                for size in sizes:
                    n += 1
                    calls, billed, lat = await burst(stack, model, n, size, stream=stream, bypass=False)
                    a_calls, a_billed, a_lat = await burst(stack, model, n, size, stream=stream, bypass=True)
                    failed |= calls != 1
                    print(f"| {'stream' if stream else 'whole'} | {size} | {calls} / {a_calls} | {billed} / {a_billed} | "
                          f"{np.percentile(lat, 50):.0f} | {np.percentile(lat, 99):.0f} | "
                          f"{np.percentile(a_lat, 50):.0f} | {np.percentile(a_lat, 99):.0f} |")
    print("\nEvery burst made one upstream call." if not failed else "\nMISSED: a burst made more than one upstream call.")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bursts", default="1,8,32,128")
    parser.add_argument("--piece-ms", type=float, default=20.0)
    args = parser.parse_args()
    return asyncio.run(run([int(b) for b in args.bursts.split(",")], args.piece_ms))


if __name__ == "__main__":
    sys.exit(main())
