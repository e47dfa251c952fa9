"""What a cache miss does besides the upstream call, piece by piece, with the default configuration's objects.

The stack is built as ``aiestack serve`` builds it (``build_stack`` on gateway_overhead.py's
``aiestack.toml``, uvloop, one BLAS thread), then each of the bench's miss prompts (a new question at
temperature 0) goes through the pieces a miss runs, in order: the injection guard's score of the new
text, PII and secrets, the exact key, the semantic partition, the exact read, the cache's embedding,
the semantic lookup, and storing the answer (index insert, both rows written; waited for). A partition
of ``--fill`` entries is made first. Per piece: thread CPU µs a prompt (the event loop's; load-dependent),
and how many stored rows the lookup read a prompt.

``--callgrind DIR`` counts instructions instead (deterministic): one valgrind run per piece, callgrind
switched on around that piece only; the switch itself costs a constant (the ``empty`` piece), which
is subtracted. Event loop and all threads (the worker threads' writes and index syncs). Under valgrind
a prompt takes ~50× longer, so the semantic index's once-a-second sync falls on far more lookups than
in a served run: the lookup's count is mostly that sync's work unless ``--prompts`` is large.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/miss_pieces.py                    # --prompts 300 --fill 200
    HF_HUB_OFFLINE=1 .venv/bin/python bench/miss_pieces.py --callgrind /tmp/pieces --prompts 100
    HF_HUB_OFFLINE=1 .venv/bin/python bench/miss_pieces.py --callgrind /tmp/pieces --prompts 100 --pieces write
    HF_HUB_OFFLINE=1 .venv/bin/python bench/miss_pieces.py --callgrind /tmp/pieces --prompts 100 --pieces guard,pii,secrets
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import _WORDS, aiestack_cmd  # the bench's own prompts and configuration

PIECES = ("guard", "pii", "secrets", "keys", "partition", "exact.get", "embed", "lookup", "write")
_TOTAL = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def prompts(first: int, n: int) -> list[str]:
    """gateway_overhead.py's miss prompts (``Target.request``'s text for ``path = "miss"``)."""
    return [f"Write a short note about {' '.join(random.Random(k).sample(_WORDS, 6))} (note {k})." for k in range(first, first + n)]


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


async def _run(args: argparse.Namespace) -> tuple[dict[str, float], float]:
    from threadpoolctl import threadpool_limits

    from aiestack.build import build_stack
    from aiestack.cache.config import CachePolicy
    from aiestack.cache.keying import exact_key, semantic_partition, split_last_user_turn
    from aiestack.cache.stage import _Target
    from aiestack.settings import load_settings
    from aiestack.stores.cache import CachedAnswer
    from aiestack.types import ChatRequest, Message, Params

    threadpool_limits(limits=1, user_api="blas")  # as app_factory does
    _, env = aiestack_cmd(Path(tempfile.mkdtemp(prefix="aiestack-pieces-")), 0, 9)
    os.environ.update(env)
    stack = build_stack(load_settings())
    await stack.warm()
    stages = {type(s).__name__: s for s in stack.pipeline.stages}
    guards = stages["InputGuard"]._table.default  # type: ignore[attr-defined]
    cache = stages["CacheStage"]
    semantic = cache.semantic  # type: ignore[attr-defined]
    policy = CachePolicy()
    answer = CachedAnswer(text="Hello! This is a friendly note from the mock upstream.", model="m", provider="openai")
    spent: dict[str, float] = {}
    reads = [0]  # the lookups' reads of stored rows (the candidates they re-score, the hit they serve)
    get = semantic._get

    async def counted_get(key: str) -> Any:
        reads[0] += 1
        return await get(key)

    semantic._get = counted_get
    # the input guard's own call: the heads that do not count are not computed (a checkout before it: every head)
    counted = {"every_layer": False} if "every_layer" in inspect.signature(guards.injection.score).parameters else {}

    async def one(text: str, measure: bool) -> None:
        async def piece(name: str, work: Callable[[], Any]) -> Any:
            counted = measure and args.piece == name
            if counted:
                _control("-i", "on")
            t0 = time.thread_time()
            out = work()
            if isinstance(out, Awaitable):
                out = await out
            if measure:
                spent[name] = spent.get(name, 0.0) + time.thread_time() - t0
            if counted:
                _control("-i", "off")
            return out

        request = ChatRequest(model="gateway-model", messages=(Message(role="user", content=text),),
                              params=Params(temperature=0, max_tokens=32))
        await piece("guard", lambda: guards.injection.score(text, **counted))
        await piece("pii", lambda: guards.pii.detect(text))
        await piece("secrets", lambda: guards.secrets.detect(text))
        key = await piece("keys", lambda: exact_key(request, tenant="default"))
        split = split_last_user_turn(request.messages)
        assert split is not None
        partition = await piece("partition", lambda: semantic_partition(request, split[0], tenant="default")
                                + ":" + semantic.embeddings.name)
        await piece("exact.get", lambda: cache.exact.get(key, tenant="default"))  # type: ignore[attr-defined]
        vector = await piece("embed", lambda: semantic.embed(text))
        await piece("lookup", lambda: semantic.lookup(partition, tenant="default", query=text, vector=vector))
        target = _Target("gateway-model", "default", key, partition, vector, text, None)

        async def write() -> None:
            cache._start_write(answer, policy, target)  # type: ignore[attr-defined]
            await cache.settle()  # type: ignore[attr-defined]

        await piece("write", write)
        if measure and args.piece == "empty":
            _control("-i", "on")
            _control("-i", "off")

    texts = prompts(1000, args.fill + args.prompts)
    for text in texts[: args.fill]:
        await one(text, False)
    await asyncio.sleep(1.2)  # the fill's writes and a sync are done
    reads[0] = 0
    for text in texts[args.fill :]:
        await one(text, True)
    await stack.aclose()
    return {k: v / args.prompts * 1e6 for k, v in spent.items()}, reads[0] / args.prompts


def _count(args: argparse.Namespace, piece: str, folder: Path) -> tuple[float, float]:
    """(event loop, all threads) instructions a prompt for ``piece``, the switch's own cost not subtracted."""
    out = folder / piece
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                    f"--callgrind-out-file={out}/p.%p", sys.executable, __file__, "--piece", piece,
                    "--prompts", str(args.prompts), "--fill", str(args.fill)],
                   check=True, capture_output=True, env=os.environ | {"PIECES_UNDER_CALLGRIND": "1"})
    loop = every = 0
    for path in out.glob("p.*-*"):
        match = _TOTAL.search(path.read_bytes())
        n = int(match.group(1)) if match else 0
        every += n
        loop += n if path.name.endswith("-01") else 0
    return loop / args.prompts, every / args.prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=300, help="measured prompts")
    parser.add_argument("--fill", type=int, default=200, help="entries put in the partition first")
    parser.add_argument("--callgrind", type=Path, default=None, help="count instructions per piece, files in DIR")
    parser.add_argument("--pieces", default=",".join(PIECES),
                        help="with --callgrind: the pieces to count, comma-separated (the switch is always counted)")
    parser.add_argument("--piece", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    pieces = [p for p in args.pieces.split(",") if p]
    if unknown := set(pieces) - set(PIECES):
        parser.error(f"unknown pieces {sorted(unknown)}; choose from {', '.join(PIECES)}")
    import uvloop

    if os.environ.get("PIECES_UNDER_CALLGRIND"):
        uvloop.run(_run(args))
        return 0
    if args.callgrind is None:
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        spent, reads = uvloop.run(_run(args))
        for name, us in spent.items():
            print(f"{name:10} {us:8.1f} µs of the event loop's CPU a prompt")
        print(f"lookup     {reads:8.2f} stored rows read a prompt")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return 0
    switch, switch_all = _count(args, "empty", args.callgrind)
    print(f"(the switch itself: {switch / 1e3:.0f}k, subtracted)")
    for name in pieces:
        loop, every = _count(args, name, args.callgrind)
        print(f"{name:10} {(loop - switch) / 1e3:8.0f}k instructions on the event loop, {(every - switch_all) / 1e3:8.0f}k in all threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
