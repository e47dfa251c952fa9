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
  once per ``--lookup`` setting (``DRAFT[:NGRAM]`` = ``prompt_lookup``/``prompt_lookup_ngram``,
  default ``10``) and once with ``prompt_lookup = 0`` (the default), each setting going first in turn.
  Decode tokens/s is ``(tokens - 1) / (last text - first text)`` at the consumer; TTFT counts from the
  ``stack.chat`` call. Target: ≥ 1.3× tokens/s with prompt lookup (ratio of the p50s; the per-question
  ratios are shown too). Per answer: whether the text is the same as without lookup (it should be, up
  to floating-point near-ties), the drafting model's steps, drafted and accepted tokens
  (``LlamaCppModel.lookup_stats``) and the answer's self-repeat (a looping answer copies itself); per
  setting, llama.cpp's decode time by batch size and the break-even arithmetic from those timings.

Exits 1 when a target is missed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embedded_speedups.py [--sections prefix,lookup] [--pairs 5] [--lookup 10,3,4:2]
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
from aiestack.models.llama_lookup import LookupStats
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
WARM_UP = "What is aiestack?"  # asked once per model before the measured questions (loads it)


@dataclass(frozen=True, slots=True)
class Run:
    ttft_ms: float
    tokens_per_s: float
    tokens: int
    text: str


async def timed(stream_of_deltas: object, started: float | None = None) -> Run:
    """Consume a delta stream; time TTFT (from ``started``, default now) and the decode rate between first and last text."""
    started = time.perf_counter() if started is None else started
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


def lookup_specs(text: str) -> list[tuple[int, int]]:
    """``"10,3,2:2"`` → [(10, 3), (3, 3), (2, 2)]: ``prompt_lookup`` (max draft) and ``prompt_lookup_ngram``."""
    specs = []
    for part in text.split(","):
        draft, _, ngram = part.strip().partition(":")
        try:
            specs.append((int(draft), int(ngram or 3)))
        except ValueError:
            raise SystemExit(f"--lookup: {part!r} is not DRAFT or DRAFT:NGRAM (e.g. 10,3,2:2)") from None
        if specs[-1][0] < 1 or specs[-1][1] < 2:
            raise SystemExit(f"--lookup: {part!r}: DRAFT ≥ 1 and NGRAM ≥ 2")
    return specs


@dataclass(frozen=True, slots=True)
class Asked:
    run: Run
    stats: LookupStats | None  # the drafting model's counters for this answer


def self_repeat(text: str) -> float:
    """Share of the text's word 4-grams that repeat an earlier one (near 1: the answer loops)."""
    words = text.split()
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams) if grams else 0.0


def decode_ms(stats: list[LookupStats]) -> dict[int, float]:
    """Mean milliseconds of one llama.cpp decode, by batch size, over all the answers' steps."""
    seconds: dict[int, float] = {}
    count: dict[int, int] = {}
    for s in stats:
        for size, t in s.decode_s.items():
            seconds[size] = seconds.get(size, 0.0) + t
            count[size] = count.get(size, 0) + s.decode_n[size]
    return {size: seconds[size] / count[size] * 1000 for size in sorted(seconds)}


