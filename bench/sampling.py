"""Test-time compute on routes: self-consistency and best-of-N against single sampling, on GSM8K (test split).

(a) **Noisy oracle** (``aiestack.testing.noisy.NoisyOracle``): an upstream that is right with a known
    probability ``p`` per sample (else one fixed wrong number, the worst case for a vote). Through a
    route with ``[routes.X.sampling] strategy = "self_consistency"``, the measured accuracy of N votes
    must match what binomial voting predicts (P(Bin(N, p) > N/2), ties to the first answer), within 3
    standard errors; exits 1 if not. Each route sees every GSM8K test question ``--repeats`` times.
(b) **The embedded model** (gemma-3-270m, llama.cpp): single sampling at temperature 0 (greedy), then
    N samples at temperature 0.7 chosen by majority vote (self-consistency) and by highest mean
    logprob (best-of-N), on the first ``--questions`` questions. Reported as measured, whatever it is.
    It is slow on a shared 2-core machine: keep ``--questions`` and ``--n`` small. ``--skip-embedded``, ``--skip-oracle``.

The data is ../shared/data/gsm8k/test.jsonl when present, else the 20-question sample shipped in
examples/evals/data. Run: ``.venv/bin/python bench/sampling.py [--repeats 5] [--questions 10] [--n 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiestack.answers import final_number
from aiestack.build import open_stack
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.noisy import NoisyOracle, majority_accuracy
from aiestack.types import ChatRequest, Message, Params

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
SAMPLE = HERE.parent / "examples" / "evals" / "data" / "gsm8k.jsonl"
PROMPT = "Solve the problem. Think step by step, then give the final answer as '#### <number>'.\n\nProblem: {q}"


def _rows() -> tuple[list[dict[str, Any]], str]:
    path = SHARED if SHARED.is_file() else SAMPLE
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows, str(path.relative_to(HERE.parent.parent)) if path == SHARED else str(path.relative_to(HERE.parent))


async def oracle(rows: list[dict[str, Any]], p: float, ns: list[int], repeats: int) -> bool:
    gold = {r["question"]: final_number(r["answer"]) for r in rows}
    model = NoisyOracle(gold, p)  # type: ignore[arg-type]
    routes: dict[str, Any] = {"n1": {"deployments": ["oracle"], "retries": 0}}
    for n in ns:
        routes[f"n{n}"] = {"deployments": ["oracle"], "retries": 0, "sampling": {"strategy": "self_consistency", "n": n}}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedded_model=False, default_model="oracle", routes=routes, guards={"enabled": False})
        async with open_stack(settings, store=MemoryExchangeStore(), models=[ModelEntry("oracle", model, "oracle")]) as stack:
            ok = True
            print(f"(a) noisy oracle, p = {p} per sample, {len(gold)} questions x {repeats} seeds = {len(gold) * repeats} trials per row")
            print(f"    {'samples':>7}  {'measured':>8}  {'predicted':>9}  {'3 s.e.':>6}  {'gain vs single':>14}")
            single = None
            for n in [1, *ns]:
                right = 0
                for repeat in range(repeats):
                    for question, answer in gold.items():
                        request = ChatRequest(model=f"n{n}", messages=(Message("user", question),), params=Params(seed=1000 * repeat))
                        ex = await stack.chat(request)
                        right += ex.completion is not None and final_number(ex.completion.text) == answer
                trials = repeats * len(gold)
                measured, predicted = right / trials, majority_accuracy(p, n)
                band = 3 * math.sqrt(predicted * (1 - predicted) / trials)
                single = measured if n == 1 else single
                gain = "" if n == 1 else f"{measured - (single or 0):+.3f} (pred. {predicted - p:+.3f})"
                within = abs(measured - predicted) <= band
                ok &= within
                print(f"    {n:>7}  {measured:>8.3f}  {predicted:>9.3f}  {band:>6.3f}  {gain:>14}{'' if within else '  OUTSIDE'}")
    return ok


async def embedded(rows: list[dict[str, Any]], questions: int, n: int, max_tokens: int) -> None:
    rows = rows[:questions]
    routes = {
        "vote": {"deployments": ["gemma-3-270m"], "retries": 0, "timeout_s": None, "sampling": {"strategy": "self_consistency", "n": n}},
        "best": {"deployments": ["gemma-3-270m"], "retries": 0, "timeout_s": None, "sampling": {"strategy": "best_of_n", "n": n, "selector": "logprob"}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), default_model="gemma-3-270m", routes=routes, guards={"enabled": False})
        async with open_stack(settings, store=MemoryExchangeStore()) as stack:
            print(f"(b) embedded gemma-3-270m, {len(rows)} questions, N = {n}, max_tokens = {max_tokens} (absolute times inflated by the shared machine)")
            for label, model, temperature in (("single, greedy", "gemma-3-270m", 0.0), (f"self-consistency N={n}", "vote", None), (f"best-of-{n} logprob", "best", None)):
                right, tokens, started = 0, 0, time.perf_counter()
                for row in rows:
                    params = Params(max_tokens=max_tokens, temperature=temperature, seed=7)
                    ex = await stack.chat(ChatRequest(model=model, messages=(Message("user", PROMPT.format(q=row["question"])),), params=params, metadata={"cache": "off"}))
                    assert ex.completion is not None
                    right += final_number(ex.completion.text) == final_number(row["answer"])
                    tokens += ex.completion.usage.output_tokens
                elapsed = time.perf_counter() - started
                print(f"    {label:<24} accuracy {right}/{len(rows)} = {right / len(rows):.3f}   output tokens {tokens:>6}   {elapsed:7.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=float, default=0.6, help="The oracle's accuracy per sample.")
    parser.add_argument("--ns", default="3,5,9", help="Vote sizes for the oracle.")
    parser.add_argument("--repeats", type=int, default=3, help="Seeds per question for the oracle.")
    parser.add_argument("--questions", type=int, default=8, help="Questions for the embedded model.")
    parser.add_argument("--n", type=int, default=3, help="Samples per question for the embedded model.")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-oracle", action="store_true")
    args = parser.parse_args()
    rows, source = _rows()
    print(f"GSM8K from {source} ({len(rows)} questions)")
    ok = args.skip_oracle or asyncio.run(oracle(rows, args.p, [int(x) for x in args.ns.split(",")], args.repeats))
    if not args.skip_embedded:
        asyncio.run(embedded(rows, args.questions, args.n, args.max_tokens))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
