"""``aiestack bench load`` against a mock server with a known TTFT and inter-token delay (the issue's check).

Every figure the benchmark reports at concurrency 1, 16 and 64 is compared with the truth the mock
produced: TTFT, TPOT, ITL and e2e at p50, p90 and p99 and their means, requests/s, output tokens/s
and goodput. The truth is the mock's ledger: when each request arrived and when each of its chunks
was written (almost exactly the configured delays), so every quantile is set beside the same
quantile of what the mock did, the tails included. The mock runs as its own process, as a real
server would, and the tool runs as ``aiestack bench load`` runs it (:func:`aiestack.loadbench.measure`,
on uvloop).

No client can time better than the machine's scheduler lets it: on a busy machine a timer fires
late, for the mock and the client alike. So both run at a raised scheduling priority where that is
permitted (root), and the tolerance is the issue's 2% (or 0.2 ms) plus how late the client's own
loop woke while the level ran (the client lag p99 the tool reports for each level), or the lateness
of a 25 ms ``asyncio.sleep`` measured before the run if that is larger (about 0.1 ms on an idle
machine, several ms on a shared 2-core VM under load); the test prints both.

Every quantile is checked, the tails (p90, p99) included. They were not while the client stamped a
chunk when its task read it (aiohttp): chunks of many streams that arrive in one turn of the loop
were stamped one after another, and on 2026-12-07 (load 4.6-10.2) every figure was within the
allowance in 2 of 24 runs, the c = 64 ITL p99 3.8-44 ms over the mock's, e2e p99 17-58 ms over. The
client now takes each batch's time from the kernel (``SO_TIMESTAMPNS``, :mod:`aiestack.loadbench.wire`),
so neither its loop's backlog nor its being off the CPU is in a stamp: every figure was within 2% +
the allowance in 15 of 15 complete runs (load 4.8-10.1), 8 of them within the bare 2% / 0.2 ms, the
c = 64 ITL p99 within 0.5 ms of the mock's (docs/load-bench.md has the table). What is left is the
truth's own error: the mock stamps a request's arrival when its loop reads it, and a chunk just
after writing it, so on a busy machine TTFT and e2e read a few ms over the mock's (it read the
request late), and the test's last check rejects a level where the mock itself fell behind its
500 ms (it did in 2 of 17 runs, at load 5 and 10).

The rates (requests/s, output tokens/s, goodput) are checked against what the mock's ledger shows it
actually served in the level (requests over the span from the first arrival to the last byte
written): a closed loop's ideal ``c / e2e`` leaves out the client's turn-around between one request
and the next, which on 2 cores at c = 64 is a real ~2% of the achieved rate, not a measuring error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from aiestack.loadbench import Endpoint, Plan, measure, parse_length, parse_slo, synthetic
from aiestack.testing.cluster import ServerProcess
from aiestack.testing.net import free_port

TTFT_MS, ITL_MS, TOKENS = 500.0, 25.0, 8
E2E_MS = TTFT_MS + (TOKENS - 1) * ITL_MS


def _close(measured: float | None, truth: float, slack_ms: float = 0.0, *, per_s: bool = False) -> bool:
    """Within 2% (or 0.2 ms) of the truth, widened by the machine's timer lateness ``slack_ms``."""
    if measured is None:
        return False
    if per_s:  # a rate: the slack is a share of one request's time
        return abs(measured - truth) <= truth * (0.02 + slack_ms / E2E_MS)
    return abs(measured - truth) <= max(0.02 * truth, 0.2) + slack_ms


async def _timer_lateness_ms(samples: int = 40) -> float:
    late = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await asyncio.sleep(0.025)
        late.append((time.perf_counter() - t0 - 0.025) * 1000)
    return float(np.percentile(late, 99))


@pytest.fixture(scope="module")
def mock_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "aiestack.testing.mock_llm", "--port", str(port),
               "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--tokens", str(TOKENS)]
    with ServerProcess("mock_llm", command, port=port, log=tmp_path_factory.mktemp("mock") / "mock.log",
                       ready_path="/v1/models") as server, _raised_priority(server.pid):
        yield server.url + "/v1"


@contextlib.contextmanager
def _raised_priority(*pids: int) -> Iterator[None]:
    """Nice −10 for ``pids`` and this process while the block runs, where permitted; else as they are."""
    targets = (*pids, os.getpid())
    before = {pid: os.getpriority(os.PRIO_PROCESS, pid) for pid in targets}
    try:
        for pid in targets:
            with contextlib.suppress(PermissionError):
                os.setpriority(os.PRIO_PROCESS, pid, -10)
        yield
    finally:
        for pid, value in before.items():
            with contextlib.suppress(PermissionError, ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, pid, value)


def _served(ledger: str, count: int) -> tuple[float, dict[str, np.ndarray]]:
    """What the mock did for the level's last ``count`` requests: its request rate, and per request its
    TTFT, e2e and time per output token in ms (from arrival to its first and last chunk written), and
    the gaps between consecutive chunks of every request (pooled, as the tool pools ITL)."""
    data = httpx.get(ledger).json()
    streams = sorted(data["streams"])[-count:]  # the warm-up request came first
    assert all(len(writes) == TOKENS + 1 for writes in streams), "the mock wrote every chunk of each stream"
    ttft = np.array([(writes[1] - writes[0]) * 1000 for writes in streams])
    e2e = np.array([(writes[-1] - writes[0]) * 1000 for writes in streams])
    gaps = np.concatenate([np.diff(writes[1:]) * 1000 for writes in streams])
    rate = count / (max(writes[-1] for writes in streams) - min(writes[0] for writes in streams))
    return rate, {"ttft_ms": ttft, "e2e_ms": e2e, "tpot_ms": (e2e - ttft) / (TOKENS - 1), "itl_ms": gaps}


