"""A self-contained HTML report of a run: one file, inline CSS and inline SVG, no scripts or CDNs.

It must open anywhere (a CI artifact, an air-gapped laptop), so every chart is drawn here as SVG.
Everything that comes from data (outputs, inputs, system names) goes through ``html.escape``:
model outputs may contain markup.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from aiestack.evals.compare import stored_ranking
from aiestack.evals.gates import Comparison, describe
from aiestack.evals.ranking import Ranking, Rating
from aiestack.evals.report import ordered_systems
from aiestack.evals.summary import SystemSummary
from aiestack.stores.base import EvalResultRecord
from aiestack.types import EvalRun

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{padding:.3rem .5rem;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{border:1px solid #eee;padding:.5rem}
pre{white-space:pre-wrap;margin:0;max-height:12rem;overflow:auto;font-size:12px}
.fail{color:#c0392b;font-weight:bold}.pass{color:#27ae60}.skip{color:#b7950b}.muted{color:#888}
"""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def bar_chart(title: str, bars: Sequence[tuple[str, float | None, float | None, float | None]]) -> str:
    """Horizontal bars (label, mean, CI low, CI high) with CI whiskers, as an SVG element."""
    width, row, left, right = 420, 26, 130, 60
    height = 30 + row * len(bars)
    values = [v for _, mean, low, high in bars for v in (mean, low, high) if v is not None]
    top = max([*values, 0.0]) or 1.0
    bottom = min([*values, 0.0])
    span = (top - bottom) or 1.0

    def x(v: float) -> float:
        return left + (v - bottom) / span * (width - left - right)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
    ]
    parts.append(f'<text x="4" y="16" font-weight="bold" font-size="13">{escape(title)}</text>')
    for i, (label, mean, low, high) in enumerate(bars):
        y = 26 + i * row
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<text x="4" y="{y + 14}" font-size="12">{escape(label[:18])}</text>')
        if mean is None:
            parts.append(f'<text x="{left}" y="{y + 14}" font-size="12" fill="#888">no scores</text>')
            continue
        x0, x1 = sorted((x(0.0), x(mean)))
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1):.1f}" height="16" fill="{colour}"/>'
        )
        if low is not None and high is not None:
            parts.append(
                f'<path d="M{x(low):.1f} {y + 11}H{x(high):.1f}M{x(low):.1f} {y + 6}V{y + 16}M{x(high):.1f} {y + 6}V{y + 16}" '
                'stroke="#222" stroke-width="1.3" fill="none"/>'
            )
        parts.append(
            f'<text x="{max(x1, x(high or mean)) + 4:.1f}" y="{y + 15}" font-size="11">{mean:.3g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, series: Mapping[str, Sequence[float]], *, bins: int = 20) -> str:
    """Overlaid histograms (one colour per system) of values such as latencies, as an SVG element."""
    width, height, pad = 420, 200, 30
    values = [v for vs in series.values() for v in vs]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img" aria-label="{escape(title)}">'
    ]
    parts.append(f'<text x="4" y="16" font-weight="bold" font-size="13">{escape(title)}</text>')
    if not values:
        parts.append('<text x="4" y="40" font-size="12" fill="#888">no data</text></svg>')
        return "".join(parts)
    low, high = min(values), max(values)
    step = (high - low) / bins or 1.0
    counts = {name: [0] * bins for name in series}
    for name, vs in series.items():
        for v in vs:
            counts[name][min(int((v - low) / step), bins - 1)] += 1
    peak = max(max(c) for c in counts.values()) or 1
    bar_w = (width - 2 * pad) / bins
    for s, (name, cs) in enumerate(counts.items()):
        colour = _PALETTE[s % len(_PALETTE)]
        for b, count in enumerate(cs):
            if count:
                h = count / peak * (height - 40)
                parts.append(
                    f'<rect x="{pad + b * bar_w:.1f}" y="{height - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                    f'fill="{colour}" fill-opacity="0.55"/>'
                )
        parts.append(f'<rect x="{pad + s * 110}" y="{height + 18}" width="10" height="10" fill="{colour}"/>')
        parts.append(
            f'<text x="{pad + s * 110 + 14}" y="{height + 27}" font-size="11">{escape(name[:14])}</text>'
        )
    parts.append(f'<line x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}" stroke="#999"/>')
    parts.append(f'<text x="{pad}" y="{height + 12}" font-size="10">{low:.0f}</text>')
    parts.append(
        f'<text x="{width - pad}" y="{height + 12}" font-size="10" text-anchor="end">{high:.0f}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_html(
    run: EvalRun,
    summaries: Mapping[str, SystemSummary],
    results: Sequence[EvalResultRecord],
    *,
    comparison: Comparison | None = None,
    inputs: Mapping[str, str] | None = None,
    max_examples: int = 500,
) -> str:
    """The whole report as one HTML document (``inputs`` maps example ids to their rendered input)."""
    info: Mapping[str, Mapping[str, Any]] = run.summary.get("metrics", {})
    per_example = [n for n, i in info.items() if not i.get("corpus")]
    ordered = ordered_systems(summaries, per_example[0] if per_example else None)
    started = dt.datetime.fromtimestamp(run.started_at).strftime("%Y-%m-%d %H:%M")
    body = [
        f"<h1>Evaluation: {escape(run.suite)}</h1>",
        f'<p class="muted">run {escape(run.id)} · started {started} · {len(results)} results · status '
        f"{escape(str(run.summary.get('status', '?')))}</p>",
        "<h2>Leaderboard</h2>",
        _leaderboard(ordered, info),
        "<h2>Charts</h2>",
        '<div class="charts">',
    ]
    for name in per_example:
        bars = [(s.system, *_ci(s, name)) for s in ordered]
        arrow = "" if info[name].get("higher_is_better", True) else " (lower is better)"
        body.append(f'<div class="chart">{bar_chart(f"{name}{arrow}", bars)}</div>')
    latencies = {
        s: [r.latency_ms for r in results if r.system == s and r.latency_ms is not None] for s in summaries
    }
    body.append(f'<div class="chart">{histogram("Latency per example (ms)", latencies)}</div></div>')
    compared = stored_ranking(run.summary)
    if compared is not None:
        body.append(_ranking(*compared))
    if comparison is not None:
        body.append(_comparison(comparison))
    body.append(_examples(results, per_example, inputs or {}, max_examples))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(run.suite)} – aiestack eval</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )


