"""aiestack.loadbench: the figures from known request timings, SLO parsing, workloads, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiestack.errors import InvalidRequest
from aiestack.loadbench import (
    Report,
    RequestResult,
    Slo,
    from_dataset,
    from_exchanges,
    parse_length,
    parse_slo,
    render_html,
    summarize,
    synthetic,
)
from aiestack.loadbench.runner import arrival_offsets
from aiestack.stores.base import ExchangeRecord


def _request(start: float, ttft: float, gaps: list[float], tokens: int | None = None) -> RequestResult:
    times = [start + ttft]
    for gap in gaps:
        times.append(times[-1] + gap)
    return RequestResult(start=start, end=times[-1] + 0.001, chunk_times=times, output_tokens=tokens)


def test_each_figure_follows_the_vllm_definitions() -> None:
    a = _request(0.0, 0.100, [0.010, 0.030])  # 3 chunks, e2e 141 ms
    b = _request(0.5, 0.300, [0.020], tokens=5)  # usage says 5 tokens in 2 chunks
    s = summarize("concurrency", 2, [a, b])
    assert s.requests == 2 and s.errors == 0
    assert s.ttft_ms["mean"] == pytest.approx(200.0)
    assert s.ttft_ms["p50"] == pytest.approx(200.0)
    assert s.ttft_ms["p99"] == pytest.approx(100 + 0.99 * 200)
    # TPOT = (e2e - ttft) / (tokens - 1): a (141-100)/2 = 20.5, b (321-300)/4 = 5.25
    assert s.tpot_ms["mean"] == pytest.approx((20.5 + 5.25) / 2)
    # ITL pools the chunk gaps of every request
    assert sorted([10.0, 30.0, 20.0]) == pytest.approx(sorted(a.itls_ms() + b.itls_ms()))
    assert s.itl_ms["p50"] == pytest.approx(20.0)
    assert s.e2e_ms["p50"] == pytest.approx((141 + 321) / 2)
    duration = (0.5 + 0.321) - 0.0
    assert s.duration_s == pytest.approx(duration)
    assert s.output_tokens == 3 + 5
    assert s.output_tokens_per_s == pytest.approx(8 / duration)
    assert s.request_rate == pytest.approx(2 / duration)
    assert s.goodput is None


def test_goodput_counts_only_requests_that_meet_every_slo() -> None:
    fast = _request(0.0, 0.100, [0.010] * 4)
    slow_start = _request(0.0, 0.600, [0.010] * 4)
    slow_tokens = _request(0.0, 0.100, [0.080] * 4)
    failed = RequestResult(start=0.0, end=0.2, error="HTTP 500")
    s = summarize("rate", 1.0, [fast, slow_start, slow_tokens, failed], parse_slo("ttft=500ms,tpot=50ms"))
    assert s.errors == 1 and s.requests == 3
    assert s.goodput == pytest.approx(1 / s.duration_s)
    assert s.slo_met_fraction == pytest.approx(0.25)
    assert s.first_error == "HTTP 500"


def test_slo_units_and_errors() -> None:
    assert parse_slo("ttft=0.5s, tpot=50, e2e=2000ms, itl=900us") == Slo(ttft=500.0, tpot=50.0, e2e=2000.0, itl=0.9)
    assert parse_slo(None) == Slo()
    for bad in ("ttft", "speed=5ms", "ttft=fast"):
        with pytest.raises(InvalidRequest, match="SLO"):
            parse_slo(bad)


def test_length_distributions() -> None:
    rng = np.random.default_rng(0)
    assert parse_length("64", option="--x").sample(rng, 3) == [64, 64, 64]
    values = parse_length("uniform:10,20", option="--x").sample(rng, 500)
    assert min(values) >= 10 and max(values) <= 20 and len(set(values)) == 11
    normal = parse_length("normal:200,20", option="--x").sample(rng, 2000)
    assert abs(float(np.mean(normal)) - 200) < 3
    assert min(parse_length("exponential:5", option="--x").sample(rng, 500)) >= 1
    for bad in ("", "uniform:5", "uniform:9,3", "gamma:2", "normal:0,1", "-3"):
        with pytest.raises(InvalidRequest, match="--x"):
            parse_length(bad, option="--x")


def test_synthetic_prompts_differ_and_share_only_the_asked_prefix() -> None:
    w = synthetic(parse_length("50", option="i"), parse_length("uniform:5,9", option="o"), count=20, prefix_len=30)
    texts = [s.messages[0]["content"] for s in w.specs]
    assert len(set(texts)) == 20
    assert len({t.split()[:30].__repr__() for t in texts}) == 1
    assert all(len(t.split()) == 80 for t in texts)
    assert all(5 <= s.max_tokens <= 9 for s in w.specs)


def test_datasets_jsonl_and_sharegpt(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        json.dumps({"prompt": "hello there", "max_tokens": 7}) + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n"
        + json.dumps({"other": 1}) + "\n"
    )
    w = from_dataset(jsonl, default_output=parse_length("11", option="o"))
    assert [s.max_tokens for s in w.specs] == [7, 11]
    assert w.specs[0].messages == ({"role": "user", "content": "hello there"},)
    share = tmp_path / "sg.json"
    share.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "q" * 40}, {"from": "gpt", "value": "a" * 80}]},
        {"conversations": [{"from": "gpt", "value": "orphan"}]},
    ]))
    w = from_dataset(share, default_output=parse_length("11", option="o"))
    assert len(w.specs) == 1 and w.specs[0].max_tokens == 20 and w.specs[0].input_tokens == 10
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"x": 1}) + "\n")
    with pytest.raises(InvalidRequest, match="no usable request"):
        from_dataset(empty, default_output=parse_length("1", option="o"))
    with pytest.raises(InvalidRequest, match="No dataset file"):
        from_dataset(tmp_path / "missing.jsonl", default_output=parse_length("1", option="o"))


def test_replay_keeps_messages_lengths_and_arrival_gaps() -> None:
    records = [
        ExchangeRecord(id="b", created_at=102.0, model="m", outcome="ok", input_tokens=30, output_tokens=12),
        ExchangeRecord(id="a", created_at=100.0, model="m", outcome="ok", input_tokens=5, output_tokens=3,
                       request={"messages": [{"role": "user", "content": "stored question", "x": 1}]}),
        ExchangeRecord(id="c", created_at=101.0, model="m", outcome="error"),
    ]
    w = from_exchanges(records)
    assert [s.max_tokens for s in w.specs] == [3, 12]
    assert w.specs[0].messages == ({"role": "user", "content": "stored question"},)
    assert len(w.specs[1].messages[0]["content"].split()) == 30
    assert w.gaps_s == (0.0, 2.0)
    assert arrival_offsets(3, rate=None, gaps_s=w.gaps_s, speedup=2.0, seed=0) == [0.0, 1.0, 1.0]
    with pytest.raises(InvalidRequest, match="no completed exchange"):
        from_exchanges(records[2:])


def test_poisson_arrivals_have_the_asked_rate() -> None:
    offsets = arrival_offsets(4000, rate=8.0, gaps_s=(), speedup=1.0, seed=3)
    gaps = np.diff(offsets)
    assert offsets[0] == 0.0
    assert abs(1 / float(np.mean(gaps)) - 8.0) < 0.4
    assert abs(float(np.std(gaps)) / float(np.mean(gaps)) - 1.0) < 0.06  # exponential: CV = 1
    again = arrival_offsets(10, rate=8.0, gaps_s=(), speedup=1.0, seed=3)
    assert again == arrival_offsets(10, rate=8.0, gaps_s=(), speedup=1.0, seed=3)
    assert again != arrival_offsets(10, rate=8.0, gaps_s=(), speedup=1.0, seed=4)


def test_html_report_has_a_chart_per_figure_and_escapes_text() -> None:
    levels = tuple(
        summarize("concurrency", c, [_request(0.0, 0.1 * c, [0.01, 0.02])], parse_slo("ttft=150ms")) for c in (1, 2, 4)
    )
    report = Report("http://h/v1", "<m>", "synthetic", parse_slo("ttft=150ms"), levels, 0.0)
    page = render_html(report)
    assert page.count('data-chart="xy"') == 6
    assert "&lt;m&gt;" in page and "<m>" not in page
    assert "ttft≤150ms" in page
    data = report.to_json()
    assert [lvl["load"] for lvl in data["levels"]] == [1, 2, 4]
    assert data["levels"][0]["goodput_requests_per_s"] > 0
    assert data["levels"][2]["goodput_requests_per_s"] == 0


def test_client_lag_records_how_late_a_blocked_loop_wakes() -> None:
    import asyncio
    import time

    from aiestack.loadbench.runner import client_lag

    async def run() -> list[float]:
        async with client_lag() as lag:
            await asyncio.sleep(0.03)  # punctual ticks first
            time.sleep(0.04)  # then the loop is blocked for 40 ms, as a busy client's is
            await asyncio.sleep(0.02)
        return lag

    samples = asyncio.run(run())
    assert len(samples) >= 3
    assert max(samples) >= 30.0  # the tick due during the block woke ≥ 30 ms late
    assert float(np.median(samples)) < 10.0


def test_a_level_whose_client_lagged_is_flagged_in_the_table_json_and_html() -> None:
    from aiestack.loadbench.report import client_bound, client_bound_note, table_rows

    requests = [_request(0.0, 0.5, [0.025] * 7)]
    calm = summarize("concurrency", 1, requests, client_lag_ms=[0.1, 0.2, 0.3])
    busy = summarize("concurrency", 64, requests, client_lag_ms=[0.2, 0.4, 9.0])  # 9 ms > 2% of ITL 25 ms
    assert not client_bound(calm) and client_bound(busy)
    assert busy.client_lag_ms["p99"] == pytest.approx(np.percentile([0.2, 0.4, 9.0], 99))
    assert table_rows([calm])[0][-1] == "0.3" and table_rows([busy])[0][-1].endswith(" !")
    note = client_bound_note([calm, busy])
    assert note is not None and "concurrency 64" in note and "concurrency 1," not in note
    assert client_bound_note([calm]) is None
    report = Report("http://h/v1", "m", "synthetic", Slo(), (calm, busy), 0.0)
    assert "client was busy" in render_html(report)
    assert report.to_json()["levels"][1]["client_lag_ms"]["p99"] == pytest.approx(busy.client_lag_ms["p99"])
    no_samples = summarize("concurrency", 1, requests)
    assert no_samples.client_lag_ms["p99"] is None and not client_bound(no_samples)
