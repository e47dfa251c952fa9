"""The BFCL harness checked end to end: an oracle upstream scores 100%, an always-wrong one 0%, per category."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.build import build_stack
from aiestack.errors import ConfigError
from aiestack.evals.bfcl.checker import check, unanswerable
from aiestack.evals.bfcl.data import CATEGORIES, Entry, find_data, load
from aiestack.evals.bfcl.runner import by_category, run_entries
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.bfcl import BfclScripted


def _entries(limit: int | None = None) -> list[Entry]:
    try:
        folder = find_data()
    except ConfigError:
        pytest.skip("the BFCL data is not imported: ./scripts/setup local,dev,ray,bfcl (scripts/test does it)")
    return [e for c in CATEGORIES for e in load(c, folder, limit=limit)]


@pytest.mark.slow
def test_the_checker_passes_every_oracle_answer_and_fails_every_wrong_one_on_the_whole_set() -> None:
    entries = _entries()
    assert len(entries) > 3000  # the whole single-turn set, live included
    # Four entries of BFCL v4 contradict themselves (no answer passes BFCL's rules): counted apart.
    impossible = sorted(e.id for e in entries if unanswerable(e.functions, e.answers))
    assert impossible == ["live_multiple_862-181-3", "live_multiple_964-207-0", "live_simple_106-63-0", "live_simple_112-68-0"]
    entries = [e for e in entries if e.id not in impossible]
    for right in (True, False):
        model = BfclScripted(entries, right=right)
        failures = []
        for entry in entries:
            calls = [{name: json.loads(json.dumps(args))} for name, args in model.script(entry)]  # as it crosses the wire
            result = check(entry.category, entry.functions, calls, entry.answers)
            if result.valid != right:
                failures.append((entry.id, result.error))
        assert not failures, failures[:5]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["native", "json"])
async def test_through_the_stack_the_oracle_scores_100_and_the_wrong_upstream_0_per_category(tmp_path: Path, protocol: str) -> None:
    entries = [e for e in _entries(limit=25) if not unanswerable(e.functions, e.answers)]
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="oracle", guards={"enabled": False})
    models = [ModelEntry("oracle", BfclScripted(entries), "oracle"), ModelEntry("wrong", BfclScripted(entries, right=False), "wrong")]
    stack = build_stack(settings, store=MemoryExchangeStore(), models=models)
    try:
        for model, expected in (("oracle", 1.0), ("wrong", 0.0)):
            outcomes = await run_entries(stack.chat, model, entries, protocol=protocol, concurrency=16)  # type: ignore[arg-type]
            reports = {r.category: r for r in by_category(outcomes)}
            assert set(reports) == set(CATEGORIES)
            wrong = [(o.entry.id, o.check.error) for o in outcomes if o.check.valid != bool(expected)][:5]
            assert all(r.accuracy == expected for r in reports.values()), (model, wrong)
            assert all(o.exchange_id for o in outcomes)  # every question was an exchange through the pipeline
    finally:
        await stack.aclose()
