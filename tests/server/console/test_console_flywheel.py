"""The console's flywheel pages: the run list and one run's lineage, every id linked, data escaped."""

from __future__ import annotations

import pytest

from aiestack.stores.flywheel import FlywheelRun, FlywheelStep, FlywheelStore

from .conftest import Console

pytestmark = pytest.mark.unit
HOSTILE = "<script>alert(1)</script>"


def _store(console: Console) -> FlywheelStore:
    store = console.stack.store
    assert isinstance(store, FlywheelStore)
    return store


async def test_the_lineage_links_exchanges_datasets_candidates_eval_runs_and_the_change(console: Console) -> None:
    store = _store(console)
    store.put_flywheel_run(FlywheelRun("fw_1", "support", "finished", 1.0, 9.0, {"name": "support"}, "fw.yaml",
                                       "promoted", "promoted: support@production 1 → 3"))
    steps = [
        FlywheelStep("fw_1", "dataset", "build", 0, "done", 1.0, 2.0, {"from": "exchanges"},
                     {"dataset": "good@1", "exchanges": ["ex_a1", "ex_b2"], "exchange_count": 2, "summary": "built good@1, 2 rows"}),
        FlywheelStep("fw_1", "curate", "curate", 1, "done", 2.0, 3.0, {}, {"dataset": "good@2", "parent": "good@1",
                     "removed": {"exact": {"exact duplicate": 1}}, "summary": "curated good@2"}),
        FlywheelStep("fw_1", "candidate", "optimise_prompt", 2, "done", 3.0, 5.0, {"prompt": "support"}, {
            "base": "support@1", "candidate": "support@3", "summary": "candidate support@3",
            "candidates": [{"id": "current", "kind": "current", "eval_run": "run_c0", "score": 0.2, "scored": 10},
                           {"id": "rewrite-1", "kind": "rewrite", "eval_run": "run_c1", "score": 0.9, "scored": 10}],
            "rejected": [{"id": "rewrite-2", "why": HOSTILE}]}),
        FlywheelStep("fw_1", "evaluate", "evaluate", 3, "done", 5.0, 7.0, {}, {
            "baseline_run": "run_b", "candidate_run": "run_k", "summary": "gate passed: improved",
            "decision": {"passed": True, "reason": "improved", "metric": "exact_match", "baseline": 0.2, "candidate": 0.9,
                         "delta": 0.7, "low": 0.4, "high": 1.0, "n": 10, "gates": [{"gate": "exact_match drop <= 0", "status": "pass", "detail": "d"}]}}),
        FlywheelStep("fw_1", "promote", "promote", 4, "done", 7.0, 7.5, {}, {
            "promoted": True, "summary": "promoted", "change": {"kind": "prompt_label", "prompt": "support", "to": 3}}),
    ]
    for step in steps:
        store.put_flywheel_step(step)
    listed = await console.client.get("/flywheel")
    assert listed.status_code == 200 and 'href="/flywheel/runs/fw_1"' in listed.text and "promoted" in listed.text
    assert "content-security-policy" in listed.headers and 'href="/flywheel"' in listed.text  # in the navigation
    page = (await console.client.get("/flywheel/runs/fw_1")).text
    order = [page.index(f'id="step-{name}"') for name in ("dataset", "curate", "candidate", "evaluate", "promote")]
    assert order == sorted(order)
    for href in ('/exchanges/ex_a1', '/evals/run_c1', '/evals/run_b', '/evals/run_k', '/prompts/support'):
        assert f'href="{href}"' in page, href
    assert "good@2" in page and "1 exact duplicate" in page and "gate passed: improved" in page
    assert "95% CI 0.4 to 1" in page and "prompt_label" in page
    assert HOSTILE not in page and "&lt;script&gt;" in page


async def test_a_failed_step_and_an_unknown_run(console: Console) -> None:
    store = _store(console)
    store.put_flywheel_run(FlywheelRun("fw_2", "x", "failed", 1.0, 2.0, {}, None, None, f"step evaluate failed: {HOSTILE}"))
    store.put_flywheel_step(FlywheelStep("fw_2", "evaluate", "evaluate", 0, "failed", 1.0, 2.0, error=HOSTILE))
    page = await console.client.get("/flywheel/runs/fw_2")
    assert page.status_code == 200 and "step-failed" in page.text and HOSTILE not in page.text
    assert (await console.client.get("/flywheel?name=x")).text.count("fw_2") >= 1
    assert "fw_2" not in (await console.client.get("/flywheel?name=other")).text
    missing = await console.client.get("/flywheel/runs/fw_nope")
    assert missing.status_code == 404 and "No flywheel run" in missing.text
