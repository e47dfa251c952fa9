"""The console's SVG charts: geometry that follows the data, tooltips, escaping."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from aiestack.server.console import charts
from aiestack.types import SpanRecord

pytestmark = pytest.mark.unit


def _days(svg: str) -> dict[str, tuple[int, str]]:
    return {
        d: (int(n), fill)
        for d, n, fill in re.findall(r'data-date="([^"]+)" data-count="(\d+)"[^>]*fill="([^"]+)"', svg)
    }


def test_heatmap_has_one_square_per_day_coloured_by_activity() -> None:
    end = dt.date(2026, 11, 28)  # a Saturday: the last column is a full week
    counts = {"2026-11-28": 40, "2026-11-27": 10, "2026-01-01": 1, "2025-01-01": 99}
    svg = charts.calendar_heatmap(counts, end=end)
    days = _days(svg)
    assert len(days) == 53 * 7
    assert max(days) == "2026-11-28"
    assert min(days) == (end - dt.timedelta(days=53 * 7 - 1)).isoformat()
    assert dt.date.fromisoformat(min(days)).weekday() == 6  # columns start on Sunday
    assert days["2026-11-28"] == (40, charts.HEAT[4])
    assert days["2026-11-27"] == (10, charts.HEAT[1])
    assert days["2026-11-26"] == (0, charts.HEAT[0])
    assert "2025-01-01" not in days  # outside the year shown
    assert "2026-11-28: 40 exchanges" in svg and "2026-01-01: 1 exchange<" in svg


def test_heat_levels_are_relative_to_the_busiest_day() -> None:
    assert [charts.heat_level(n, 100) for n in (0, 1, 25, 26, 50, 75, 100)] == [0, 1, 1, 2, 2, 3, 4]
    assert charts.heat_level(3, 0) == 0 and charts.heat_level(1, 1) == 4


def _span(name: str, span_id: str, parent: str | None, start_ms: float, end_ms: float, status: str = "ok") -> SpanRecord:
    return SpanRecord("t", span_id, parent, name, int(start_ms * 1e6), int(end_ms * 1e6), status)  # type: ignore[arg-type]


def test_waterfall_bars_sit_at_their_offsets_with_their_widths() -> None:
    spans = [
        _span("chat m", "a", None, 1000.0, 1100.0),
        _span("limits", "b", "a", 1000.0, 1010.0),
        _span("generate", "c", "a", 1010.0, 1100.0),
        _span("provider <x>", "d", "c", 1020.0, 1060.0, "error"),
    ]
    svg = charts.waterfall(spans, width=800)
    bars = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="14" rx="2" fill="([^"]+)"', svg)
    assert len(bars) == 4
    (x0, w0, _), (x1, w1, _), (x2, w2, _), (x3, w3, colour3) = [(float(x), float(w), f) for x, w, f in bars]
    assert x1 == x0 and w0 == pytest.approx(10 * w1, rel=0.01)  # limits: first tenth of the root
    assert x2 - x0 == pytest.approx(w1, rel=0.01) and w2 == pytest.approx(0.9 * w0, rel=0.01)
    assert x3 - x0 == pytest.approx(0.2 * w0, rel=0.01) and w3 == pytest.approx(0.4 * w0, rel=0.01)
    assert colour3 == "#e15759"  # an error span is red
    indents = [int(x) for x in re.findall(r'<g class="span" data-span="[^"]+"><text x="(\d+)"', svg)]
    assert indents == [4, 16, 16, 28]  # depth from the parent chain
    assert "provider &lt;x&gt;" in svg and "<x>" not in svg
    assert "100.00 ms" in svg


def test_waterfall_without_spans_says_so() -> None:
    assert "no spans were stored" in charts.waterfall([])


def test_line_chart_breaks_at_missing_values_and_scales_to_the_peak() -> None:
    starts = [0.0, 60.0, 120.0, 180.0]
    svg = charts.line_chart("Latency", starts, {"p50": [10.0, None, 30.0, 40.0]}, width_s=60, unit="ms")
    (path,) = re.findall(r'<path d="([^"]+)"', svg)
    assert path.count("M") == 2 and path.count("L") == 1  # two segments: [10] and [30, 40]
    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', svg)]
    assert ys[0] > ys[1] > ys[2]  # higher values are drawn higher (smaller y)
    assert "p50 01-01 00:02: 30" in svg


def test_empty_charts_say_there_is_no_data() -> None:
    assert "no data in this period" in charts.line_chart("x", [0.0], {"a": [None]}, width_s=60)
    assert "no data in this period" in charts.bar_chart("x", [0.0], {"a": [0.0]}, width_s=60)


def test_stacked_bars_add_up() -> None:
    svg = charts.bar_chart("Requests", [0.0, 60.0], {"ok": [3.0, 1.0], "errors": [1.0, 0.0]}, width_s=60)
    heights = [float(h) for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill="[^"]+"><title>', svg)]
    assert len(heights) == 3  # a zero is not drawn
    assert heights[0] == pytest.approx(3 * heights[1], rel=0.01) and heights[2] == pytest.approx(heights[1], rel=0.01)