def _quantile(values: np.ndarray, q: str) -> float:
    """The figure named ``q`` of ``values``, as the tool computes it (numpy's linear percentiles)."""
    return float(np.mean(values) if q == "mean" else np.percentile(values, float(q[1:])))


@pytest.mark.slow
def test_every_quantile_and_rate_is_within_two_percent_of_the_truth_at_c_1_16_64(mock_url: str) -> None:
    workload = synthetic(parse_length("64", option="i"), parse_length(str(TOKENS), option="o"), count=300)
    slo = parse_slo(f"ttft={TTFT_MS * 1.5}ms,tpot={ITL_MS * 1.5}ms")
    sizes = {1: 6, 16: 32, 64: 128}
    slack = asyncio.run(_timer_lateness_ms())
    levels, served = [], {}
    ledger = mock_url.removesuffix("/v1") + "/mock/ledger"
    for c in (1, 16, 64):
        httpx.get(ledger + "?reset=1").raise_for_status()
        one = Plan(concurrency=(c,), requests=sizes[c], slo=slo)
        levels += measure(Endpoint(mock_url, "mock"), workload, one)  # as `aiestack bench load` runs it
        served[c] = _served(ledger, sizes[c])
    print(f"timer lateness p99 on this machine before the run: {slack:.2f} ms")
    wrong: list[str] = []
    for s in levels:
        c = int(s.load)
        rps_truth, did = served[c]
        lag = s.client_lag_ms["p99"]
        assert lag is not None and lag >= 0
        tolerance = max(slack, lag)
        print(f"c={c} client lag p99 {lag:.2f} ms")
        for name, values in did.items():
            print(f"c={c} {name} measured / the mock's: " + ", ".join(
                f"{q} {getattr(s, name)[q]:.2f} / {_quantile(values, q):.2f}" for q in ("p50", "p90", "p99", "mean")))
            for q in ("p50", "p90", "p99", "mean"):
                measured, value = getattr(s, name)[q], _quantile(values, q)
                if not _close(measured, value, tolerance):
                    wrong.append(f"c={c} {name} {q}: {measured} vs {value} (client lag p99 {lag:.2f} ms)")
        print(f"c={c} req/s: measured {s.request_rate:.3f}, served {rps_truth:.3f}, ideal {c / (E2E_MS / 1000):.3f}")
        for name, measured, rate in (
            ("req/s", s.request_rate, rps_truth),
            ("output tok/s", s.output_tokens_per_s, rps_truth * TOKENS),
            ("goodput", s.goodput, rps_truth),
        ):
            assert measured is not None
            if not _close(measured, rate, tolerance, per_s=True):
                wrong.append(f"c={c} {name}: {measured:.3f} vs {rate:.3f}")
        assert s.errors == 0 and s.requests == sizes[c] and s.output_tokens == sizes[c] * TOKENS
        # The mock itself kept to its configured times (else the check above compares with a broken truth).
        assert abs(float(np.median(did["ttft_ms"])) - TTFT_MS) <= 0.02 * TTFT_MS
    assert not wrong, f"timer lateness {slack:.2f} ms; " + "\n".join(wrong)


@pytest.mark.slow
def test_open_loop_poisson_and_the_cli_reports(mock_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aiestack.cli.app import build_app

    slack = asyncio.run(_timer_lateness_ms())
    result = CliRunner().invoke(build_app(), [
        "bench", "load", "--url", mock_url, "--model", "mock", "--rate", "10,40", "--requests", "40",
        "--input-len", "uniform:20,60", "--output-len", str(TOKENS), "--slo", "ttft=1s,tpot=60ms",
        "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [(lvl["mode"], lvl["load"]) for lvl in data["levels"]] == [("rate", 10.0), ("rate", 40.0)]
    for level in data["levels"]:
        assert level["requests"] == 40 and level["errors"] == 0
        assert _close(level["ttft_ms"]["p50"], TTFT_MS, slack), (level["ttft_ms"], slack)
        assert _close(level["tpot_ms"]["p50"], ITL_MS, slack), (level["tpot_ms"], slack)
        # the SLO sits well above the truth (25 ms/token) so one scheduler stall cannot break it
        assert level["slo_met_fraction"] == 1.0
        # Poisson arrivals at `rate` over 40 requests: the achieved rate is near it (and it is open loop,
        # so it does not depend on the 0.675 s each request takes)
        assert 0.5 * level["load"] < level["requests_per_s"] < 1.5 * level["load"]
    assert (tmp_path / "r.html").read_text().count('data-chart="xy"') == 6
    assert "TTFT p50" in result.output


def test_a_server_that_is_not_there_is_a_clear_error() -> None:
    from typer.testing import CliRunner

    from aiestack.cli.app import build_app

    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(build_app(), ["bench", "load", "--url", url, "--model", "m", "-c", "1", "-n", "1"])
    assert result.exit_code == 2
    assert "warm-up request" in result.output
