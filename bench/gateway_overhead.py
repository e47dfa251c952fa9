"""Gateway overhead: what aiestack adds over calling the upstream directly, against the LiteLLM proxy.

Anchor: the LiteLLM proxy (``litellm[proxy]``, installed into its own virtualenv so it never
touches the project's). Both gateways point at the same local mock OpenAI upstream (a small fixed
reply, streamed or whole), are driven by the same load generator, in the same run on the same
machine, each as its own process on 127.0.0.1:

- the mock upstream: a raw asyncio HTTP/1.1 server (uvloop when installed) that answers
  ``/v1/chat/completions`` with a fixed JSON body or a fixed SSE stream, so that it costs almost
  nothing and the gateways, not the mock, are measured;
- aiestack: ``aiestack serve`` (one worker, ``embedded_model = false``, one ``openai`` model
  pointing at the mock, tracing on as by default);
- LiteLLM: ``litellm --config ... --num_workers 1`` with one model pointing at the mock;
- the load generator (this process): N keep-alive connections, each sending the next request as
  soon as the last response has been read to its end; the direct-to-mock baseline is measured
  with the same generator.

For concurrency 1, 16 and 64 and both modes (whole answer, streamed) it reports the latency each
gateway adds over the direct baseline (p50, p95, p99) and the requests/s one gateway process
serves, with ratios. Targets: aiestack adds ≤ 1 ms at p50 at concurrency 1, and at every
concurrency its added p50 is ≤ 1/5 of LiteLLM's and its requests/s ≥ 3× LiteLLM's. The script
exits 1 when a target is missed.

    .venv/bin/python bench/gateway_overhead.py                 # creates the LiteLLM venv on first use
    .venv/bin/python bench/gateway_overhead.py --seconds 3 --litellm-venv /tmp/litellm-venv
    .venv/bin/python bench/gateway_overhead.py --skip-litellm  # aiestack and the baseline only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
UPSTREAM_MODEL = "gpt-4o-mini"
GATEWAY_MODEL = "mock"
LITELLM_KEY = "sk-bench-master"
CONCURRENCY = (1, 16, 64)
MODES = ("whole", "stream")
REPLY = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
RESPONSE_TIMEOUT_S = 30.0
TARGET_ADDED_P50_MS = 1.0
TARGET_P50_RATIO = 1 / 5
TARGET_RPS_RATIO = 3.0


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

    def request(self, stream: bool) -> bytes:
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hello in a friendly way."}],
            "max_tokens": 32,
        }
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


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
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

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def load(target: Target, *, stream: bool, concurrency: int, warmup_s: float, seconds: float) -> Result:
    """``concurrency`` keep-alive connections in closed loop; latencies of requests started after warm-up."""
    request = target.request(stream)
    start = time.perf_counter()
    measure_from, until = start + warmup_s, start + warmup_s + seconds
    latencies: list[float] = []
    errors = 0

    def failed(what: str) -> None:
        nonlocal errors
        errors += 1
        if errors == 1:
            print(f"  {target.name}: {what}", file=sys.stderr)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, target.port)
        try:
            while (t0 := time.perf_counter()) < until:
                writer.write(request)
                try:
                    status, body = await asyncio.wait_for(_read_response(reader), RESPONSE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                    failed(f"connection lost mid-response ({exc!r}); reconnecting")
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, target.port)
                    continue
                t1 = time.perf_counter()
                if status != 200 or (stream and b"[DONE]" not in body):
                    failed(f"HTTP {status}: {body[:300]!r}")
                elif t0 >= measure_from and t1 <= until:
                    latencies.append((t1 - t0) * 1000)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(latencies, seconds, errors)


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


Key = tuple[str, str, int]  # (target, mode, concurrency)


def measure(targets: list[Target], *, warmup_s: float, seconds: float) -> dict[Key, Result]:
    _use_uvloop()
    results: dict[Key, Result] = {}
    for mode in MODES:
        for c in CONCURRENCY:
            for t in targets:
                r = asyncio.run(
                    load(t, stream=mode == "stream", concurrency=c, warmup_s=warmup_s, seconds=seconds)
                )
                results[(t.name, mode, c)] = r
                print(
                    f"  {mode:6} c={c:<3} {t.name:9} p50 {r.pct(50):7.2f} ms  {r.rps:7.0f} req/s"
                    + (f"  errors {r.errors}" if r.errors else ""),
                    file=sys.stderr,
                )
    return results


def report(results: dict[Key, Result], gateways: list[str], rss: dict[str, float]) -> list[str]:
    """Print the table; return the targets missed."""
    missed: list[str] = []
    print(
        f"Gateway overhead over a local mock upstream, {len(REPLY)}-chunk reply; added = gateway − direct (ms)\n"
    )
    print(
        "| mode | conc. | direct p50 | direct req/s | gateway | added p50 | added p95 | added p99 | req/s |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for mode in MODES:
        for c in CONCURRENCY:
            direct = results[("direct", mode, c)]
            for g in gateways:
                r = results[(g, mode, c)]
                added = [r.pct(q) - direct.pct(q) for q in (50, 95, 99)]
                print(
                    f"| {mode} | {c} | {direct.pct(50):.2f} | {direct.rps:.0f} | {g} | "
                    + " | ".join(f"{a:.2f}" for a in added)
                    + f" | {r.rps:.0f} |"
                )
    if "litellm" in gateways:
        print("\n| mode | conc. | added p50 aiestack / litellm | req/s aiestack / litellm |")
        print("|---|---:|---:|---:|")
    for mode in MODES:
        for c in CONCURRENCY:
            direct, ours = results[("direct", mode, c)], results[("aiestack", mode, c)]
            ours_added = ours.pct(50) - direct.pct(50)
            if c == 1 and ours_added > TARGET_ADDED_P50_MS:
                missed.append(
                    f"{mode} c=1: aiestack adds {ours_added:.2f} ms at p50 (target ≤ {TARGET_ADDED_P50_MS} ms)"
                )
            if "litellm" not in gateways:
                continue
            theirs = results[("litellm", mode, c)]
            theirs_added = theirs.pct(50) - direct.pct(50)
            p50_ratio = ours_added / theirs_added if theirs_added > 0 else float("inf")
            rps_ratio = ours.rps / theirs.rps if theirs.rps > 0 else float("inf")
            print(f"| {mode} | {c} | {p50_ratio:.3f} | {rps_ratio:.2f}× |")
            if p50_ratio > TARGET_P50_RATIO:
                missed.append(
                    f"{mode} c={c}: added p50 ratio {p50_ratio:.3f} (target ≤ {TARGET_P50_RATIO:.2f})"
                )
            if rps_ratio < TARGET_RPS_RATIO:
                missed.append(f"{mode} c={c}: req/s ratio {rps_ratio:.2f} (target ≥ {TARGET_RPS_RATIO:.0f}×)")
    print("\nResident memory after the run: " + ", ".join(f"{g} {mb:.0f} MB" for g, mb in rss.items()))
    print(
        f"\nTargets: aiestack adds ≤ {TARGET_ADDED_P50_MS} ms at p50 at concurrency 1; "
        f"added p50 ≤ {TARGET_P50_RATIO:.2f}× and req/s ≥ {TARGET_RPS_RATIO:.0f}× LiteLLM's at every concurrency."
    )
    print("All targets met." if not missed else "MISSED:\n  " + "\n  ".join(missed))
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "mock"])
    parser.add_argument("--port", type=int, default=0, help="(mock role) port to listen on")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--litellm-venv",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aiestack-bench" / "litellm",
        help="virtualenv holding litellm[proxy] (created on first use)",
    )
    parser.add_argument("--skip-litellm", action="store_true", help="measure aiestack and the baseline only")
    parser.add_argument(
        "--aiestack-toml",
        default="",
        help="extra aiestack.toml lines, for diagnosis (e.g. '[feedback]\\nimplicit = false'); "
        "the published figures use none",
    )
    args = parser.parse_args()
    if args.role == "mock":
        run_mock(args.port)
        return 0

    litellm_exe = None if args.skip_litellm else ensure_litellm(args.litellm_venv)
    with tempfile.TemporaryDirectory(prefix="aiestack-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        mock_port, ours_port, theirs_port = free_port(), free_port(), free_port()
        mock_cmd = [sys.executable, __file__, "mock", "--port", str(mock_port)]
        stack.enter_context(
            process(mock_cmd, env=base_env(), log=work / "mock.log", ready_url=None, name="mock")
        )
        time.sleep(0.5)
        cmd, env = aiestack_cmd(work, ours_port, mock_port, args.aiestack_toml.replace("\\n", "\n"))
        pids = {
            "aiestack": stack.enter_context(
                process(
                    cmd,
                    env=env,
                    log=work / "aiestack.log",
                    ready_url=f"http://{HOST}:{ours_port}/ready",
                    name="aiestack",
                )
            )
        }
        targets = [
            Target("direct", mock_port, "/v1/chat/completions", UPSTREAM_MODEL),
            Target("aiestack", ours_port, "/v1/chat/completions", GATEWAY_MODEL),
        ]
        if litellm_exe is not None:
            cmd, env = litellm_cmd(litellm_exe, work, theirs_port, mock_port)
            pids["litellm"] = stack.enter_context(
                process(
                    cmd,
                    env=env,
                    log=work / "litellm.log",
                    ready_url=f"http://{HOST}:{theirs_port}/health/liveliness",
                    name="litellm",
                )
            )
            targets.append(
                Target(
                    "litellm",
                    theirs_port,
                    "/v1/chat/completions",
                    GATEWAY_MODEL,
                    {"authorization": f"Bearer {LITELLM_KEY}"},
                )
            )
        results = measure(targets, warmup_s=args.warmup, seconds=args.seconds)
        rss = {name: rss_mb(pid) for name, pid in pids.items()}
        errors = {k: r.errors for k, r in results.items() if r.errors}
        missed = report(results, [t.name for t in targets if t.name != "direct"], rss)
        if errors:
            print(f"Requests that failed: {errors}")
            for name in pids:
                print(
                    f"--- {name} log (tail) ---\n"
                    + (work / f"{name}.log").read_text(errors="replace")[-3000:]
                )
            return 1
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
