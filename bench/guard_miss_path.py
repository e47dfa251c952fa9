"""In-process cost of a cache miss in the default configuration, and what the injection guard adds to it.

``stack.chat`` on the ``fake`` model at temperature 0 with a new prompt every time (the semantic
cache looks up and misses, the guards judge a text they have not seen): p50 and p90 per request, in
four configurations: the default, the default with no injection classifier head
(``[guards.injection] heads = []``), with the ``lexical`` head (no embedding model) instead of the default
``static``, and guards off. Each (checkout, configuration) runs in its own
child process, in alternating rounds, so checkouts are compared in one run on the same machine:
``--src`` names the ``src`` folders of other checkouts (e.g. a ``git worktree`` of the commit before a
change); this checkout's is always measured.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/guard_miss_path.py [--src /tmp/before/src] [--rounds 3] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS: dict[str, dict[str, object]] = {
    "default": {},
    "injection heads = []": {"injection": {"heads": []}},
    "injection heads = [lexical]": {"injection": {"heads": ["lexical"]}},
    "guards off": {"enabled": False},
}
_WORDS = [
    "account",
    "invoice",
    "refund",
    "order",
    "shipping",
    "weather",
    "river",
    "capital",
    "museum",
    "recipe",
    "garden",
    "battery",
    "engine",
    "contract",
    "holiday",
    "budget",
    "history",
    "planet",
    "theorem",
    "protein",
    "language",
    "guitar",
    "mountain",
    "ticket",
]


def prompts(n: int, seed: int) -> list[str]:
    """``n`` distinct questions of 8-30 words (seeded): every one a cache miss and new to the guards."""
    rng = random.Random(seed)
    return [
        f"Question {seed}-{i}: " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 30))) + "?"
        for i in range(n)
    ]


async def _measure(config: str, requests: int, warmup: int) -> list[float]:
    from aiestack import Settings, build_stack
    from aiestack.types import ChatRequest, Message, Params

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="aiestack-miss-")),
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        guards=CONFIGS[config],
    )
    stack = build_stack(settings)
    await stack.warm()
    ms = []
    for i, text in enumerate(prompts(warmup + requests, seed=os.getpid())):
        request = ChatRequest(model="fake", messages=(Message("user", text),), params=Params(temperature=0.0))
        start = time.perf_counter()
        await stack.chat(request)
        if i >= warmup:
            ms.append((time.perf_counter() - start) * 1000)
    await stack.aclose()
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", action="append", default=[], help="the src folder of another checkout to measure"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(_measure(args.child, args.requests, args.warmup))))
        return
    here = str(Path(__file__).resolve().parents[1] / "src")
    checkouts = [here, *args.src]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for _ in range(args.rounds):
        for src in checkouts:
            for config in CONFIGS:
                env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1"}
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    config,
                    "--requests",
                    str(args.requests),
                    "--warmup",
                    str(args.warmup),
                ]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                ms = json.loads(out.strip().splitlines()[-1])
                q = statistics.quantiles(ms, n=10)
                results.setdefault((src, config), []).append((statistics.median(ms), q[8]))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("\n| checkout | configuration | p50 ms (median of rounds) | p90 ms | rounds' p50 |")
    print("|---|---|---:|---:|---|")
    for (src, config), rounds in results.items():
        p50 = statistics.median(r[0] for r in rounds)
        p90 = statistics.median(r[1] for r in rounds)
        label = "this" if src == here else src
        print(f"| {label} | {config} | {p50:.3f} | {p90:.3f} | {', '.join(f'{r[0]:.2f}' for r in rounds)} |")


if __name__ == "__main__":
    main()