def _ci(s: SystemSummary, metric: str) -> tuple[float | None, float | None, float | None]:
    m = s.metrics.get(metric)
    return (None, None, None) if m is None else (m.mean, m.low, m.high)


def _leaderboard(ordered: Sequence[SystemSummary], info: Mapping[str, Mapping[str, Any]]) -> str:
    names = list(info)
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for rank, s in enumerate(ordered, 1):
        cells = []
        for n in names:
            if info[n].get("corpus"):
                cells.append(f'<td class="num">{_fmt(s.corpus.get(n))}</td>')
            else:
                mean, low, high = _ci(s, n)
                cells.append(
                    f'<td class="num">{_fmt(mean)} <span class="muted">[{_fmt(low, 2)}–{_fmt(high, 2)}]</span></td>'
                )
        cost = "–" if s.cost_per_example_usd is None else f"{s.cost_per_example_usd:.6f}"
        rows.append(
            f"<tr><td>{rank}</td><td>{escape(s.system)}</td>{''.join(cells)}<td class='num'>{_fmt(s.latency_p50_ms, 1)}</td>"
            f"<td class='num'>{cost}</td><td class='num'>{s.examples}</td><td class='num'>{s.errors}</td></tr>"
        )
    return (
        f"<table><tr><th>#</th><th>system</th>{head}<th>p50 ms</th><th>$/example</th><th>n</th><th>errors</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _comparison(c: Comparison) -> str:
    parts = [
        "<h2>Against the baseline</h2><table><tr><th>system</th><th>metric</th><th>baseline</th><th>current</th>"
        "<th>delta</th><th>95% CI</th><th>n</th></tr>"
    ]
    for d in c.deltas:
        parts.append(
            f"<tr><td>{escape(d.system)}</td><td>{escape(d.metric)}</td><td class='num'>{_fmt(d.baseline)}</td>"
            f"<td class='num'>{_fmt(d.current)}</td><td class='num'>{d.delta:+.3f}</td>"
            f"<td class='num'>[{d.low:+.3f}, {d.high:+.3f}]</td><td class='num'>{d.n}</td></tr>"
        )
    parts.append("</table>")
    if c.gates:
        parts.append(
            "<h2>Gates</h2><table><tr><th>gate</th><th>system</th><th>status</th><th>detail</th></tr>"
        )
        for g in c.gates:
            parts.append(
                f"<tr><td>{escape(describe(g.gate))}</td><td>{escape(g.system)}</td>"
                f"<td class='{g.status}'>{g.status}</td><td>{escape(g.detail)}</td></tr>"
            )
        parts.append("</table>")
    if c.flips:
        parts.append(
            "<h2>Flipped examples</h2><table><tr><th>system</th><th>metric</th><th>example</th><th>before</th><th>after</th></tr>"
        )
        for f in c.flips:
            parts.append(
                f"<tr><td>{escape(f.system)}</td><td>{escape(f.metric)}</td><td>{escape(f.example_id)}</td>"
                f"<td class='num'>{_fmt(f.before, 2)}</td><td class='num {'fail' if f.regressed else 'pass'}'>{_fmt(f.after, 2)}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts)


def _examples(
    results: Sequence[EvalResultRecord], metrics: Sequence[str], inputs: Mapping[str, str], limit: int
) -> str:
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    rows = []
    for r in list(results)[:limit]:
        scores = "".join(f"<td class='num'>{_fmt(r.scores.get(m), 2)}</td>" for m in metrics)
        output = escape(r.output) if r.error is None else f"<span class='fail'>{escape(r.error)}</span>"
        detail = escape(json.dumps(dict(r.details), ensure_ascii=False, default=str)) if r.details else ""
        rows.append(
            f"<tr><td>{escape(r.example_id)}</td><td>{escape(r.system)}</td><td><pre>{escape(inputs.get(r.example_id, ''))}</pre></td>"
            f"<td><pre>{output}</pre></td>{scores}<td><pre class='muted'>{detail}</pre></td></tr>"
        )
    more = (
        f"<p class='muted'>{len(results) - limit} more results not shown.</p>" if len(results) > limit else ""
    )
    return (
        f"<h2>Examples</h2><table><tr><th>example</th><th>system</th><th>input</th><th>output</th>{head}<th>detail</th></tr>"
        + "".join(rows)
        + "</table>"
        + more
    )


def rating_chart(title: str, ratings: Sequence[Rating]) -> str:
    """Ratings as dots with their confidence intervals as whiskers, on an axis fitted to the intervals.

    Bars from zero would hide the differences (ratings sit around 1000), so this is a dot plot with
    a dashed line at 1000, the geometric-mean system.
    """
    width, row, left, right = 520, 26, 130, 50
    height = 50 + row * len(ratings)
    values = [v for r in ratings for v in (r.rating, r.low, r.high)] + [1000.0]
    bottom, top = min(values), max(values)
    pad = (top - bottom) * 0.05 or 10.0
    bottom, top = bottom - pad, top + pad

    def x(v: float) -> float:
        return left + (v - bottom) / (top - bottom) * (width - left - right)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-weight="bold" font-size="13">{escape(title)}</text>',
        f'<line x1="{x(1000):.1f}" y1="24" x2="{x(1000):.1f}" y2="{height - 20}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>',
    ]
    for i, r in enumerate(ratings):
        y = 26 + i * row + 11
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(f'<text x="4" y="{y + 4}" font-size="12">{escape(r.system[:18])}</text>')
        parts.append(
            f'<path d="M{x(r.low):.1f} {y}H{x(r.high):.1f}M{x(r.low):.1f} {y - 5}V{y + 5}'
            f'M{x(r.high):.1f} {y - 5}V{y + 5}" stroke="#222" stroke-width="1.3" fill="none"/>'
        )
        parts.append(f'<circle cx="{x(r.rating):.1f}" cy="{y}" r="5" fill="{colour}"/>')
        parts.append(f'<text x="{x(r.high) + 6:.1f}" y="{y + 4}" font-size="11">{r.rating:.0f}</text>')
    axis = height - 8
    for v in (bottom + pad, 1000.0, top - pad):
        parts.append(f'<text x="{x(v):.1f}" y="{axis}" font-size="10" text-anchor="middle">{v:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _heat(value: float) -> str:
    """Red (0) through white (0.5) to green (1): how often the row system beat the column system."""
    t = max(0.0, min(1.0, value))
    if t < 0.5:
        k = t / 0.5
        red, green, blue = 230, round(120 + 135 * k), round(110 + 145 * k)
    else:
        k = (t - 0.5) / 0.5
        red, green, blue = round(255 - 165 * k), round(255 - 55 * k), round(255 - 145 * k)
    return f"#{red:02x}{green:02x}{blue:02x}"


def _ranking(section: Mapping[str, Any], ranking: Ranking | None) -> str:
    consistency = section.get("consistency_rate")
    rate = "–" if consistency is None else f"{consistency:.0%}"
    parts = [
        "<h2>Pairwise ranking</h2>",
        f'<p class="muted">judge {escape(str(section.get("judge_model", "?")))} · prompt '
        f"{escape(str(section.get('prompt', '?')))} · {int(section.get('judged', 0))} battles, "
        f"{int(section.get('failed', 0))} failed, {int(section.get('skipped', 0))} skipped (a system had no "
        "answer) · each pair judged in both orders; a verdict that flips with the order counts as a tie</p>",
        f"<p>Judge position-swap consistency: <b>{rate}</b></p>",
    ]
    if ranking is None:
        parts.append('<p class="muted">No battle was judged, so there is no ranking.</p>')
        return "".join(parts)
    confidence = float(section.get("ranking", {}).get("confidence", 0.95))
    parts.append(
        f'<div class="chart">{rating_chart(f"Bradley–Terry rating, {confidence:.0%} bootstrap CI", ranking.ratings)}</div>'
    )
    parts.append(
        f"<table><tr><th>#</th><th>system</th><th>rating</th><th>{confidence:.0%} CI</th><th>Elo</th>"
        "<th>wins</th><th>losses</th><th>ties</th></tr>"
    )
    for position, r in enumerate(ranking.ratings, 1):
        parts.append(
            f"<tr><td>{position}</td><td>{escape(r.system)}</td><td class='num'>{r.rating:.0f}</td>"
            f"<td class='num'>[{r.low:.0f}, {r.high:.0f}]</td><td class='num'>{r.elo:.0f}</td>"
            f"<td class='num'>{r.wins}</td><td class='num'>{r.losses}</td><td class='num'>{r.ties}</td></tr>"
        )
    parts.append("</table>")
    order = [r.system for r in ranking.ratings]
    parts.append(
        "<h3>Win rate (row against column, ties count half)</h3><table><tr><th></th>"
        + "".join(f"<th>{escape(name)}</th>" for name in order)
        + "</tr>"
    )
    for a in order:
        cells = []
        for b in order:
            value = ranking.win_rate.get(a, {}).get(b)
            cells.append(
                "<td class='num muted'>·</td>"
                if value is None
                else f"<td class='num' style='background:{_heat(value)}'>{value:.2f}</td>"
            )
        parts.append(f"<tr><th>{escape(a)}</th>{''.join(cells)}</tr>")
    parts.append("</table>")
    return "".join(parts)
