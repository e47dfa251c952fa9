"""What one benchmark request measured, and the figures of one load level (latency, throughput, goodput).

Definitions follow vLLM's ``benchmark_serving`` (docs/load-bench.md says where llmperf and genai-perf
differ):

- **TTFT**: from sending the request to the first chunk that carries output text;
- **ITL** (inter-token latency): the gaps between consecutive output chunks, pooled over every request;
- **TPOT** (time per output token): per request, ``(e2e − TTFT) / (output tokens − 1)``, for requests
  with more than one output token;
- **e2e**: from sending the request to the end of the response;
- **output tokens/s** and **requests/s**: totals over the level's duration (first send to last end);
- **goodput**: requests/s that met every SLO (TTFT, TPOT, e2e) of ``--slo``.

Beside them, **client lag**: how late the benchmark's own event loop woke for a 5 ms timer while the
level ran (mean, p50/p90/p99). A one-process client at high concurrency on few cores has a backlog
(or a garbage-collection pause): requests go out late by up to the lag (an open loop's arrivals
slip, a closed loop offers less load), and where chunks are stamped in ``data_received`` (https, not
Linux) the stamps carry it too; over plain http on Linux they are the kernel's receive times and do
not. The report flags a level where the lag is not small.

Output tokens are the server's ``usage.completion_tokens`` when it reports them, else the number of
output chunks (one token per chunk, which is what OpenAI-compatible servers stream).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiestack.errors import InvalidRequest

PERCENTILES = (50, 90, 99)
_SLO_METRICS = ("ttft", "tpot", "e2e", "itl")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s)?\s*$")
_UNIT_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, None: 1.0}


@dataclass(slots=True)
class RequestResult:
    """One request as the client saw it; times are ``perf_counter`` seconds."""

    start: float
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    output_tokens: int | None = None  # from the server's usage, when it sent one
    input_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunk_times)

    @property
    def tokens(self) -> int:
        return self.output_tokens if self.output_tokens else len(self.chunk_times)

    @property
    def ttft_ms(self) -> float:
        return (self.chunk_times[0] - self.start) * 1000

    @property
    def e2e_ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def tpot_ms(self) -> float | None:
        if self.tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.tokens - 1)

    def itls_ms(self) -> list[float]:
        t = self.chunk_times
        return [(b - a) * 1000 for a, b in itertools.pairwise(t)]


@dataclass(frozen=True, slots=True)
class Slo:
    """Per-request service-level objectives in milliseconds (None: not constrained).

    ``itl`` bounds a request's largest gap between chunks (a stall)."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None
    itl: float | None = None

    def met(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        tpot = r.tpot_ms
        gaps = r.itls_ms()
        return (
            (self.ttft is None or r.ttft_ms <= self.ttft)
            and (self.tpot is None or tpot is None or tpot <= self.tpot)
            and (self.e2e is None or r.e2e_ms <= self.e2e)
            and (self.itl is None or not gaps or max(gaps) <= self.itl)
        )

    def describe(self) -> str:
        parts = [f"{k}≤{getattr(self, k):g}ms" for k in _SLO_METRICS if getattr(self, k) is not None]
        return ", ".join(parts) or "none"

    def to_json(self) -> dict[str, float]:
        return {k: v for k in _SLO_METRICS if (v := getattr(self, k)) is not None}


def parse_slo(text: str | None) -> Slo:
    """``"ttft=500ms,tpot=50ms,e2e=2s"`` → :class:`Slo` (a bare number is milliseconds)."""
    if not text:
        return Slo()
    values: dict[str, float] = {}
    for part in text.split(","):
        name, _, raw = part.partition("=")
        name = name.strip().lower()
        match = _DURATION.match(raw)
        if name not in _SLO_METRICS or match is None:
            raise InvalidRequest(
                f"Cannot read the SLO {part.strip()!r}.",
                hint="Write NAME=DURATION pairs separated by commas, NAME one of ttft, tpot, e2e, itl, "
                "e.g. --slo ttft=500ms,tpot=50ms,e2e=2s.",
            )
        values[name] = float(match.group(1)) * _UNIT_MS[match.group(2)]
    return Slo(**values)


def distribution(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and p50/p90/p99 (linear interpolation, as numpy and vLLM compute them); None when empty."""
    if not values:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    array = np.asarray(values, dtype=float)
    out: dict[str, float | None] = {"mean": float(array.mean())}
    for q in PERCENTILES:
        out[f"p{q}"] = float(np.percentile(array, q))
    return out


@dataclass(frozen=True, slots=True)
class LevelStats:
    """The figures of one load level (one concurrency, or one request rate)."""

    mode: str  # "concurrency" | "rate"
    load: float
    requests: int
    errors: int
    duration_s: float
    ttft_ms: Mapping[str, float | None]
    tpot_ms: Mapping[str, float | None]
    itl_ms: Mapping[str, float | None]
    e2e_ms: Mapping[str, float | None]
    output_tokens: int
    input_tokens: int
    request_rate: float
    output_tokens_per_s: float
    goodput: float | None
    slo_met_fraction: float | None
    first_error: str | None = None
    client_lag_ms: Mapping[str, float | None] = field(default_factory=lambda: distribution(()))

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "load": self.load, "requests": self.requests, "errors": self.errors,
            "duration_s": self.duration_s, "ttft_ms": dict(self.ttft_ms), "tpot_ms": dict(self.tpot_ms),
            "itl_ms": dict(self.itl_ms), "e2e_ms": dict(self.e2e_ms), "output_tokens": self.output_tokens,
            "input_tokens": self.input_tokens, "requests_per_s": self.request_rate,
            "output_tokens_per_s": self.output_tokens_per_s, "goodput_requests_per_s": self.goodput,
            "slo_met_fraction": self.slo_met_fraction, "first_error": self.first_error,
            "client_lag_ms": dict(self.client_lag_ms),
        }


def summarize(
    mode: str, load: float, results: Sequence[RequestResult], slo: Slo | None = None,
    client_lag_ms: Sequence[float] = (),
) -> LevelStats:
    """The level's figures from its requests' results; the duration runs from the first send to the last end.

    ``client_lag_ms``: the client loop's lateness samples taken while the level ran (see the module doc)."""
    done = [r for r in results if r.ok]
    errors = [r for r in results if not r.ok]
    duration = max((r.end for r in results), default=0.0) - min(r.start for r in results) if results else 0.0
    duration = max(duration, 1e-9)
    tpots = [t for r in done if (t := r.tpot_ms) is not None]
    constrained = slo is not None and slo != Slo()
    good = sum(1 for r in done if slo is not None and slo.met(r)) if constrained else None
    return LevelStats(
        mode=mode,
        load=load,
        requests=len(done),
        errors=len(errors),
        duration_s=duration,
        ttft_ms=distribution([r.ttft_ms for r in done]),
        tpot_ms=distribution(tpots),
        itl_ms=distribution([g for r in done for g in r.itls_ms()]),
        e2e_ms=distribution([r.e2e_ms for r in done]),
        output_tokens=sum(r.tokens for r in done),
        input_tokens=sum(r.input_tokens or 0 for r in done),
        request_rate=len(done) / duration,
        output_tokens_per_s=sum(r.tokens for r in done) / duration,
        goodput=None if good is None else good / duration,
        slo_met_fraction=None if good is None else (good / len(results) if results else math.nan),
        first_error=next((r.error or "no output" for r in errors), None),
        client_lag_ms=distribution(client_lag_ms),
    )
