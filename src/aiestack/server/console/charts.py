"""Server-side SVG charts for the console: lines and bars over time, a calendar heatmap, a span waterfall.

Drawn here rather than by a JavaScript library so that pages work without scripts or CDNs, render
the same in tests as in a browser, and can be asserted on. Every string that comes from data goes
through ``html.escape``. Each chart is one ``<svg>`` element with a ``data-chart`` attribute
naming its kind, and ``<title>`` tooltips on its marks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from aiestack.types import SpanRecord

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")
#: Heatmap colours from "none" to "most", GitHub-like greens.
HEAT = ("#ebedf0", "#9be9a8", "#40c463", "#30a14e", "#216e39")


def _time_label(ts: float, width_s: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%m-%d" if width_s >= 86400 else "%m-%d %H:%M")


def _nice(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def _frame(kind: str, title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{kind}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="14" class="chart-title" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]


@dataclass(frozen=True, slots=True)
class _Plot:
    """The plotting area of a time chart, and its scales."""

    left: float
    top: float
    right: float
    bottom: float
    x0: float
    x1: float
    y_max: float

    def x(self, t: float) -> float:
        return self.left + (t - self.x0) / ((self.x1 - self.x0) or 1.0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - v / (self.y_max or 1.0) * (self.bottom - self.top)


def _axes(parts: list[str], plot: _Plot, starts: Sequence[float], width_s: float, unit: str) -> None:
    parts.append(
        f'<line x1="{plot.left}" y1="{plot.bottom}" x2="{plot.right}" y2="{plot.bottom}" stroke="#999"/>'
        f'<line x1="{plot.left}" y1="{plot.top}" x2="{plot.left}" y2="{plot.bottom}" stroke="#999"/>'
    )
    parts.append(
        f'<text x="{plot.left - 4}" y="{plot.top + 4}" font-size="10" text-anchor="end">{_nice(plot.y_max)}</text>'
        f'<text x="{plot.left - 4}" y="{plot.bottom}" font-size="10" text-anchor="end">0</text>'
    )
    if unit:
        parts.append(f'<text x="{plot.left + 4}" y="{plot.top + 4}" font-size="10" fill="#666">{escape(unit)}</text>')
    if starts:
        for t, anchor in ((starts[0], "start"), (starts[len(starts) // 2], "middle"), (starts[-1], "end")):
            parts.append(
                f'<text x="{plot.x(t):.1f}" y="{plot.bottom + 13}" font-size="10" text-anchor="{anchor}">'
                f"{_time_label(t, width_s)}</text>"
            )


def line_chart(
    title: str,
    starts: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    width_s: float,
    unit: str = "",
    width: int = 460,
    height: int = 200,
) -> str:
    """Lines over time, one per series (a ``None`` breaks the line); a legend under the plot."""
    parts = _frame("line", title, width, height)
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not values:
        parts.append('<text x="4" y="40" font-size="12" fill="#888">no data in this period</text></svg>')
        return "".join(parts)
    plot = _Plot(44, 24, width - 10, height - 38, starts[0], starts[-1], max(values) * 1.05 or 1.0)
    _axes(parts, plot, starts, width_s, unit)
    for s, (name, vs) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        path: list[str] = []
        pen_up = True
        for t, v in zip(starts, vs, strict=False):
            if v is None or not math.isfinite(v):
                pen_up = True
                continue
            path.append(f"{'M' if pen_up else 'L'}{plot.x(t):.1f} {plot.y(v):.1f}")
            pen_up = False
            parts.append(
                f'<circle cx="{plot.x(t):.1f}" cy="{plot.y(v):.1f}" r="2" fill="{colour}">'
                f"<title>{escape(name)} {_time_label(t, width_s)}: {_nice(v)}</title></circle>"
            )
        if path:
            parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        x = 44 + s * 110
        parts.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(name[:16])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def xy_chart(
    title: str,
    xs: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    x_label: str,
    unit: str = "",
    width: int = 460,
    height: int = 220,
) -> str:
    """Lines over a numeric x axis (a load: concurrency, requests/s), one per series; None breaks a line."""
    parts = _frame("xy", title, width, height)
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not values or not xs:
        parts.append('<text x="4" y="40" font-size="12" fill="#888">no data</text></svg>')
        return "".join(parts)
    lo, hi = min(xs), max(xs)
    plot = _Plot(44, 24, width - 14, height - 52, lo, hi if hi > lo else lo + 1, max(values) * 1.05 or 1.0)
    parts.append(
        f'<line x1="{plot.left}" y1="{plot.bottom}" x2="{plot.right}" y2="{plot.bottom}" stroke="#999"/>'
        f'<line x1="{plot.left}" y1="{plot.top}" x2="{plot.left}" y2="{plot.bottom}" stroke="#999"/>'
        f'<text x="{plot.left - 4}" y="{plot.top + 4}" font-size="10" text-anchor="end">{_nice(plot.y_max)}</text>'
        f'<text x="{plot.left - 4}" y="{plot.bottom}" font-size="10" text-anchor="end">0</text>'
    )
    if unit:
        parts.append(f'<text x="{plot.left + 4}" y="{plot.top + 4}" font-size="10" fill="#666">{escape(unit)}</text>')
    for x in sorted(set(xs)):
        parts.append(
            f'<text x="{plot.x(x):.1f}" y="{plot.bottom + 13}" font-size="10" text-anchor="middle">{_nice(x)}</text>'
        )
    parts.append(
        f'<text x="{(plot.left + plot.right) / 2:.1f}" y="{plot.bottom + 26}" font-size="10" '
        f'text-anchor="middle" fill="#666">{escape(x_label)}</text>'
    )
    for s, (name, vs) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        path: list[str] = []
        pen_up = True
        for x, v in zip(xs, vs, strict=False):
            if v is None or not math.isfinite(v):
                pen_up = True
                continue
            path.append(f"{'M' if pen_up else 'L'}{plot.x(x):.1f} {plot.y(v):.1f}")
            pen_up = False
            parts.append(
                f'<circle cx="{plot.x(x):.1f}" cy="{plot.y(v):.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} at {_nice(x)}: {_nice(v)}</title></circle>"
            )
        if path:
            parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        lx = 44 + s * 100
        parts.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{height - 5}" font-size="11">{escape(name[:14])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    starts: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    width_s: float,
    unit: str = "",
    width: int = 460,
    height: int = 200,
) -> str:
    """Stacked bars over time, one colour per series."""
    parts = _frame("bars", title, width, height)
    totals = [sum(vs[i] for vs in series.values()) for i in range(len(starts))]
    if not starts or not any(totals):
        parts.append('<text x="4" y="40" font-size="12" fill="#888">no data in this period</text></svg>')
        return "".join(parts)
    span = starts[-1] - starts[0] + width_s
    plot = _Plot(44, 24, width - 10, height - 38, starts[0], starts[0] + span, max(totals) * 1.05)
    _axes(parts, plot, starts, width_s, unit)
    bar_w = max((plot.right - plot.left) / len(starts) - 1, 1)
    for i, t in enumerate(starts):
        base = 0.0
        for s, (name, vs) in enumerate(series.items()):
            v = vs[i]
            if not v:
                continue
            y_top, y_base = plot.y(base + v), plot.y(base)
            parts.append(
                f'<rect x="{plot.x(t):.1f}" y="{y_top:.1f}" width="{bar_w:.1f}" height="{max(y_base - y_top, 0.5):.1f}" '
                f'fill="{PALETTE[s % len(PALETTE)]}"><title>{escape(name)} {_time_label(t, width_s)}: {_nice(v)}</title></rect>'
            )
            base += v
    if len(series) > 1:
        for s, name in enumerate(series):
            x = 44 + s * 110
            parts.append(
                f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(name[:16])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def heat_level(count: int, peak: int) -> int:
    """0 for no activity, else 1-4 by the count's share of the busiest day (like GitHub's calendar)."""
    if count <= 0 or peak <= 0:
        return 0
    return max(1, min(4, math.ceil(4 * count / peak)))


def calendar_heatmap(counts: Mapping[str, int], *, end: dt.date, weeks: int = 53, title: str = "Exchanges per day") -> str:
    """A GitHub-style calendar: one square per UTC day for ``weeks`` weeks up to ``end``, Sunday on top."""
    cell, gap, left, top = 11, 2, 28, 30
    width = left + weeks * (cell + gap) + 10
    height = top + 7 * (cell + gap) + 26
    parts = _frame("heatmap", title, width, height)
    first = end - dt.timedelta(days=(end.weekday() + 1) % 7 + 7 * (weeks - 1))  # a Sunday
    shown = {k: n for k, n in counts.items() if first.isoformat() <= k <= end.isoformat()}
    peak = max(shown.values(), default=0)
    last_month = None
    for w in range(weeks):
        for d in range(7):
            day = first + dt.timedelta(days=7 * w + d)
            if day > end:
                break
            key = day.isoformat()
            n = counts.get(key, 0)
            x, y = left + w * (cell + gap), top + d * (cell + gap)
            parts.append(
                f'<rect class="day" data-date="{key}" data-count="{n}" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'rx="2" fill="{HEAT[heat_level(n, peak)]}"><title>{key}: {n} exchange{"" if n == 1 else "s"}</title></rect>'
            )
            if d == 0 and day.month != last_month:
                last_month = day.month
                parts.append(f'<text x="{x}" y="{top - 4}" font-size="9">{day.strftime("%b")}</text>')
    for d, name in ((1, "Mon"), (3, "Wed"), (5, "Fri")):
        parts.append(f'<text x="0" y="{top + d * (cell + gap) + 9}" font-size="9">{name}</text>')
    total = sum(shown.values())
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="10" fill="#555">{total:,} exchanges · busiest day {peak:,}</text>'
    )
    for i, colour in enumerate(HEAT):
        parts.append(
            f'<rect x="{width - 80 + i * 13}" y="{height - 15}" width="{cell}" height="{cell}" rx="2" fill="{colour}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _depths(spans: Sequence[SpanRecord]) -> dict[str, int]:
    parents = {s.span_id: s.parent_id for s in spans}
    depths: dict[str, int] = {}
    for s in spans:
        depth, parent, seen = 0, s.parent_id, {s.span_id}
        while parent is not None and parent in parents and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = parents[parent]
        depths[s.span_id] = depth
    return depths


def waterfall(spans: Sequence[SpanRecord], *, width: int = 760) -> str:
    """Each span as a bar at its offset from the first span's start, indented by its depth."""
    row, label_w, top = 22, 230, 22
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
    height = top + row * len(ordered) + 22
    parts = _frame("waterfall", "Span waterfall", width, height)
    if not ordered:
        parts.append('<text x="4" y="40" font-size="12" fill="#888">no spans were stored for this exchange</text></svg>')
        return "".join(parts)
    start = min(s.start_ns for s in ordered)
    end = max(s.end_ns for s in ordered)
    total = max(end - start, 1)
    depths = _depths(ordered)
    scale = (width - label_w - 70) / total
    for i, s in enumerate(ordered):
        y = top + i * row
        x = label_w + (s.start_ns - start) * scale
        w = max((s.end_ns - s.start_ns) * scale, 1.5)
        colour = "#e15759" if s.status == "error" else PALETTE[min(depths[s.span_id], len(PALETTE) - 1)]
        indent = 4 + 12 * depths[s.span_id]
        parts.append(
            f'<g class="span" data-span="{escape(s.name)}">'
            f'<text x="{indent}" y="{y + 14}" font-size="11">{escape(s.name[:34])}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="14" rx="2" fill="{colour}">'
            f"<title>{escape(s.name)}: {s.duration_ms:.2f} ms, starts at +{(s.start_ns - start) / 1e6:.2f} ms</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 14}" font-size="10" fill="#555">{s.duration_ms:.2f} ms</text></g>'
        )
    parts.append(
        f'<text x="{label_w}" y="{height - 6}" font-size="10" fill="#555">0 ms</text>'
        f'<text x="{width - 70}" y="{height - 6}" font-size="10" fill="#555" text-anchor="end">{total / 1e6:.2f} ms</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
