"""Flywheel runs in memory (mixed into :class:`MemoryExchangeStore`).

Behaves like the SQL implementation (:mod:`aiestack.stores.flywheel_sql`) wherever a caller could
tell: both pass the same conformance tests.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from aiestack.stores.flywheel import FlywheelRun, FlywheelStep, check_run, check_step


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


class MemoryFlywheelMixin:
    """The flywheel methods; the host calls :meth:`_init_flywheel` in its ``__init__``."""

    _lock: threading.Lock

    def _init_flywheel(self) -> None:
        self._flywheel_runs: dict[str, FlywheelRun] = {}
        self._flywheel_steps: dict[str, dict[str, FlywheelStep]] = {}

    def put_flywheel_run(self, run: FlywheelRun) -> None:
        check_run(run)
        copied = dataclasses.replace(run, spec=_copy(dict(run.spec)))
        with self._lock:
            self._flywheel_runs[run.run_id] = copied
            self._flywheel_steps.setdefault(run.run_id, {})

    def get_flywheel_run(self, run_id: str) -> FlywheelRun | None:
        with self._lock:
            run = self._flywheel_runs.get(run_id)
        return None if run is None else dataclasses.replace(run, spec=_copy(dict(run.spec)))

    def list_flywheel_runs(self, *, name: str | None = None, limit: int = 50, offset: int = 0) -> list[FlywheelRun]:
        with self._lock:
            runs = [r for r in self._flywheel_runs.values() if name is None or r.name == name]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [dataclasses.replace(r, spec=_copy(dict(r.spec))) for r in runs[offset : offset + limit]]

    def put_flywheel_step(self, step: FlywheelStep) -> None:
        check_step(step)
        copied = dataclasses.replace(step, inputs=_copy(dict(step.inputs)), outputs=_copy(dict(step.outputs)))
        with self._lock:
            steps = self._flywheel_steps.get(step.run_id)
            if step.run_id not in self._flywheel_runs or steps is None:
                raise KeyError(f"there is no flywheel run {step.run_id!r}")
            existing = steps.get(step.name)
            if existing is not None:
                copied = dataclasses.replace(copied, position=existing.position)
            steps[step.name] = copied

    def flywheel_steps(self, run_id: str) -> list[FlywheelStep]:
        with self._lock:
            steps = list(self._flywheel_steps.get(run_id, {}).values())
        steps.sort(key=lambda s: s.position)
        return [dataclasses.replace(s, inputs=_copy(dict(s.inputs)), outputs=_copy(dict(s.outputs))) for s in steps]
