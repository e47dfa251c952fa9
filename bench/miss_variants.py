"""The whole-answer miss path of ``aiestack serve`` at one concurrency, for comparing source trees.

gateway_overhead.py's mock upstream and default-configuration server, driven by its own client with
miss requests (temperature 0, a new prompt each); ``--fill`` seconds of misses at c = 16 first grow
the semantic-cache partition (every miss adds an entry), then ``--seconds`` are measured. The server
imports aiestack from ``PYTHONPATH`` when set, so variants are compared by alternating runs with
``PYTHONPATH`` at exports of each tree (``git archive COMMIT src | tar -x -C DIR``); the figures
move a lot from run to run on a 2-core machine, so compare several alternations, never one pair.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/miss_variants.py --concurrency 16 --fill 10 --seconds 8
    PYTHONPATH=/tmp/old/src HF_HUB_OFFLINE=1 .venv/bin/python bench/miss_variants.py --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as gw  # the bench's mock, configuration, requests and client

MOCK_PORT, SERVER_PORT = 9701, 9702


async def _wait_for(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection(gw.HOST, port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on {gw.HOST}:{port}")


async def _run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="aiestack-miss-"))
    mock = subprocess.Popen([sys.executable, gw.__file__, "mock", "--port", str(MOCK_PORT)], env=gw.base_env())
    cmd, env = gw.aiestack_cmd(work, SERVER_PORT, MOCK_PORT)
    server = subprocess.Popen(cmd, env=env)
    try:
        await _wait_for(MOCK_PORT)
        await _wait_for(SERVER_PORT)
        target = gw.Target("aiestack", SERVER_PORT, "/v1/chat/completions", gw.GATEWAY_MODEL)
        counter = [100_000]
        if args.fill:
            await gw.load(target, stream=False, concurrency=16, warmup_s=0, seconds=args.fill, path="miss", counter=counter)
        result = await gw.load(target, stream=False, concurrency=args.concurrency, warmup_s=0.5,
                               seconds=args.seconds, path="miss", counter=counter)
        return (f"c = {args.concurrency}: {result.rps:.0f} req/s, p50 {result.pct(50):.2f} ms, "
                f"{result.errors} errors, cache {dict(result.cache)}, partition ~{counter[0] - 100_000} entries at the end")
    finally:
        for process in (server, mock):
            process.terminate()
            process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16, help="connections in closed loop")
    parser.add_argument("--fill", type=float, default=10.0, help="seconds of misses at c = 16 before measuring")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds")
    print(asyncio.run(_run(parser.parse_args())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