async def section_lookup(questions: int, threads: int, max_tokens: int, specs: list[tuple[int, int]]) -> bool:
    from aiestack.build import open_stack
    from aiestack.context.ingest import ingest
    from aiestack.context.stage import COLLECTION_METADATA
    from aiestack.settings import Settings

    print("## lookup — prompt-lookup decoding on RAG answers (docs/ collection, full stack)\n")
    print(f"load average at start {os.getloadavg()[0]:.2f}\n")
    names = {f"lookup-{d}" + ("" if n == 3 else f"-n{n}"): (d, n) for d, n in specs}
    with tempfile.TemporaryDirectory() as tmp:
        common = {"provider": "llama_cpp", "n_threads": threads, "n_ctx": 4096}
        models: dict[str, dict[str, object]] = {
            name: {**common, "prompt_lookup": d, "prompt_lookup_ngram": n} for name, (d, n) in names.items()
        }
        models["lookup-off"] = {**common, "prompt_lookup": 0}
        settings = Settings(
            data_dir=Path(tmp),
            embedded_model=False,
            default_model="lookup-off",
            models=models,
            cache={"enabled": False},
        )
        async with open_stack(settings) as stack:
            started = time.perf_counter()
            await ingest([str(ROOT / "docs")], "aiestack-docs", stack.documents, stack.embeddings)
            print(
                f"ingested docs/ in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.2f}\n"
            )
            order = [*names, "lookup-off"]
            runs: dict[str, list[Asked]] = {name: [] for name in order}

            async def ask(model: str, question: str) -> Asked:
                provider = stack.models.resolve(model).provider
                assert isinstance(provider, LlamaCppModel)
                provider.lookup_stats = stats = LookupStats()
                request = ChatRequest(
                    model=model,
                    messages=(Message("user", question),),
                    params=Params(temperature=0, max_tokens=max_tokens, seed=1),
                    stream=True,
                    metadata={COLLECTION_METADATA: "aiestack-docs"},
                )
                started = time.perf_counter()  # before chat: the stack reads the first delta before it returns
                ex = await stack.chat(request)
                assert ex.completion is not None and ex.completion.stream is not None
                run = await timed(ex.completion.stream, started)
                return Asked(run, stats if provider.config.prompt_lookup else None)

            for name in order:  # warm-up: load every model
                await ask(name, WARM_UP)
            for i, q in enumerate(QUESTIONS[:questions]):
                shift = i % len(order)  # each setting goes first in turn
                for name in order[shift:] + order[:shift]:
                    runs[name].append(await ask(name, q))
    print(
        f"Gemma 3 270M Q4_K_M, {threads} threads, temperature 0, up to {max_tokens} tokens, {questions} questions, "
        f"load average at end {os.getloadavg()[0]:.2f}\n"
    )
    off = runs.pop("lookup-off")
    off_p50 = statistics.median(a.run.tokens_per_s for a in off)
    # Mean ms a token over all plain answers (like the drafting model's mean step time below).
    timed_off = [a.run for a in off if a.run.tokens > 1 and a.run.tokens_per_s > 0]
    plain_ms = sum((r.tokens - 1) / r.tokens_per_s for r in timed_off) / max(1, sum(r.tokens - 1 for r in timed_off)) * 1000
    best = 0.0
    for name, asked in runs.items():
        print(f"### {name} (prompt_lookup = {names[name][0]}, prompt_lookup_ngram = {names[name][1]})\n")
        print(
            "| question | tokens on / off | tokens/s off | tokens/s on | ratio | same text "
            "| steps | drafted | accepted | accepted / drafted | tokens / step | self-repeat |"
        )
        print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for q, on, o in zip(QUESTIONS, asked, off, strict=False):
            st = on.stats
            assert st is not None
            print(
                f"| {q} | {on.run.tokens} / {o.run.tokens} | {o.run.tokens_per_s:.1f} | {on.run.tokens_per_s:.1f} "
                f"| {on.run.tokens_per_s / o.run.tokens_per_s:.2f} | {'yes' if on.run.text == o.run.text else 'no'} "
                f"| {st.steps} | {st.drafted} | {st.accepted} | {st.accepted / max(1, st.drafted):.2f} "
                f"| {(st.steps + st.accepted) / max(1, st.steps):.2f} | {self_repeat(o.run.text):.2f} |"
            )
        on_p50 = statistics.median(a.run.tokens_per_s for a in asked)
        ratio = on_p50 / off_p50
        best = max(best, ratio)
        stats = [a.stats for a in asked if a.stats is not None]
        steps = sum(s.steps for s in stats)
        drafted = sum(s.drafted for s in stats)
        accepted = sum(s.accepted for s in stats)
        step_ms = sum(s.step_s for s in stats) / max(1, steps) * 1000
        per_step = (steps + accepted) / max(1, steps)
        by_size = decode_ms(stats)
        one = by_size.get(1)
        changed = sum(a.run.text != o.run.text for a, o in zip(asked, off, strict=False))
        print(
            f"\np50 tokens/s: on {on_p50:.1f}, off {off_p50:.1f}: ratio **{ratio:.2f}**; {changed} of {len(asked)} "
            f"texts changed; TTFT p50 on {statistics.median(a.run.ttft_ms for a in asked):.0f} ms, "
            f"off {statistics.median(a.run.ttft_ms for a in off):.0f} ms"
        )
        print(
            f"steps {steps}, drafted {drafted}, accepted {accepted} ({accepted / max(1, drafted):.2f} of drafted), "
            f"{per_step:.2f} tokens a step; a step {step_ms:.1f} ms (of which decode "
            f"{sum(sum(s.decode_s.values()) for s in stats) / max(1, steps) * 1000:.1f} ms); "
            f"plain decoding {plain_ms:.1f} ms a token (mean over the answers without lookup)"
        )
        print(
            "decode ms by batch size (tokens checked + 1): "
            + ", ".join(
                f"{size}: {ms:.1f}" + (f" ({ms / one:.2f}×)" if one else "") for size, ms in by_size.items()
            )
        )
        print(
            f"break-even: a step must yield {step_ms / plain_ms:.2f} tokens (step ms / plain ms) and yields "
            f"{per_step:.2f}; 1.3× needs {1.3 * step_ms / plain_ms:.2f}\n"
        )
    ok = best >= LOOKUP_TARGET
    print(
        f"best tokens/s ratio on / off: {best:.2f} (target ≥ {LOOKUP_TARGET}) {'ok' if ok else 'MISSED'}; "
        f"load average {os.getloadavg()[0]:.2f}\n"
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
    parser.add_argument(
        "--lookup", default="10", help="settings to compare with off: DRAFT[:NGRAM],... (e.g. 10,3,2:2)"
    )
    args = parser.parse_args()
    threads = args.threads or _available_cpus()
    sections = set(args.sections.split(","))
    ok = True
    if "prefix" in sections:
        ok &= await section_prefix(args.pairs, threads)
    if "lookup" in sections:
        ok &= await section_lookup(args.questions, threads, args.max_tokens, lookup_specs(args.lookup))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
