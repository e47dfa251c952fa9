"""Evaluation runner throughput: bounded concurrency against its ideal, and a cached re-run.

(a) A fake model with a fixed 50 ms latency (one-word replies, one 50 ms pause each), 200 examples
    at concurrency 16: the anchor is the ideal 200 × 50 / 16 ms = 625 ms; target: within +1.5 s.
(b) A re-run of 1,000 examples answered entirely from the call cache (metrics included): target ≤ 5 s.

Everything goes through the real pipeline and a real SQLite store in a temporary data directory.
Run: ``.venv/bin/python bench/evals.py``; exits 1 if a target is missed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from aiestack.build import open_stack
from aiestack.evals.call_cache import CallCache
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner
from aiestack.evals.suite import parse_suite
from aiestack.settings import Settings


def _suite(folder: Path, n: int, concurrency: int) -> tuple[object, list[object]]:
    path = folder / f"data-{n}.jsonl"
    path.write_text(
        "\n".join(json.dumps({"q": f"word{i}", "a": f"word{i}"}) for i in range(n)), encoding="utf-8"
    )
    suite = parse_suite(
        {
            "name": f"bench-{n}",
            "dataset": {"path": path.name, "input": "q", "reference": "a"},
            "systems": [{"name": "fake", "model": "fake"}],
            "metrics": [{"name": "exact_match"}, {"name": "token_f1"}, {"name": "latency"}],
            "concurrency": concurrency,
        },
        base_dir=folder,
    )
    return suite, list(load_examples(suite.dataset, suite.dataset_path))


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows: list[tuple[str, float, float, float, bool]] = []
        slow = Settings(
            data_dir=folder / "a",
            embedded_model=False,
            default_model="fake",
            models={"fake": {"provider": "fake", "delay_s": 0.05}},
        )
        async with open_stack(slow) as stack:
            suite, examples = _suite(folder, 200, 16)
            started = time.perf_counter()
            result = await EvalRunner(stack.chat, stack.store, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)  # type: ignore[arg-type]
            wall = time.perf_counter() - started
            assert result.calls == 200
            ideal = 200 * 0.05 / 16
            rows.append(("200 × 50 ms at concurrency 16", wall, ideal, ideal + 1.5, wall <= ideal + 1.5))
        fast = Settings(
            data_dir=folder / "b",
            embedded_model=False,
            default_model="fake",
            models={"fake": {"provider": "fake"}},
        )
        async with open_stack(fast) as stack:
            suite, examples = _suite(folder, 1000, 64)
            cache = CallCache(folder / "b" / "eval_cache.db")
            await EvalRunner(stack.chat, stack.store, cache=cache, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)  # type: ignore[arg-type]
            started = time.perf_counter()
            again = await EvalRunner(stack.chat, stack.store, cache=cache, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)  # type: ignore[arg-type]
            wall = time.perf_counter() - started
            cache.close()
            assert again.calls == 0 and again.cache_hits == 1000
            rows.append(("cached re-run of 1,000 examples", wall, 0.0, 5.0, wall <= 5.0))
    table = Table(title="bench/evals.py", header_style="bold")
    for col in ("case", "wall s", "ideal s", "target s", "ratio to target", "ok"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for case, wall, ideal, target, ok in rows:
        table.add_row(
            case,
            f"{wall:.3f}",
            f"{ideal:.3f}",
            f"≤ {target:.3f}",
            f"{wall / target:.2f}",
            "yes" if ok else "NO",
        )
    Console().print(table)
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
