"""Reports: leaderboard order, self-contained escaped HTML with SVG charts, and the eval store round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from aiestack.evals.gates import compare
from aiestack.evals.report import leaderboard, ordered_systems
from aiestack.evals.report_html import render_html
from aiestack.evals.suite import GateSpec
from aiestack.evals.summary import summaries_from_run, summarize
from aiestack.stores.base import EvalResultRecord, EvalStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.types import EvalRun

pytestmark = pytest.mark.unit

INFO = {
    "acc": {"higher_is_better": True, "corpus": False},
    "latency": {"higher_is_better": False, "corpus": False},
}


def _results() -> list[EvalResultRecord]:
    rows = []
    for i in range(10):
        rows.append(
            EvalResultRecord(
                "r",
                f"e{i}",
                "weak",
                "<script>alert(1)</script>",
                {"acc": float(i < 3), "latency": 50.0},
                latency_ms=50.0,
            )
        )
        rows.append(
            EvalResultRecord(
                "r",
                f"e{i}",
                "strong",
                "fine & dandy",
                {"acc": float(i < 8), "latency": 80.0},
                latency_ms=80.0,
            )
        )
    return rows


def _run() -> EvalRun:
    systems = summarize(_results(), {"acc": True, "latency": False})
    return EvalRun(
        "r",
        "suite<x>",
        ("weak", "strong"),
        summary={
            "status": "finished",
            "metrics": INFO,
            "systems": {n: s.as_dict() for n, s in systems.items()},
        },
    )


def test_leaderboard_sorts_by_the_first_metric() -> None:
    summaries = summaries_from_run(_run().summary)
    assert [s.system for s in ordered_systems(summaries, "acc")] == ["strong", "weak"]
    assert [s.system for s in ordered_systems(summaries, "latency")] == ["weak", "strong"]
    console = Console(record=True, width=160)
    console.print(leaderboard(summaries, INFO, "t"))
    text = console.export_text()
    assert text.index("strong") < text.index("weak") and "0.800" in text and "p50 ms" in text


def test_html_is_self_contained_escaped_and_has_charts() -> None:
    run = _run()
    results = _results()
    comparison = compare(results, results, {"acc": True}, [GateSpec(metric="acc", min=0.5)])
    page = render_html(
        run, summaries_from_run(run.summary), results, comparison=comparison, inputs={"e0": "<b>in</b>"}
    )
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 3
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "suite&lt;x&gt;" in page and "&lt;b&gt;in&lt;/b&gt;" in page and "fine &amp; dandy" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no CDN, no remote assets


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_eval_store_round_trip(kind: str, tmp_path: Path) -> None:
    store = MemoryExchangeStore() if kind == "memory" else SqlExchangeStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    assert isinstance(store, EvalStore)
    store.write_eval_run(EvalRun("r1", "s", ("a",), started_at=1.0))
    store.write_eval_run(
        EvalRun("r2", "s", ("a",), started_at=2.0, finished_at=3.0, summary={"status": "finished"})
    )
    store.write_eval_run(EvalRun("r3", "other", ("a",), started_at=3.0))
    assert [r.id for r in store.list_eval_runs(suite="s")] == ["r2", "r1"]
    assert store.get_eval_run("r2") == EvalRun("r2", "s", ("a",), 2.0, 3.0, {"status": "finished"})
    first = EvalResultRecord(
        "r2",
        "e1",
        "a",
        "out",
        {"acc": None},
        {"judge": {"reasoning": "why"}},
        error=None,
        exchange_id="ex_1",
        created_at=1.0,
    )
    store.write_eval_results([first, EvalResultRecord("r2", "e0", "a", "x", {"acc": 1.0}, created_at=1.0)])
    store.write_eval_results(
        [EvalResultRecord("r2", "e0", "a", "y", {"acc": 0.0}, cached=True, created_at=2.0)]
    )
    got = store.eval_results("r2")
    assert [(r.example_id, r.output) for r in got] == [("e0", "y"), ("e1", "out")]
    assert got[1] == first and got[0].cached
    assert store.eval_results("r2", system="b") == [] and store.get_eval_run("nope") is None
    store.close()
