"""CPU per request of the gateway's paths, in-process: what gateway_overhead.py's latencies cost in work.

Latency cells at c = 1 cannot resolve sub-millisecond changes on a loaded machine; the work a request
costs can. Each row runs in its own child process: the ASGI app (``aiestack serve``'s, built by
``aiestack.server.main.app_factory`` from the same ``aiestack.toml`` gateway_overhead.py writes, or
the floor's forwarding app) driven in-process at concurrency 1 against gateway_overhead.py's mock
upstream (its own process), ``--warmup`` requests, then ``--requests`` measured ones. Per request:
CPU time of the event loop's thread, CPU time of the whole process (the store writer and the implicit
feedback thread included; the work deferred until after each response too) and wall time until the
response's end was sent (p50; deferred work runs after it, before the next request). The
HTTP server's parsing is not in it (it is the same for every row). Ratios are to the floor's figures
from the same run. Rows (and checkouts, with ``--src``) alternate over ``--rounds``; medians are shown.

``--callgrind DIR`` instead counts instructions per request with ``valgrind --tool=callgrind``
(collection on for the measured requests only, via ``callgrind_control``; deterministic under load):
one child per row, files under ``DIR``.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gateway_cpu.py                 # --rounds 3 --requests 400
    HF_HUB_OFFLINE=1 .venv/bin/python bench/gateway_cpu.py --src /tmp/before/src --rows miss,bypass
    HF_HUB_OFFLINE=1 .venv/bin/python bench/gateway_cpu.py --rows miss --profile /tmp/miss.prof
    HF_HUB_OFFLINE=1 .venv/bin/python bench/gateway_cpu.py --callgrind /tmp/cg --requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import (  # the bench's own mock, targets and configurations
    ALONE_TOML,
    GATEWAY_MODEL,
    UPSTREAM_MODEL,
    Target,
    aiestack_cmd,
    base_env,
    floor_app,
    free_port,
)

#: row -> (which app, the request path sent, extra aiestack.toml lines)
ROWS: dict[str, tuple[str, str, str]] = {
    "floor": ("floor", "bypass", ""),
    "alone": ("aiestack", "bypass", ALONE_TOML),
    "bypass": ("aiestack", "bypass", ""),
    "miss": ("aiestack", "miss", ""),
    "hit": ("aiestack", "hit", ""),
}
_CALLGRIND_TOTAL = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


# --------------------------------------------------------------------------- the child: one row


async def _lifespan(app: Any) -> Callable[[], Any]:
    """Start ``app``'s lifespan; returns the coroutine function that ends it."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.get_running_loop().create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                      inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app failed to start: {started}")

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return stop


