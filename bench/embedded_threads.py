"""The embedded model's decode threads: measured (the default) against fixed counts, idle and busy.

llama.cpp meets at a barrier after every operation of a token, so a decode thread that loses its core
holds up the others (see :mod:`aiestack.models.llama_threads`). This runs the provider
(``LlamaCppModel.stream``, Gemma 3 270M, temperature 0, ``--max-tokens`` tokens a request) with
``n_threads`` unset (measured: ``DecodeThreads``), fixed at every available CPU (the old default and
the anchor) and fixed at one, in two conditions of the same run:

* **as is** — whatever else the machine is doing (run it on a quiet machine for the idle figure);
* **busy** — ``--busy N`` extra processes (default: one per CPU) spinning at normal priority, each
  stopping by itself after the condition's deadline, as a test run or an ingestion beside a server.

Configurations alternate request by request (each model keeps its own state, as a server would), so
each condition's figures are interleaved in time. Reported per configuration: decode tokens/s (the
median over requests of ``(tokens - 1) / (last token - first token)``), its ratio to the fixed
all-CPU anchor, and for the measured one the thread counts it decoded with. Load average is printed
before and after each condition.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/embedded_threads.py [--requests 6] [--max-tokens 96] [--busy N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiestack.models.llama_cpp import LlamaCppModel, LlamaCppModelConfig, _available_cpus
from aiestack.types import ChatRequest, Message, Params

PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Describe the city of Lisbon for a traveller.",
    "What makes bread rise?",
)


def _spin(deadline: float) -> None:
    while time.time() < deadline:
        pass


@contextmanager
def busy(processes: int, seconds: float) -> Iterator[None]:
    """``processes`` busy loops that stop by themselves after ``seconds`` (or when the block ends)."""
    deadline = time.time() + seconds
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_spin, args=(deadline,), daemon=True) for _ in range(processes)]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        for w in workers:
            w.terminate()
            w.join(5)


async def decode_rate(model: LlamaCppModel, prompt: str, max_tokens: int) -> float:
    request = ChatRequest(
        model="gemma", messages=(Message("user", prompt),), params=Params(temperature=0, max_tokens=max_tokens)
    )
    stamps = []
    async for delta in model.stream(request):
        if delta.text:
            stamps.append(time.perf_counter())
    if len(stamps) < 2:
        return float("nan")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


async def condition(name: str, models: dict[str, LlamaCppModel], requests: int, max_tokens: int) -> None:
    print(f"\n## {name}: load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rates: dict[str, list[float]] = {key: [] for key in models}
    measured = models["measured"].decode_threads
    assert measured is not None
    windows_before = measured.snapshot().windows
    for i in range(requests):
        order = list(models)[i % len(models):] + list(models)[: i % len(models)]
        for key in order:
            rates[key].append(await decode_rate(models[key], PROMPTS[i % len(PROMPTS)], max_tokens))
    anchor = statistics.median(rates["all CPUs"])
    print("| n_threads | decode tokens/s (median) | × all CPUs | per request |")
    print("|---|---:|---:|---|")
    for key, values in rates.items():
        median = statistics.median(values)
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {key} | {median:.1f} | {median / anchor:.2f} | {shown} |")
    after = measured.snapshot()
    used = {t: after.windows[t] - windows_before.get(t, 0) for t in after.windows}
    print(f"measured: windows decoded by thread count {used}; now {after.current}; seconds a token "
          + ", ".join(f"{t}: {s * 1000:.1f} ms" for t, s in after.seconds_per_token.items() if s is not None))
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6, help="requests per configuration and condition")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--busy", type=int, default=None, help="spinning processes in the busy condition")
    parser.add_argument("--conditions", default="as-is,busy")
    args = parser.parse_args()
    cpus = _available_cpus()
    models = {
        "measured": LlamaCppModel(LlamaCppModelConfig(chat_format="raw")),
        "all CPUs": LlamaCppModel(LlamaCppModelConfig(chat_format="raw", n_threads=cpus)),
        "one": LlamaCppModel(LlamaCppModelConfig(chat_format="raw", n_threads=1)),
    }
    print(f"{cpus} CPUs available; {args.requests} requests per configuration, {args.max_tokens} tokens each")
    try:
        for model in models.values():  # load, and the first answer after loading (it can differ) is not timed
            await decode_rate(model, "Hello", 4)
        for name in args.conditions.split(","):
            if name == "busy":
                spinners = args.busy or cpus
                with busy(spinners, seconds=600):
                    await condition(f"busy ({spinners} spinning processes)", models, args.requests, args.max_tokens)
            else:
                await condition("as is", models, args.requests, args.max_tokens)
    finally:
        for model in models.values():
            await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
