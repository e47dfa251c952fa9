"""A load benchmark's report: JSON (everything), a self-contained HTML page with latency-vs-load charts,
and the rows of the terminal table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from aiestack.loadbench.metrics import LevelStats, Slo
from aiestack.server.console.charts import xy_chart

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{padding:.25rem .45rem;border-bottom:1px solid #eee}
th{background:#f6f6f6;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.muted{color:#888}
"""
_MODE_LABEL = {"concurrency": "concurrency (closed loop)", "rate": "request rate (open loop, req/s)",
               "replay": "replay (speed-up)"}


@dataclass(frozen=True, slots=True)
class Report:
    """A whole run: where it was sent, what, the SLOs, and one :class:`LevelStats` per level."""

    url: str
    model: str
    workload: str
    slo: Slo
    levels: tuple[LevelStats, ...]
    started_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url, "model": self.model, "workload": self.workload, "slo_ms": self.slo.to_json(),
            "started_at": self.started_at, "levels": [level.to_json() for level in self.levels],
            "definitions": "vLLM benchmark_serving (see docs/load-bench.md)",
        }


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table_rows(levels: Sequence[LevelStats]) -> list[list[str]]:
    """One row per level, the columns of :data:`TABLE_HEADER`."""
    rows = []
    for s in levels:
        rows.append([
            s.mode, f"{s.load:g}", str(s.requests), str(s.errors),
            _ms(s.ttft_ms["p50"]), _ms(s.ttft_ms["p99"]), _ms(s.tpot_ms["p50"]), _ms(s.itl_ms["p50"]),
            _ms(s.itl_ms["p99"]), _ms(s.e2e_ms["p50"]), _ms(s.e2e_ms["p99"]), f"{s.output_tokens_per_s:.1f}",
            f"{s.request_rate:.2f}", "–" if s.goodput is None else f"{s.goodput:.2f}",
            _ms(s.client_lag_ms["p99"]) + (" !" if client_bound(s) else ""),
        ])
    return rows


TABLE_HEADER = ["mode", "load", "ok", "err", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p50", "ITL p99",
                "e2e p50", "e2e p99", "out tok/s", "req/s", "goodput", "client lag p99"]


def client_bound(s: LevelStats) -> bool:
    """Whether the client's own loop lag (p99) exceeds 1 ms and 2% of the smallest median it measured:
    its figures then carry the client's delay as well as the server's."""
    lag = s.client_lag_ms["p99"]
    medians = [m for m in (s.ttft_ms["p50"], s.itl_ms["p50"]) if m is not None]
    return lag is not None and bool(medians) and lag > max(1.0, 0.02 * min(medians))


def client_bound_note(levels: Sequence[LevelStats]) -> str | None:
    """The warning for levels marked "!" in the table, or None when there are none."""
    busy = [f"{s.mode} {s.load:g}" for s in levels if client_bound(s)]
    if not busy:
        return None
    return ("! the benchmark's own client was busy at " + ", ".join(busy) + ": its event loop woke up "
            "to the lag shown late, so requests went out up to that late (fewer in flight than asked), and "
            "over https each chunk's time may include that much of the client's delay. Lower the "
            "concurrency, or run the client on a machine or core of its own.")


def _charts(levels: Sequence[LevelStats], mode: str) -> list[str]:
    picked = [s for s in levels if s.mode == mode]
    if not picked:
        return []
    xs = [s.load for s in picked]
    label = _MODE_LABEL[mode]

    def pcts(attr: str) -> Mapping[str, list[float | None]]:
        return {f"p{q}": [getattr(s, attr)[f"p{q}"] for s in picked] for q in (50, 90, 99)}

    charts = [
        xy_chart("TTFT", xs, pcts("ttft_ms"), x_label=label, unit="ms"),
        xy_chart("TPOT", xs, pcts("tpot_ms"), x_label=label, unit="ms"),
        xy_chart("Inter-token latency", xs, pcts("itl_ms"), x_label=label, unit="ms"),
        xy_chart("End-to-end latency", xs, pcts("e2e_ms"), x_label=label, unit="ms"),
        xy_chart("Output tokens/s", xs, {"tokens/s": [s.output_tokens_per_s for s in picked]}, x_label=label),
        xy_chart(
            "Requests/s",
            xs,
            {"requests/s": [s.request_rate for s in picked],
             **({"goodput": [s.goodput for s in picked]} if any(s.goodput is not None for s in picked) else {})},
            x_label=label,
        ),
    ]
    return [f"<h2>Latency and throughput vs {escape(label)}</h2>", '<div class="charts">', *charts, "</div>"]


def render_html(report: Report) -> str:
    """One HTML file, inline CSS and SVG, no scripts: opens anywhere (a CI artifact, an offline laptop)."""
    when = dt.datetime.fromtimestamp(report.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = "".join(f"<th>{escape(h)}</th>" for h in TABLE_HEADER)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if i > 0 else f"<td>{escape(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in table_rows(report.levels)
    )
    errors = [f"<li>{escape(s.mode)} {s.load:g}: {escape(s.first_error or '')}</li>" for s in report.levels if s.errors]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>aiestack load benchmark</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Load benchmark</h1>",
        f"<p>{escape(report.url)} · model <b>{escape(report.model)}</b> · {escape(when)}<br>",
        f"Workload: {escape(report.workload)} · SLOs for goodput: {escape(report.slo.describe())}</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        '<p class="muted">Milliseconds. TTFT, TPOT, ITL and e2e follow vLLM benchmark_serving\'s definitions; '
        "docs/load-bench.md says where llmperf and genai-perf differ. Client lag: how late the benchmark's "
        "own event loop woke for a 5 ms timer during the level.</p>",
    ]
    if (note := client_bound_note(report.levels)) is not None:
        parts.append(f"<p><b>{escape(note)}</b></p>")
    if errors:
        parts += ["<h2>Errors (first per level)</h2><ul>", *errors, "</ul>"]
    for mode in ("concurrency", "rate", "replay"):
        parts += _charts(report.levels, mode)
    parts.append("</body></html>")
    return "".join(parts)