async def _call(app: Any, body: bytes, stream: bool) -> tuple[float, str]:
    """One POST /v1/chat/completions through the ASGI app: (when the response's end was sent, x-aiestack-cache or '').

    Work the app defers until after the response (trace record, cache write) runs before this returns,
    after that time: the client does not wait for it."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }
    sent = False
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never
        return {"type": "http.disconnect"}

    status, cache, parts, ended = 0, "", [], 0.0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, cache, ended
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", ()):
                if name == b"x-aiestack-cache":
                    cache = value.decode()
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                ended = time.perf_counter()

    await app(scope, receive, send)
    never.cancel()
    text = b"".join(parts)
    if status != 200 or (stream and b"[DONE]" not in text):
        raise SystemExit(f"HTTP {status}: {text[:300]!r}")
    return ended, cache


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    kind, path, _ = ROWS[args.row]
    if kind == "floor":
        app = floor_app(args.mock_port)
    else:
        from aiestack.server.main import app_factory

        app = app_factory()
    stop = await _lifespan(app)
    target = Target(kind, 0, "/v1/chat/completions", UPSTREAM_MODEL if kind == "floor" else GATEWAY_MODEL)
    stream = args.mode == "stream"
    n = [1000]  # prompts numbered as gateway_overhead.py numbers them (a few digits: no phone-shaped number)

    def body() -> bytes:
        n[0] += 1
        raw = target.request(stream, path, n[0])
        return raw[raw.index(b"\r\n\r\n") + 4 :]

    caches: dict[str, int] = {}
    for _ in range(args.warmup):
        await _call(app, body(), stream)
    await asyncio.sleep(0.3)  # the warm-up's background writes land before measuring
    bodies = [body() for _ in range(args.requests)]
    if args.callgrind:
        _control("-i", "on")
    profile = None
    if args.profile:
        import cProfile

        # cProfile's default clock is wall time: a wait for the GIL behind another thread is charged
        # to whatever call was running. ``--profile-clock cpu`` charges the event loop's CPU instead.
        profile = cProfile.Profile(time.thread_time) if args.profile_clock == "cpu" else cProfile.Profile()
        profile.enable()
    walls: list[float] = []
    gc_time = _gc_clock()
    cpu0, loop0 = time.process_time(), time.thread_time()
    for raw in bodies:
        t0 = time.perf_counter()
        ended, cache = await _call(app, raw, stream)
        walls.append(ended - t0)
        caches[cache] = caches.get(cache, 0) + 1
    loop_cpu = time.thread_time() - loop0
    gc_s = gc_time()
    await asyncio.sleep(args.settle)  # the background threads' share of these requests (store writer, feedback)
    cpu = time.process_time() - cpu0
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    if args.callgrind:
        _control("-i", "off")
    await stop()
    if args.row != "alone" and kind == "aiestack" and caches.get(path, 0) < 0.99 * args.requests:
        raise SystemExit(f"{args.row}: answers did not take the {path} path: {caches}")
    per = 1e6 / args.requests
    return {"loop_us": loop_cpu * per, "cpu_us": cpu * per,
            "wall_p50_us": statistics.median(walls) * 1e6, "wall_mean_us": statistics.fmean(walls) * 1e6,
            "wall_max_us": max(walls) * 1e6,
            "gc_us": gc_s * per, "cache": caches}


def _gc_clock() -> Callable[[], float]:
    """Starts timing the garbage collector's passes (any thread); returns the function that stops it, in seconds."""
    import gc

    spent, began = [0.0], [0.0]
    by_gen = [[0, 0.0], [0, 0.0], [0, 0.0]]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            took = time.perf_counter() - began[0]
            spent[0] += took
            by_gen[info["generation"]][0] += 1
            by_gen[info["generation"]][1] += took

    gc.callbacks.append(callback)

    def stop() -> float:
        gc.callbacks.remove(callback)
        print("gc passes by generation (count, seconds):", by_gen, file=sys.stderr)
        return spent[0]

    return stop


# --------------------------------------------------------------------------- the parent


def _env(src: Path, row: str, work: Path, mock_port: int, extra: str = "") -> dict[str, str]:
    kind, _, toml = ROWS[row]
    if extra and kind == "aiestack" and row != "alone":
        toml = f"{toml}\n{extra}" if toml else extra
    (work / row).mkdir(parents=True, exist_ok=True)
    _, env = aiestack_cmd(work / row, 0, mock_port, toml)
    return env | {"PYTHONPATH": str(src), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}


