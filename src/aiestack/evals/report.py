"""Terminal reports: the leaderboard of a run and the comparison with a baseline (rich tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from aiestack.evals.gates import Comparison, describe
from aiestack.evals.ranking import Ranking
from aiestack.evals.summary import SystemSummary


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ordered_systems(summaries: Mapping[str, SystemSummary], first_metric: str | None) -> list[SystemSummary]:
    """Systems best first by the first metric (its orientation respected); unscored ones last."""
    rows = list(summaries.values())
    if first_metric is None:
        return rows

    def key(s: SystemSummary) -> tuple[bool, float]:
        m = s.metrics.get(first_metric)
        if m is None or m.mean is None:
            return (True, 0.0)
        return (False, -m.mean if m.higher_is_better else m.mean)

    return sorted(rows, key=key)


def leaderboard(
    summaries: Mapping[str, SystemSummary], metric_info: Mapping[str, Mapping[str, Any]], title: str
) -> Table:
    """Quality per metric (mean and 95 % CI), p50 latency and cost per example, best system first."""
    per_example = [name for name, info in metric_info.items() if not info.get("corpus")]
    corpus = [name for name, info in metric_info.items() if info.get("corpus")]
    table = Table(title=title, header_style="bold", box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("system")
    for name in [*per_example, *corpus]:
        arrow = "" if metric_info[name].get("higher_is_better", True) else " ↓"
        table.add_column(f"{name}{arrow}", justify="right")
    for col in ("p50 ms", "$/example", "n", "errors", "cached"):
        table.add_column(col, justify="right")
    for rank, s in enumerate(ordered_systems(summaries, per_example[0] if per_example else None), 1):
        cells = []
        for name in per_example:
            m = s.metrics.get(name)
            if m is None or m.mean is None:
                cells.append("-")
            else:
                cells.append(f"{m.mean:.3f} [{_num(m.low, 2)}–{_num(m.high, 2)}]")
        cells += [_num(s.corpus.get(name)) for name in corpus]
        cost = "-" if s.cost_per_example_usd is None else f"{s.cost_per_example_usd:.6f}"
        table.add_row(
            str(rank),
            s.system,
            *cells,
            _num(s.latency_p50_ms, 1),
            cost,
            str(s.examples),
            str(s.errors),
            str(s.cached),
        )
    return table


def comparison_tables(comparison: Comparison, *, max_flips: int = 20) -> Sequence[Table]:
    """Deltas with their paired-bootstrap CIs, the gates' verdicts and (some of) the flipped examples."""
    tables: list[Table] = []
    if comparison.deltas:
        deltas = Table(
            title="Change against the baseline (paired bootstrap, 95% CI)", header_style="bold", box=None
        )
        for col in ("system", "metric", "baseline", "current", "delta", "95% CI", "n"):
            deltas.add_column(col, justify="left" if col in ("system", "metric") else "right")
        for d in comparison.deltas:
            worse = (d.high < 0) if d.higher_is_better else (d.low > 0)
            better = (d.low > 0) if d.higher_is_better else (d.high < 0)
            style = "red" if worse else "green" if better else ""
            deltas.add_row(
                d.system,
                d.metric,
                _num(d.baseline),
                _num(d.current),
                f"[{style}]{d.delta:+.3f}[/]" if style else f"{d.delta:+.3f}",
                f"[{d.low:+.3f}, {d.high:+.3f}]",
                str(d.n),
            )
        tables.append(deltas)
    if comparison.gates:
        gates = Table(title="Gates", header_style="bold", box=None)
        for col in ("gate", "system", "status", "detail"):
            gates.add_column(col)
        colour = {"pass": "green", "fail": "bold red", "skip": "yellow"}
        for g in comparison.gates:
            gates.add_row(describe(g.gate), g.system, f"[{colour[g.status]}]{g.status}[/]", g.detail)
        tables.append(gates)
    if comparison.flips:
        flips = Table(title=f"Flipped examples ({len(comparison.flips)})", header_style="bold", box=None)
        for col in ("system", "metric", "example", "before", "after", ""):
            flips.add_column(col)
        ordered = sorted(comparison.flips, key=lambda f: not f.regressed)
        for f in ordered[:max_flips]:
            flips.add_row(
                f.system,
                f.metric,
                f.example_id,
                _num(f.before, 2),
                _num(f.after, 2),
                "[red]now fails[/]" if f.regressed else "[green]now passes[/]",
            )
        tables.append(flips)
    return tables


def ranking_tables(section: Mapping[str, Any], ranking: Ranking | None) -> Sequence[Table]:
    """The pairwise ranking (Bradley–Terry with CI, Elo, record) and the win-rate matrix."""
    consistency = section.get("consistency_rate")
    caption = escape(
        f"judge {section.get('judge_model', '?')} ({section.get('prompt', '?')}) · "
        f"{section.get('judged', 0)} battles, {section.get('failed', 0)} failed · position-swap consistency "
        + ("-" if consistency is None else f"{consistency:.0%}")
    )
    if ranking is None:
        empty = Table(title="Pairwise ranking", caption=caption + " · no battle was judged", box=None)
        empty.add_column("")
        return [empty]
    confidence = section.get("ranking", {}).get("confidence", 0.95)
    table = Table(
        title="Pairwise ranking (Bradley–Terry, Elo scale)", caption=caption, header_style="bold", box=None
    )
    for col in ("#", "system", "rating", f"{confidence:.0%} CI", "Elo", "W", "L", "T"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for position, r in enumerate(ranking.ratings, 1):
        table.add_row(
            str(position),
            escape(r.system),
            f"{r.rating:.0f}",
            f"[{r.low:.0f}, {r.high:.0f}]",
            f"{r.elo:.0f}",
            str(r.wins),
            str(r.losses),
            str(r.ties),
        )
    order = [r.system for r in ranking.ratings]
    matrix = Table(title="Win rate (row against column; ties count half)", header_style="bold", box=None)
    matrix.add_column("")
    for name in order:
        matrix.add_column(escape(name), justify="right")
    for a in order:
        row = ranking.win_rate.get(a, {})
        cells = []
        for b in order:
            value = row.get(b)
            if value is None:
                cells.append("·")
            else:
                style = "green" if value > 0.5 else "red" if value < 0.5 else ""
                cells.append(f"[{style}]{value:.2f}[/]" if style else f"{value:.2f}")
        matrix.add_row(escape(a), *cells)
    return [table, matrix]
