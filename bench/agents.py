"""The agent loop's own overhead per step, against smolagents' ToolCallingAgent and pydantic-ai's Agent.

All of them are driven by the same scripted OpenAI-compatible mock upstream
(:mod:`aiestack.testing.upstream`, its own process on the loopback interface): a task containing
``[agent steps=N]`` gets N steps of one call of the ``add(a, b)`` tool, then the final answer (for
smolagents, whose runs end with a ``final_answer`` tool call, that call). Every framework makes the
same N + 1 model calls and N tool calls of the same sync Python function.

Per-step overhead = (median run time of the framework − median run time of the floor) / (N + 1).
The floor is the least a program can do for the same run: raw aiohttp posts of the same N + 1
requests in a loop, the tool called inline. (The medians are of per-round differences: each round
runs every contender once, and each is compared with that round's floor run.) So the figure is everything but the model (the
upstream and the network) and the tool: the framework's request building, parsing, tool dispatch,
validation, bookkeeping and — for aiestack — the whole pipeline of each step (keys and limits,
guardrails, cache lookups, routing, pricing, tracing with content and the exchange record).

Beside the wall-clock overhead, the CPU time the agent's process spent per step beyond the floor's
(``time.process_time``: every thread of the process, aiestack's trace writer included) is shown:
on a loaded machine it moves less than wall time.

Runs are interleaved (one of each framework per round, in rotating order) so that the load of a
shared machine falls on all of them alike; absolute times are inflated by that load, the ratios
are what to read. aiestack rows:

- ``aiestack (default stack)``: guardrails on, content tracing on, spans and exchanges stored in
  SQLite by the background writer, ``metadata.cache = "off"`` (each run's first step is otherwise
  a semantic-cache candidate across runs of the same task);
- ``aiestack (tracing only)``: the same with the guardrails off.

Usage::

    .venv/bin/python bench/agents.py                      # 8 steps a run, 30 rounds
    .venv/bin/python bench/agents.py --steps 8 --rounds 60 --skip smolagents
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

TASK = "[agent steps={steps}] Add the numbers the tool gives you (run {run})."
#: (name, module, what to install) of each anchor.
ANCHORS = (
    ("smolagents", "smolagents", "smolagents[openai]"),
    ("pydantic-ai", "pydantic_ai", "pydantic-ai-slim[openai]"),
)


def add_numbers(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


# ---------------------------------------------------------------------------- the upstream


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiestack.testing.upstream", "--port", str(port), "--keep-alive-s", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/models", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the mock upstream did not start") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


# ---------------------------------------------------------------------------- the contenders


Runner = Callable[[str], Awaitable[str]]


def floor_runner(base: str) -> tuple[Runner, Callable[[], Awaitable[None]]]:
    """The least a program can do: raw aiohttp posts of the chat JSON in a loop, the tool called inline."""
    import aiohttp

    session = aiohttp.ClientSession()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add_numbers",
                "description": "Add two integers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
            },
        }
    ]

    async def run(task: str) -> str:
        messages: list[dict[str, object]] = [{"role": "user", "content": task}]
        while True:
            body = {"model": "mock", "messages": messages, "tools": tools}
            async with session.post(f"{base}/chat/completions", json=body) as response:
                message = (await response.json())["choices"][0]["message"]
            if not message.get("tool_calls"):
                return str(message.get("content") or "")
            messages.append(message)
            for call in message["tool_calls"]:
                result = add_numbers(**json.loads(call["function"]["arguments"]))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": str(result)})

    return run, session.close


async def aiestack_runner(
    base: str, data_dir: Path, *, guards: bool
) -> tuple[Runner, Callable[[], Awaitable[None]]]:
    from aiestack import Agent, Settings, build_stack, tool

    settings = Settings(
        data_dir=data_dir,
        embedded_model=False,
        default_model="mock",
        models={"mock": {"provider": "openai", "base_url": base, "api_key_env": "AIESTACK_BENCH_KEY"}},
        tracing={"enabled": True, "content": True},
        guards={"enabled": guards},
    )
    stack = build_stack(settings)
    agent = Agent(
        model="mock", stack=stack, tools=[tool(add_numbers)], max_steps=64, metadata={"cache": "off"}
    )

    async def run(task: str) -> str:
        result = await agent.run(task)
        if result.stop_reason != "final_answer":
            raise SystemExit(f"aiestack stopped with {result.stop_reason}: {result.detail}")
        return result.answer or ""

    return run, stack.aclose


def pydantic_ai_runner(base: str) -> Runner:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("mock", provider=OpenAIProvider(base_url=base, api_key="unused"))
    agent = Agent(model, tools=[add_numbers])

    async def run(task: str) -> str:
        result = await agent.run(task)
        return str(result.output)

    return run


def smolagents_runner(base: str) -> Callable[[str], str]:
    from smolagents import LogLevel, OpenAIServerModel, ToolCallingAgent
    from smolagents import tool as smol_tool

    model = OpenAIServerModel(model_id="mock", api_base=base, api_key="unused")
    agent = ToolCallingAgent(
        tools=[smol_tool(add_numbers)], model=model, max_steps=64, verbosity_level=LogLevel.OFF
    )

    def run(task: str) -> str:
        return str(agent.run(task))

    return run


# ---------------------------------------------------------------------------- measuring


async def measure(args: argparse.Namespace) -> None:
    os.environ.setdefault("AIESTACK_BENCH_KEY", "unused")
    skip = set(args.skip)
    with upstream() as base, tempfile.TemporaryDirectory() as tmp:
        floor, close_floor = floor_runner(base)
        runners: dict[str, Callable[[str], Awaitable[str]]] = {"floor (raw aiohttp loop)": floor}
        closers = [close_floor]
        full, close_full = await aiestack_runner(base, Path(tmp, "full"), guards=True)
        bare, close_bare = await aiestack_runner(base, Path(tmp, "bare"), guards=False)
        runners["aiestack (default stack)"], runners["aiestack (tracing only)"] = full, bare
        closers += [close_full, close_bare]
        for anchor, module, package in ANCHORS:
            if anchor not in skip and importlib.util.find_spec(module) is None:
                print(f"{anchor} is not installed: skipped (pip install '{package}')")
                skip.add(anchor)
        if "pydantic-ai" not in skip:
            runners["pydantic-ai Agent"] = pydantic_ai_runner(base)
        if "smolagents" not in skip:
            smol = smolagents_runner(base)

            async def smol_run(task: str) -> str:
                return smol(task)  # sync, on the loop's thread: it is the only thing running

            runners["smolagents ToolCallingAgent"] = smol_run
        names = list(runners)
        expected = f"done after {args.steps} steps"
        for name in names:  # warm up: imports, connections, the guard's models
            for i in range(args.warmup):
                answer = await runners[name](TASK.format(steps=args.steps, run=f"warm{i}"))
                if expected not in answer:
                    raise SystemExit(f"{name} answered {answer!r}, expected {expected!r}")
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                await runners[name](TASK.format(steps=args.steps, run=r))
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
        for close in closers:
            await close()
    report(times, cpu, args)


def report(times: dict[str, list[float]], cpu: dict[str, list[float]], args: argparse.Namespace) -> None:
    """Per-step overhead of each contender: the median over rounds of (its run − the floor's run of that round) / calls."""
    calls = args.steps + 1
    floor_name = next(iter(times))
    floor = times[floor_name]
    overhead: dict[str, float] = {}
    spread: dict[str, tuple[float, float]] = {}
    for name, values in times.items():
        per_round = sorted((t - f) / calls * 1000 for t, f in zip(values, floor, strict=True))
        overhead[name] = statistics.median(per_round)
        q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else [per_round[0]] * 3
        spread[name] = (q[0], q[2])
    print(f"\n{args.rounds} rounds, {args.steps} tool steps + the answer = {calls} model calls a run")
    print("absolute times are inflated by the machine's load; read the ratios\n")
    cpu_step = {
        n: (statistics.median(v) - statistics.median(cpu[floor_name])) / calls * 1000 for n, v in cpu.items()
    }
    print(
        f"{'contender':30} {'run p50 ms':>10} {'overhead/step ms':>16} {'IQR':>17} {'vs fastest anchor':>17}"
        f" {'CPU/step ms':>12} {'vs anchor':>9}"
    )
    anchors = [n for n in times if not n.startswith(("aiestack", "floor"))]
    fastest = min((overhead[n] for n in anchors), default=None)
    cpu_fastest = min((cpu_step[n] for n in anchors), default=None)
    print()
    for name, values in times.items():
        ratio = f"{overhead[name] / fastest:.3f}x" if fastest and name != floor_name else ""
        lo, hi = spread[name]
        iqr = f"{lo:.3f}..{hi:.3f}" if name != floor_name else "(model+net+tool)"
        cpu_ratio = f"{cpu_step[name] / cpu_fastest:.3f}x" if cpu_fastest and name != floor_name else ""
        print(
            f"{name:30} {statistics.median(values) * 1000:10.2f} {overhead[name]:16.3f} {iqr:>17} {ratio:>17}"
            f" {cpu_step[name]:12.3f} {cpu_ratio:>9}"
        )
    if fastest:
        for ours in ("aiestack (default stack)", "aiestack (tracing only)"):
            print(
                f"{ours} / fastest anchor: wall {overhead[ours] / fastest:.3f}, "
                f"CPU {cpu_step[ours] / (cpu_fastest or 1):.3f} (target <= 0.333)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="tool steps a run (default 8)")
    parser.add_argument("--rounds", type=int, default=30, help="runs of each contender (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="runs of each before measuring (default 3)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["smolagents", "pydantic-ai"])
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