def _run_row(args: argparse.Namespace, src: Path, row: str, work: Path, mock_port: int, seed: int,
             callgrind: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "child", "--row", row, "--mock-port", str(mock_port), "--mode", args.mode,
           "--requests", str(args.requests), "--warmup", str(args.warmup), "--seed", str(seed),
           "--settle", str(args.settle)]
    if args.profile:
        cmd += ["--profile", f"{args.profile}.{row}", "--profile-clock", args.profile_clock]
    if callgrind is not None:
        out = callgrind / f"{row}.%p"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
               f"--callgrind-out-file={out}", *cmd, "--callgrind", "child"]
    extra = args.aiestack_toml.replace("\\n", "\n")
    done = subprocess.run(cmd, env=_env(src, row, work, mock_port, extra), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{row} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if done.stderr.strip():
        print(done.stderr.strip()[-1000:], file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if callgrind is not None:
        result["instructions"] = _instructions(callgrind, row)
    return result


def _instructions(folder: Path, row: str) -> dict[str, float]:
    """Instructions per thread of the last callgrind run of ``row`` (thread 1 is the event loop)."""
    totals: dict[str, float] = {}
    for path in sorted(folder.glob(f"{row}.*")):
        match = _CALLGRIND_TOTAL.search(path.read_bytes())
        thread = path.name.rsplit("-", 1)[-1] if "-" in path.name else "01"
        if match:
            totals[thread] = totals.get(thread, 0.0) + int(match.group(1))
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "child"])
    parser.add_argument("--rows", default="floor,alone,bypass,miss,hit", help="comma-separated: " + ",".join(ROWS))
    parser.add_argument("--mode", default="whole", choices=["whole", "stream"])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after the last request for background work")
    parser.add_argument("--src", type=Path, action="append", default=[], help="another checkout's src, compared")
    parser.add_argument("--profile", default="", help="cProfile each row's measured requests to PREFIX.ROW")
    parser.add_argument("--aiestack-toml", default="",
                        help="extra aiestack.toml lines for the default configuration's rows (bypass, miss, hit)")
    parser.add_argument("--profile-clock", default="wall", choices=["wall", "cpu"],
                        help="cProfile's clock: wall time, or the event loop thread's CPU time")
    parser.add_argument("--callgrind", type=Path, default=None, help="count instructions instead, files in DIR")
    parser.add_argument("--row", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mock-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "child":
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        if args.callgrind:
            args.callgrind = True
        print(json.dumps(asyncio.run(_child(args))))
        return 0

    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    here = Path(__file__).resolve().parent.parent / "src"
    checkouts = [here, *(p.resolve() for p in args.src)]
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="aiestack-cpu-") as tmp:
        work = Path(tmp)
        mock_port = free_port()
        mock = subprocess.Popen([sys.executable, str(Path(__file__).parent / "gateway_overhead.py"), "mock",
                                 "--port", str(mock_port)], env=base_env(), start_new_session=True)
        try:
            time.sleep(0.5)
            print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
            rounds = 1 if args.callgrind else args.rounds
            if args.callgrind:
                args.callgrind.mkdir(parents=True, exist_ok=True)
            for r in range(rounds):
                for row in rows:
                    for i, src in enumerate(checkouts):
                        folder = args.callgrind / f"c{i}" if args.callgrind else None
                        if folder is not None:
                            folder.mkdir(exist_ok=True)
                        res = _run_row(args, src, row, work / f"c{i}-r{r}", mock_port, seed=r * 10 + i + 1,
                                       callgrind=folder)
                        results.setdefault((i, row), []).append(res)
                        print(f"  round {r + 1} checkout {i} {row:6} loop {res['loop_us']:7.0f} µs  "
                              f"process {res['cpu_us']:7.0f} µs  wall p50 {res['wall_p50_us']:7.0f} µs  "
                              f"mean {res['wall_mean_us']:7.0f} µs  max {res['wall_max_us'] / 1000:6.1f} ms  gc {res['gc_us']:5.0f} µs"
                              + (f"  instructions {res['instructions']}" if "instructions" in res else ""),
                              file=sys.stderr)
        finally:
            mock.terminate()
            mock.wait()
    print(f"load average after: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    _report(args, checkouts, rows, results)
    return 0


def _report(args: argparse.Namespace, checkouts: list[Path], rows: list[str],
            results: dict[tuple[int, str], list[dict[str, Any]]]) -> None:
    print(f"\nPer request, {args.mode}, c = 1, {args.requests} requests after {args.warmup}; "
          f"medians of {len(next(iter(results.values())))} round(s); × floor = the same checkout's floor row\n")
    counting = args.callgrind is not None
    head = "| checkout | row | event loop µs | process µs | wall p50 µs | loop × floor | process × floor |"
    if counting:
        head += " instructions, event loop | all threads | all × floor |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for i, src in enumerate(checkouts):
        floor = results.get((i, "floor"))
        for row in rows:
            runs = results[(i, row)]
            med = {k: statistics.median(r[k] for r in runs) for k in ("loop_us", "cpu_us", "wall_p50_us")}
            ratios = ["–", "–"]
            if floor is not None:
                ratios = [f"{med[k] / statistics.median(r[k] for r in floor):.2f}" for k in ("loop_us", "cpu_us")]
            line = (f"| {src.parent.name} | {row} | {med['loop_us']:.0f} | {med['cpu_us']:.0f} | "
                    f"{med['wall_p50_us']:.0f} | {ratios[0]} | {ratios[1]} |")
            if counting:
                ins = runs[-1]["instructions"]
                loop = ins.get("01", 0.0) / args.requests
                total = sum(ins.values()) / args.requests
                floor_total = sum(floor[-1]["instructions"].values()) / args.requests if floor else 0
                line += f" {loop / 1e3:.0f}k | {total / 1e3:.0f}k | " + (f"{total / floor_total:.2f} |" if floor_total else "– |")
            print(line)


if __name__ == "__main__":
    sys.exit(main())
