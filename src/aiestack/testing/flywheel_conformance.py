"""Conformance tests for flywheel stores, as a mixin for store backends.

Use it like :mod:`aiestack.testing.runs_conformance`: subclass in a ``Test*`` class and provide a
``store`` fixture yielding a migrated, empty store.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from aiestack.stores.flywheel import FlywheelRun, FlywheelStep, FlywheelStore

UNICODE = "Grüße, 世界! — emoji 🚀 and a quote ' and \" and a backslash \\"
BASE = 1_750_000_000.0


def flywheel_run(run_id: str = "fw_1", **overrides: Any) -> FlywheelRun:
    values: dict[str, Any] = {
        "run_id": run_id,
        "name": "support",
        "status": "running",
        "created_at": BASE,
        "updated_at": BASE + 1.5,
        "spec": {"name": "support", "steps": [{"kind": "build", "route": UNICODE}], "nested": {"n": [1, 2.5, None]}},
        "source": "/tmp/flywheel.yaml",
        "outcome": None,
        "detail": UNICODE,
    }
    values.update(overrides)
    return FlywheelRun(**values)


def flywheel_step(name: str = "build", position: int = 0, **overrides: Any) -> FlywheelStep:
    values: dict[str, Any] = {
        "run_id": "fw_1",
        "name": name,
        "kind": "build",
        "position": position,
        "status": "done",
        "started_at": BASE + position,
        "finished_at": BASE + position + 0.25,
        "inputs": {"route": "support", "min_feedback": 0.75},
        "outputs": {"dataset": "support-good@3", "exchanges": ["ex_1", "ex_2"], "text": UNICODE},
        "error": None,
    }
    values.update(overrides)
    return FlywheelStep(**values)


class FlywheelStoreConformance:
    """What every :class:`~aiestack.stores.flywheel.FlywheelStore` guarantees."""

    def test_is_a_flywheel_store(self, store: Any) -> None:
        assert isinstance(store, FlywheelStore)

    def test_a_run_and_its_steps_round_trip(self, store: FlywheelStore) -> None:
        run = flywheel_run()
        store.put_flywheel_run(run)
        assert store.get_flywheel_run("fw_1") == run
        steps = [flywheel_step("build", 0), flywheel_step("curate", 1, kind="curate", status="failed", error=UNICODE, finished_at=None)]
        for step in reversed(steps):
            store.put_flywheel_step(step)
        assert store.flywheel_steps("fw_1") == steps

    def test_a_run_is_replaced_and_a_step_keeps_its_position(self, store: FlywheelStore) -> None:
        store.put_flywheel_run(flywheel_run())
        store.put_flywheel_step(flywheel_step("build", 0, status="running", finished_at=None, outputs={}))
        store.put_flywheel_step(flywheel_step("curate", 1))
        store.put_flywheel_step(flywheel_step("build", 7))  # rewritten when done: its position stays 0
        assert [(s.name, s.position, s.status) for s in store.flywheel_steps("fw_1")] == [("build", 0, "done"), ("curate", 1, "done")]
        done = flywheel_run(status="finished", outcome="promoted", detail="support@production → 4", updated_at=BASE + 9)
        store.put_flywheel_run(done)
        assert store.get_flywheel_run("fw_1") == done
        assert len(store.flywheel_steps("fw_1")) == 2

    def test_runs_are_listed_newest_first_by_flywheel(self, store: FlywheelStore) -> None:
        for i in range(4):
            store.put_flywheel_run(flywheel_run(f"fw_{i}", name="a" if i % 2 else "b", created_at=BASE + i))
        assert [r.run_id for r in store.list_flywheel_runs()] == ["fw_3", "fw_2", "fw_1", "fw_0"]
        assert [r.run_id for r in store.list_flywheel_runs(name="a")] == ["fw_3", "fw_1"]
        assert [r.run_id for r in store.list_flywheel_runs(limit=2, offset=1)] == ["fw_2", "fw_1"]
        assert store.list_flywheel_runs(name="nope") == []

    def test_unknown_runs(self, store: FlywheelStore) -> None:
        assert store.get_flywheel_run("nope") is None
        assert store.flywheel_steps("nope") == []
        with pytest.raises(KeyError, match="no flywheel run"):
            store.put_flywheel_step(dataclasses.replace(flywheel_step(), run_id="nope"))

    def test_bad_statuses_are_refused_and_store_nothing(self, store: FlywheelStore) -> None:
        with pytest.raises(ValueError, match="status"):
            store.put_flywheel_run(flywheel_run(status="done"))
        with pytest.raises(ValueError, match="outcome"):
            store.put_flywheel_run(flywheel_run(outcome="maybe"))
        assert store.get_flywheel_run("fw_1") is None
        store.put_flywheel_run(flywheel_run())
        with pytest.raises(ValueError, match="status"):
            store.put_flywheel_step(flywheel_step(status="finished"))
        assert store.flywheel_steps("fw_1") == []
