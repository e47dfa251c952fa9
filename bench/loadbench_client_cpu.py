"""The load bench's own CPU: process CPU seconds per request of ``aiestack bench load`` against the mock.

On a small machine the benchmark's client shares the cores with the server it measures, so its CPU
per request is part of what it does to the figures (docs/load-bench.md, "How accurate it is"). This
runs :func:`aiestack.loadbench.measure` (as ``aiestack bench load`` runs it, on uvloop) at one
closed-loop concurrency against ``aiestack.testing.mock_llm`` in a process of its own (500 ms TTFT,
25 ms per token, 8 tokens), and prints this process's user + system CPU over the level, per request.
Alternate runs of two checkouts to compare clients (``PYTHONPATH=<checkout>/src``).

    PYTHONPATH=$PWD/src .venv/bin/python bench/loadbench_client_cpu.py    # -c 64 -n 512
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

from aiestack.loadbench import Endpoint, Plan, measure, parse_length, synthetic
from aiestack.testing.cluster import ServerProcess
from aiestack.testing.net import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("-n", "--requests", type=int, default=512)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "aiestack.testing.mock_llm", "--port", str(port),
               "--ttft-ms", "500", "--itl-ms", "25", "--tokens", "8"]
    workload = synthetic(parse_length("64", option="i"), parse_length("8", option="o"), count=args.requests + 8)
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(
        "mock_llm", command, port=port, log=Path(tmp) / "mock.log", ready_path="/v1/models",
    ) as server:
        before = resource.getrusage(resource.RUSAGE_SELF)
        level = measure(Endpoint(server.url + "/v1", "mock"), workload,
                        Plan(concurrency=(args.concurrency,), requests=args.requests))[0]
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"c={args.concurrency} n={args.requests}: client CPU {cpu:.3f} s, {1e6 * cpu / args.requests:.0f} µs "
          f"per request; errors {level.errors}; ITL p99 {level.itl_ms['p99']:.2f} ms")


if __name__ == "__main__":
    main()
