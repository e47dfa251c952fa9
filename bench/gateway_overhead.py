"""Gateway overhead: what aiestack adds over calling the upstream directly, against a floor and LiteLLM.

Everything runs in one run on one machine, each part as its own process on 127.0.0.1, driven by the
same closed-loop load generator (N keep-alive connections, each sending its next request as soon as
the last response has been read to its end):

- **the mock upstream**: a raw asyncio HTTP/1.1 server (uvloop) answering ``/v1/chat/completions``
  with a fixed 9-chunk reply, whole or as an SSE stream, costing almost nothing;
- **direct**: the generator calling the mock itself (the baseline every "added" figure subtracts);
- **floor**: a bare uvicorn (httptools, uvloop, one worker) running a 40-line ASGI app that forwards
  the body to the mock through one ``aiohttp.ClientSession`` and passes the answer back: the cost
  of a process hop and an upstream client that any Python gateway pays;
- **aiestack**: ``aiestack serve`` in its **default configuration** (one worker, implicit feedback,
  exact + semantic cache, default guardrails, tracing), measured on three paths:
  ``miss`` (temperature 0, a new prompt every request: the cache embeds and looks up, then calls
  the model), ``hit`` (temperature 0, the same prompt: answered from the exact cache) and
  ``bypass`` (no temperature: not cacheable, the cache is skipped);
- **alone**: ``aiestack serve`` with implicit feedback, cache and guardrails off (the gateway alone);
- **litellm**: ``litellm --num_workers 1`` (its own virtualenv), on the miss-style request
  (temperature 0, new prompts; it caches nothing by default, so its paths do not differ);
- **workers**: requests/s at concurrency 64 (bypass, whole) of ``aiestack serve --workers 1`` and ``2``.

Targets (issue #16, ratios in the same run): at c = 1, the gateway alone adds ≤ 1.5× the floor, the
default configuration ≤ 3× the floor on the miss and the bypass path, and a hit is answered faster
than the direct call; at every concurrency and path, aiestack adds ≤ 1/5 of LiteLLM's added p50 and
serves ≥ 5× its requests/s. The script exits 1 when a target is missed.

    .venv/bin/python bench/gateway_overhead.py --litellm-venv /tmp/litellm-venv   # creates it when absent
    .venv/bin/python bench/gateway_overhead.py --skip-litellm --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
UPSTREAM_MODEL = "gpt-4o-mini"
GATEWAY_MODEL = "mock"
LITELLM_KEY = "sk-bench-master"
CONCURRENCY = (1, 16, 64)
MODES = ("whole", "stream")
REPLY = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
RESPONSE_TIMEOUT_S = 30.0
PATHS = ("miss", "hit", "bypass")
TARGET_ALONE_FLOOR = 1.5
TARGET_DEFAULT_FLOOR = 3.0
TARGET_P50_RATIO = 1 / 5
TARGET_RPS_RATIO = 5.0
ALONE_TOML = "[feedback]\nimplicit = false\n[cache]\nenabled = false\n[guards]\nenabled = false"
_WORDS = ["river", "stone", "garden", "lamp", "violin", "harbor", "pepper", "window", "silver", "forest", "candle", "rocket", "meadow", "planet", "thunder", "basket", "mirror", "tunnel", "orange", "castle", "pencil", "island", "cactus", "anchor", "blanket", "canyon", "dragon", "engine", "falcon", "glacier", "hammer", "igloo", "jacket", "kettle", "ladder", "magnet", "needle", "oyster", "parrot", "quartz", "saddle", "tiger", "umbrella", "valley", "walnut", "yogurt", "zebra", "bridge", "cookie", "desert", "feather", "ginger", "helmet"]


# --------------------------------------------------------------------------- the mock upstream


def _mock_responses() -> tuple[bytes, bytes, bytes]:
    """(whole answer, streamed answer, model listing), each a complete HTTP/1.1 response."""
    usage = {"prompt_tokens": 12, "completion_tokens": len(REPLY), "total_tokens": 12 + len(REPLY)}
    whole = {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": UPSTREAM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(REPLY)},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }

    def chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
        body = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in REPLY]
    events.append(chunk({}, "stop", usage=usage))
    events.append(b"data: [DONE]\n\n")
    stream = b"".join(events)

    def http(body: bytes, content_type: bytes) -> bytes:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
        return head + str(len(body)).encode() + b"\r\n\r\n" + body

    def chunked(body: bytes, content_type: bytes) -> bytes:
        # Streams go out chunked, as OpenAI sends them (a proxy that forwards the upstream's headers
        # would otherwise pass on a content-length that does not fit the body it re-encodes).
        head = b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\ntransfer-encoding: chunked\r\n\r\n"
        return head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"

    models = json.dumps({"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model"}]}).encode()
    return (
        http(json.dumps(whole, separators=(",", ":")).encode(), b"application/json"),
        chunked(stream, b"text/event-stream"),
        http(models, b"application/json"),
    )


class _MockProtocol(asyncio.Protocol):
    """Answers each request on a keep-alive connection with a prebuilt response."""

    def __init__(self, responses: tuple[bytes, bytes, bytes]) -> None:
        self._whole, self._stream, self._models = responses
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end]).lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = bytes(self._buffer[end + 4 : total]).replace(b" ", b"")
            del self._buffer[:total]
            assert self._transport is not None
            if head.startswith(b"get"):
                self._transport.write(self._models)
            else:
                self._transport.write(self._stream if b'"stream":true' in body else self._whole)


def run_floor(port: int, upstream_port: int) -> None:
    """The floor: bare uvicorn and an ASGI app forwarding each body to the mock through aiohttp."""
    import uvicorn

    uvicorn.run(floor_app(upstream_port), host=HOST, port=port, log_level="warning", loop="uvloop", http="httptools")


def floor_app(upstream_port: int) -> Any:
    """The floor's ASGI app: each body forwarded to the mock through one aiohttp session."""
    import aiohttp

    url = f"http://{HOST}:{upstream_port}/v1/chat/completions"
    session: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
                    await send({"type": "lifespan.startup.complete"})
            await session[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        async with session[0].post(url, data=body, headers={"content-type": "application/json"}) as upstream:
            kind = upstream.headers.get("content-type", "application/json").encode()
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": [(b"content-type", kind)]})
            async for piece in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def run_mock(port: int) -> None:
    """The mock upstream's process entry point."""
    _use_uvloop()
    loop = asyncio.new_event_loop()
    responses = _mock_responses()
    server = loop.run_until_complete(
        loop.create_server(lambda: _MockProtocol(responses), HOST, port, backlog=1024)
    )
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --------------------------------------------------------------------------- the load generator


@dataclass
class Target:
    name: str
    port: int
    path: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, stream: bool, path: str = "bypass", n: int = 0) -> bytes:
        """One request: ``bypass`` sends no temperature; ``hit`` the same prompt at temperature 0;
        ``miss`` a new prompt at temperature 0 (eight words picked by ``n``, unlike any other)."""
        text = "Say hello in a friendly way."
        if path == "miss":
            words = random.Random(n).sample(_WORDS, 6)
            text = f"Write a short note about {' '.join(words)} (note {n})."
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 32,
        }
        if path != "bypass":
            body["temperature"] = 0
        if stream:
            body["stream"] = True
        raw = json.dumps(body).encode()
        head = [
            f"POST {self.path} HTTP/1.1",
            f"host: {HOST}:{self.port}",
            "content-type: application/json",
            f"content-length: {len(raw)}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


async def _read_response(reader: asyncio.StreamReader, cache: Counter[str] | None = None) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if cache is not None and (at := lower.find(b"x-aiestack-cache:")) >= 0:
        cache[lower[at + 17 : lower.find(b"\r\n", at)].strip().decode()] += 1
    if (at := lower.find(b"content-length:")) >= 0:
        return status, await reader.readexactly(int(lower[at + 15 : lower.find(b"\r\n", at)]))
    if b"transfer-encoding: chunked" not in lower:
        raise RuntimeError(f"response with neither length nor chunks: {head[:200]!r}")
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


@dataclass
class Result:
    latencies_ms: list[float]
    seconds: float
    errors: int
    cache: Counter[str] = field(default_factory=Counter)  # x-aiestack-cache of every answer

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def load(
    target: Target, *, stream: bool, concurrency: int, warmup_s: float, seconds: float, path: str = "bypass",
    counter: list[int] | None = None,
) -> Result:
    """``concurrency`` keep-alive connections in closed loop; latencies of requests started after warm-up."""
    fixed = None if path == "miss" else target.request(stream, path)
    count = counter if counter is not None else [0]
    start = time.perf_counter()
    measure_from, until = start + warmup_s, start + warmup_s + seconds
    latencies: list[float] = []
    errors = 0
    cache: Counter[str] = Counter()

    def failed(what: str) -> None:
        nonlocal errors
        errors += 1
        if errors == 1:
            print(f"  {target.name}: {what}", file=sys.stderr)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, target.port)
        try:
            while (t0 := time.perf_counter()) < until:
                if fixed is None:
                    count[0] += 1
                writer.write(fixed if fixed is not None else target.request(stream, path, count[0]))
                try:
                    status, body = await asyncio.wait_for(_read_response(reader, cache), RESPONSE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                    failed(f"connection lost mid-response ({exc!r}); reconnecting")
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, target.port)
                    continue
                t1 = time.perf_counter()
                if status != 200 or (stream and b"[DONE]" not in body):
                    failed(f"HTTP {status}: {body[:300]!r}")
                elif measure_from <= t1 <= until:  # answers completed in the window (a slow gateway's too)
                    latencies.append((t1 - t0) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(latencies, seconds, errors, cache)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str, timeout_s: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited while starting (code {proc.returncode}); see its log")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status < 500:
                return
        time.sleep(0.25)
    raise SystemExit(f"{name} did not become ready within {timeout_s:.0f} s")


@contextlib.contextmanager
def process(
    cmd: list[str], *, env: dict[str, str], log: Path, ready_url: str | None, name: str
) -> Iterator[int]:
    """Run ``cmd`` until the block ends; yields its pid. Stopped with SIGTERM (then SIGKILL)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if ready_url is not None:
                wait_ready(ready_url, proc, name)
            yield proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (MB), from /proc."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def ensure_litellm(venv: Path) -> Path:
    """The ``litellm`` executable in ``venv``, creating the venv and installing litellm[proxy] if needed."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"Installing litellm[proxy] into {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIESTACK_", "LITELLM_", "OPENAI_"))}


def aiestack_cmd(
    work: Path, port: int, mock_port: int, extra_toml: str = ""
) -> tuple[list[str], dict[str, str]]:
    config = work / "aiestack.toml"
    config.write_text(
        f'default_model = "{GATEWAY_MODEL}"\nembedded_model = false\n'
        f'[models.{GATEWAY_MODEL}]\nprovider = "openai"\nmodel = "{UPSTREAM_MODEL}"\n'
        f'base_url = "http://{HOST}:{mock_port}/v1"\napi_key_env = ""\n{extra_toml}\n',
        encoding="utf-8",
    )
    env = base_env() | {"AIESTACK_CONFIG": str(config), "AIESTACK_DATA_DIR": str(work / "aiestack-data")}
    cmd = [
        sys.executable,
        "-m",
        "aiestack",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return cmd, env


def litellm_cmd(exe: Path, work: Path, port: int, mock_port: int) -> tuple[list[str], dict[str, str]]:
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {GATEWAY_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: http://{HOST}:{mock_port}/v1\n"
        "      api_key: os.environ/OPENAI_API_KEY\n"
        "litellm_settings:\n  telemetry: false\n",
        encoding="utf-8",
    )
    env = base_env() | {
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "OPENAI_API_KEY": "sk-mock",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet
        "LITELLM_LOG": "ERROR",
    }
    cmd = [str(exe), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    return cmd, env


# --------------------------------------------------------------------------- the run and the table


Key = tuple[str, str, str, int]  # (target, mode, path, concurrency)


def measure(targets: list[Target], *, warmup_s: float, seconds: float) -> dict[Key, Result]:
    """Every cell: per mode and concurrency, direct, floor, the default configuration on each path, alone, LiteLLM."""
    _use_uvloop()
    results: dict[Key, Result] = {}
    counter = [0]
    for mode in MODES:
        for c in CONCURRENCY:
            for t in targets:
                if t.name.startswith("workers"):
                    continue
                paths = PATHS if t.name == "aiestack" else (("miss",) if t.name == "litellm" else ("bypass",))
                for path in paths:
                    r = asyncio.run(load(t, stream=mode == "stream", concurrency=c, warmup_s=warmup_s,
                                         seconds=seconds, path=path, counter=counter))
                    results[(t.name, mode, path, c)] = r
                    print(
                        f"  {mode:6} c={c:<3} {t.name:9} {path:6} p50 {r.pct(50):7.2f} ms  {r.rps:7.0f} req/s"
                        + (f"  cache {dict(r.cache)}" if r.cache else "")
                        + (f"  errors {r.errors}" if r.errors else ""),
                        file=sys.stderr,
                    )
    for t in targets:
        if t.name.startswith("workers"):
            r = asyncio.run(load(t, stream=False, concurrency=64, warmup_s=warmup_s, seconds=seconds))
            results[(t.name, "whole", "bypass", 64)] = r
            print(f"  whole  c=64  {t.name:9} bypass {r.rps:7.0f} req/s", file=sys.stderr)
    return results


def _wrong_paths(results: dict[Key, Result]) -> list[str]:
    """Cells of the default configuration whose answers did not take the path they measure."""
    wrong = []
    for (name, mode, path, c), r in results.items():
        if name != "aiestack" or not r.cache:
            continue
        seen = sum(r.cache.values())
        share = r.cache.get(path, 0) / seen
        if share < 0.99:
            wrong.append(f"{mode} {path} c={c}: only {share:.1%} of answers were '{path}' ({dict(r.cache)})")
    return wrong


def report(results: dict[Key, Result], names: set[str], rss: dict[str, float], extra_toml: str = "") -> list[str]:
    """Print the table; return the targets missed."""
    missed: list[str] = []
    litellm = "litellm" in names
    print(f"Added latency over a local mock upstream ({len(REPLY)}-chunk reply), ms; "
          "ratios from the same run\n")
    print("Rows: direct = the client calling the mock (the baseline subtracted from every 'added'); "
          "floor = bare uvicorn + aiohttp forwarder; alone = aiestack serve with implicit feedback, cache "
          "and guardrails off; default = aiestack serve in its default configuration"
          + (f" plus {extra_toml!r}" if extra_toml else "")
          + " on the miss (temperature 0, new prompt), hit (temperature 0, same prompt) and bypass (no "
          "temperature) paths; litellm = litellm --num_workers 1 (temperature 0, new prompts).")
    print(f"Targets (issue #16): at c = 1 alone ≤ {TARGET_ALONE_FLOOR}× the floor's added p50, default ≤ "
          f"{TARGET_DEFAULT_FLOOR}× on miss and bypass, hit below the direct call; every concurrency and "
          f"path: added p50 ≤ {TARGET_P50_RATIO:.1f}× LiteLLM's, req/s ≥ {TARGET_RPS_RATIO:.0f}× LiteLLM's.\n")
    print("| mode | conc. | row | path | direct p50 | added p50 | added p95 | added p99 | req/s | "
          "added ÷ floor | added ÷ LiteLLM | req/s × LiteLLM |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        for c in CONCURRENCY:
            direct = results[("direct", mode, "bypass", c)]
            floor = results[("floor", mode, "bypass", c)]
            floor_added = floor.pct(50) - direct.pct(50)
            theirs = results.get(("litellm", mode, "miss", c))
            if theirs is not None and not theirs.latencies_ms:  # no p50 to compare with: say so, never pass
                missed.append(f"{mode} c={c}: LiteLLM answered no request within the {theirs.seconds:g} s window, "
                              "so its ratios were not measured (rerun with more --seconds)")
                theirs = None
            theirs_added = theirs.pct(50) - direct.pct(50) if theirs is not None else None
            rows = [("direct", "bypass"), ("floor", "bypass"), ("alone", "bypass"),
                    *(("aiestack", p) for p in PATHS), ("litellm", "miss")]
            for name, path in rows:
                r = results.get((name, mode, path, c))
                if r is None:
                    continue
                added = [r.pct(q) - direct.pct(q) for q in (50, 95, 99)]
                to_floor = added[0] / floor_added if floor_added > 0 else float("inf")
                to_litellm = added[0] / theirs_added if theirs_added else None
                rps_x = r.rps / theirs.rps if theirs is not None and theirs.rps > 0 else None
                label = "default" if name == "aiestack" else name
                cells = (["–"] * 3 + [f"{r.rps:.0f}", "–", "–", "–"]) if name == "direct" else [
                    *(f"{a:.2f}" for a in added), f"{r.rps:.0f}", f"{to_floor:.2f}",
                    "–" if to_litellm is None or name == "litellm" else f"{to_litellm:.3f}",
                    "–" if rps_x is None or name == "litellm" else f"{rps_x:.1f}×"]
                print(f"| {mode} | {c} | {label} | {path} | {direct.pct(50):.2f} | " + " | ".join(cells) + " |")
                if name == "aiestack" and litellm and to_litellm is not None and to_litellm > TARGET_P50_RATIO:
                    missed.append(f"{mode} c={c} {path}: added p50 {to_litellm:.3f}× LiteLLM's (target ≤ 0.2)")
                if name == "aiestack" and litellm and rps_x is not None and rps_x < TARGET_RPS_RATIO:
                    missed.append(f"{mode} c={c} {path}: req/s {rps_x:.1f}× LiteLLM's (target ≥ 5×)")
                if c != 1:
                    continue
                if name == "alone" and to_floor > TARGET_ALONE_FLOOR:
                    missed.append(f"{mode} c=1: the gateway alone adds {to_floor:.2f}× the floor (target ≤ 1.5×)")
                if name == "aiestack" and path in ("miss", "bypass") and to_floor > TARGET_DEFAULT_FLOOR:
                    missed.append(f"{mode} c=1 {path}: the default adds {to_floor:.2f}× the floor (target ≤ 3×)")
                if name == "aiestack" and path == "hit" and r.pct(50) >= direct.pct(50):
                    missed.append(f"{mode} c=1 hit: {r.pct(50):.2f} ms, not below the direct call's "
                                  f"{direct.pct(50):.2f} ms")
    workers = sorted(k for k in results if k[0].startswith("workers"))
    if workers:
        print("\n| aiestack serve (default config), bypass, whole, c = 64 | req/s | × 1 worker |")
        print("|---|---:|---:|")
        one = results[workers[0]].rps
        for key in workers:
            print(f"| {key[0].replace('workers', '--workers ')} | {results[key].rps:.0f} | {results[key].rps / one:.2f} |")
    print("\nResident memory after the run: " + ", ".join(f"{g} {mb:.0f} MB" for g, mb in rss.items()))
    wrong = _wrong_paths(results)
    if wrong:
        missed += ["path not taken: " + w for w in wrong]
    print("All targets met." if not missed else "MISSED:\n  " + "\n  ".join(missed))
    return missed


def _start(stack: contextlib.ExitStack, name: str, cmd: list[str], env: dict[str, str], work: Path,
           ready: str | None) -> int:
    return stack.enter_context(process(cmd, env=env, log=work / f"{name}.log", ready_url=ready, name=name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "mock", "floor"])
    parser.add_argument("--port", type=int, default=0, help="(mock, floor roles) port to listen on")
    parser.add_argument("--upstream-port", type=int, default=0, help="(floor role) the mock's port")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aiestack-bench" / "litellm",
        help="virtualenv holding litellm[proxy] (created on first use)",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--skip-workers", action="store_true", help="leave the --workers rows out")
    parser.add_argument(
        "--aiestack-toml", default="",
        help="extra aiestack.toml lines for the default-configuration process, for diagnosis only",
    )
    args = parser.parse_args()
    if args.role == "mock":
        run_mock(args.port)
        return 0
    if args.role == "floor":
        run_floor(args.port, args.upstream_port)
        return 0

    litellm_exe = None if args.skip_litellm else ensure_litellm(args.litellm_venv)
    with tempfile.TemporaryDirectory(prefix="aiestack-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        mock_port = free_port()
        _start(stack, "mock", [sys.executable, __file__, "mock", "--port", str(mock_port)], base_env(), work, None)
        time.sleep(0.5)
        targets = [Target("direct", mock_port, "/v1/chat/completions", UPSTREAM_MODEL)]
        pids: dict[str, int] = {}
        port = free_port()
        pids["floor"] = _start(stack, "floor", [sys.executable, __file__, "floor", "--port", str(port),
                                                "--upstream-port", str(mock_port)],
                               base_env(), work, f"http://{HOST}:{port}/")
        targets.append(Target("floor", port, "/v1/chat/completions", UPSTREAM_MODEL))
        configs = [("aiestack", args.aiestack_toml.replace("\\n", "\n"), 1), ("alone", ALONE_TOML.replace("\\n", "\n"), 1)]
        if not args.skip_workers:
            configs += [("workers1", "", 1), ("workers2", "", 2)]
        for name, toml, workers in configs:
            port = free_port()
            (work / name).mkdir()
            cmd, env = aiestack_cmd(work / name, port, mock_port, toml)
            cmd += ["--workers", str(workers)]
            pids[name] = _start(stack, name, cmd, env, work / name, f"http://{HOST}:{port}/ready")
            targets.append(Target(name, port, "/v1/chat/completions", GATEWAY_MODEL))
        if litellm_exe is not None:
            port = free_port()
            cmd, env = litellm_cmd(litellm_exe, work, port, mock_port)
            pids["litellm"] = _start(stack, "litellm", cmd, env, work, f"http://{HOST}:{port}/health/liveliness")
            targets.append(Target("litellm", port, "/v1/chat/completions", GATEWAY_MODEL,
                                  {"authorization": f"Bearer {LITELLM_KEY}"}))
        print(f"load average before: {os.getloadavg()[0]:.1f}", file=sys.stderr)
        results = measure(targets, warmup_s=args.warmup, seconds=args.seconds)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        rss = {name: rss_mb(pid) for name, pid in pids.items()}
        errors = {k: r.errors for k, r in results.items() if r.errors}
        missed = report(results, {t.name for t in targets}, rss, args.aiestack_toml)
        if errors:
            print(f"Requests that failed: {errors}")
            for name in pids:
                log = work / name / f"{name}.log" if (work / name).is_dir() else work / f"{name}.log"
                print(f"--- {name} log (tail) ---\n" + log.read_text(errors="replace")[-3000:])
            return 1
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
