"""The embedded model's speed-ups, each measured on and off in the same run.

Two sections (``--sections prefix,lookup``):

* **prefix** — prompt (KV-cache) prefix reuse. Pairs of requests share a ~1,000-token prefix (a
  system prompt / RAG template made of this repository's docs) and differ in the question. The first
  request of a pair follows a request with another prefix (cold); the second reuses the first's
  prefix. Measured with ``prefix_cache = true`` (the default) and ``false``, through
  ``LlamaCppModel.stream``. Target: TTFT of the second ≤ 1/3 of the first's (p50 over pairs).
* **lookup** — prompt-lookup speculative decoding on RAG answers: ``docs/`` is ingested into a
  temporary data directory (collection ``aiestack-docs``, as in the README), and each question is asked
  through the full stack (``stack.chat`` with the collection, as ``aiestack ask`` does, temperature 0)
  once with ``prompt_lookup = 10`` and once with ``prompt_lookup = 0`` (the default), alternating which
  goes first. Decode tokens/s is ``(tokens - 1) / (last text - first text)`` at the consumer.
  Target: ≥ 1.3× tokens/s with prompt lookup (ratio of the p50s; the per-question ratios are shown too).
  The table says whether both runs produced the same text (they should, up to floating-point ties).

Exits 1 when a target is missed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embedded_speedups.py [--sections prefix,lookup] [--pairs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig, _available_cpus
from aiestack.types import ChatRequest, Message, Params

ROOT = Path(__file__).resolve().parent.parent
PREFIX_TARGET = 1 / 3
LOOKUP_TARGET = 1.3
QUESTIONS = (
    "How do I revoke an API key?",
    "What does the semantic cache verifier reject?",
    "How do I point aiestack at an OpenAI-compatible server?",
    "Which stores can hold documents?",
    "How are prompt versions labelled?",
    "What does the circuit breaker do?",
    "How do I ingest a folder of documents?",
    "What is recorded for each exchange?",
)


@dataclass(frozen=True, slots=True)
class Run:
    ttft_ms: float
    tokens_per_s: float
    tokens: int
    text: str


async def timed(stream_of_deltas: object) -> Run:
    """Consume a delta stream; time TTFT (from the call) and the decode rate between first and last text."""
    started = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    tokens = 0
    async for delta in stream_of_deltas:  # type: ignore[attr-defined]
        if delta.text:
            last = time.perf_counter()
            first = first or last
            pieces.append(delta.text)
        if delta.usage is not None:
            tokens = delta.usage.output_tokens
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")
    return Run((first - started) * 1000, rate, tokens, "".join(pieces))


def prefixes(n: int, tokens: int) -> list[str]:
    """``n`` different prefixes of about ``tokens`` tokens each, cut from the docs (≈ 4 characters a token)."""
    text = " ".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    size = tokens * 4
    out = []
    for i in range(n):
        start = (i * size // 2) % max(1, len(text) - size)
        out.append(
            "You answer questions about aiestack from its documentation below.\n\n"
            + text[start : start + size]
        )
    return out


async def section_prefix(pairs: int, threads: int) -> bool:
    print("## prefix — TTFT of a second request that shares a ~1,000-token prefix\n")
    texts = prefixes(pairs + 1, 1000)
    rows = []
    for enabled in (True, False):
        model = LlamaCppModel(
            LlamaCppModelConfig(prefix_cache=enabled, n_ctx=4096, n_threads=threads, chat_format="raw")
        )
        await model.check("gemma")
        first, second, lengths = [], [], []

        def req(prefix: str, q: str) -> ChatRequest:
            content = f"{prefix}\n\nQuestion: {q}\nAnswer:"
            return ChatRequest(
                model="gemma",
                messages=(Message("user", content),),
                params=Params(temperature=0, max_tokens=8, seed=1),
            )

        await timed(model.stream(req(texts[-1], QUESTIONS[0])))  # warm-up, with a prefix no pair uses
        for i in range(pairs):
            a = await timed(model.stream(req(texts[i], QUESTIONS[0])))
            b = await timed(model.stream(req(texts[i], QUESTIONS[1])))
            first.append(a.ttft_ms)
            second.append(b.ttft_ms)
        llm = model._llm
        assert llm is not None
        lengths.append(len(llm.tokenize(req(texts[0], QUESTIONS[0]).messages[0].content.encode())))  # type: ignore[union-attr]
        await model.aclose()
        f, s = statistics.median(first), statistics.median(second)
        rows.append((enabled, f, s, s / f, lengths[0]))
    print(
        f"Gemma 3 270M Q4_K_M, {threads} threads, {pairs} pairs, prompt ≈ {rows[0][4]} tokens, load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| prefix_cache | first TTFT p50 (ms) | second TTFT p50 (ms) | second / first |")
    print("|---|---:|---:|---:|")
    for enabled, f, s, ratio, _ in rows:
        print(f"| {'on (default)' if enabled else 'off'} | {f:.1f} | {s:.1f} | {ratio:.3f} |")
    ok = rows[0][3] <= PREFIX_TARGET
    print(
        f"\nsecond / first with reuse: {rows[0][3]:.3f} (target ≤ {PREFIX_TARGET:.3f}) {'ok' if ok else 'MISSED'}\n"
    )
    return ok


async def section_lookup(questions: int, threads: int, max_tokens: int) -> bool:
    from aiestack.build import open_stack
    from aiestack.context.ingest import ingest
    from aiestack.context.stage import COLLECTION_METADATA
    from aiestack.settings import Settings

    print("## lookup — prompt-lookup decoding on RAG answers (docs/ collection, full stack)\n")
    with tempfile.TemporaryDirectory() as tmp:
        common = {"provider": "llama_cpp", "n_threads": threads, "n_ctx": 4096}
        settings = Settings(
            data_dir=Path(tmp),
            embedded_model=False,
            default_model="lookup-on",
            models={
                "lookup-on": {**common, "prompt_lookup": 10},
                "lookup-off": {**common, "prompt_lookup": 0},
            },
            cache={"enabled": False},
        )
        async with open_stack(settings) as stack:
            started = time.perf_counter()
            await ingest([str(ROOT / "docs")], "aiestack-docs", stack.documents, stack.embeddings)
            print(
                f"ingested docs/ in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.2f}\n"
            )
            runs: dict[str, list[Run]] = {"lookup-on": [], "lookup-off": []}

            async def ask(model: str, question: str) -> Run:
                request = ChatRequest(
                    model=model,
                    messages=(Message("user", question),),
                    params=Params(temperature=0, max_tokens=max_tokens, seed=1),
                    stream=True,
                    metadata={COLLECTION_METADATA: "aiestack-docs"},
                )
                ex = await stack.chat(request)
                assert ex.completion is not None and ex.completion.stream is not None
                return await timed(ex.completion.stream)

            for name in runs:  # warm-up: load both models
                await ask(name, QUESTIONS[-1])
            for i, q in enumerate(QUESTIONS[:questions]):
                order = ("lookup-on", "lookup-off") if i % 2 == 0 else ("lookup-off", "lookup-on")
                for name in order:
                    runs[name].append(await ask(name, q))
    print(
        f"Gemma 3 270M Q4_K_M, {threads} threads, temperature 0, up to {max_tokens} tokens, {questions} questions\n"
    )
    print("| question | tokens on / off | tokens/s off | tokens/s on | ratio | same text |")
    print("|---|---:|---:|---:|---:|---|")
    for q, on, off in zip(QUESTIONS, runs["lookup-on"], runs["lookup-off"], strict=False):
        print(
            f"| {q} | {on.tokens} / {off.tokens} | {off.tokens_per_s:.1f} | {on.tokens_per_s:.1f} "
            f"| {on.tokens_per_s / off.tokens_per_s:.2f} | {'yes' if on.text == off.text else 'no'} |"
        )
    on_p50 = statistics.median(r.tokens_per_s for r in runs["lookup-on"])
    off_p50 = statistics.median(r.tokens_per_s for r in runs["lookup-off"])
    ratio = on_p50 / off_p50
    ttft_on = statistics.median(r.ttft_ms for r in runs["lookup-on"])
    ttft_off = statistics.median(r.ttft_ms for r in runs["lookup-off"])
    print(
        f"\np50 tokens/s: on {on_p50:.1f}, off {off_p50:.1f}; TTFT p50 on {ttft_on:.0f} ms, off {ttft_off:.0f} ms"
    )
    ok = ratio >= LOOKUP_TARGET
    print(
        f"tokens/s ratio on / off: {ratio:.2f} (target ≥ {LOOKUP_TARGET}) {'ok' if ok else 'MISSED'}; load average {os.getloadavg()[0]:.2f}\n"
    )
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sections", default="prefix,lookup")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = args.threads or _available_cpus()
    sections = set(args.sections.split(","))
    ok = True
    if "prefix" in sections:
        ok &= await section_prefix(args.pairs, threads)
    if "lookup" in sections:
        ok &= await section_lookup(args.questions, threads, args.max_tokens)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
