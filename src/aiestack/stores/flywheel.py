"""The FlywheelStore protocol: flywheel runs and their steps, each with its inputs and outputs.

Every backend (SQL, memory) implements it and passes
:class:`aiestack.testing.flywheel_conformance.FlywheelStoreConformance`. The flywheel
(:mod:`aiestack.flywheel.runner`) writes a run when it starts, each step when it starts and when it
ends, and the run again when it stops; a re-run of the same run id reads the steps back and skips
those ``done``.

- A run is a :class:`FlywheelRun`: the flywheel's name, the validated spec it ran (JSON), its status
  and ``outcome`` (``promoted``, ``refused`` — the gate failed, nothing changed — or ``None`` while
  running or after a failure) and a one-line ``detail`` (what was promoted, or why not).
- A step is a :class:`FlywheelStep`, keyed by ``(run_id, name)``: its kind, status, ``inputs`` and
  ``outputs`` (JSON: the ids that link the lineage — exchanges → dataset versions → candidate →
  eval runs → promotion), timing and error. Writing a step again replaces it (its position stays).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

FLYWHEEL_STATUSES = ("running", "finished", "failed")
STEP_STATUSES = ("running", "done", "failed")
OUTCOMES = ("promoted", "refused")


@dataclass(frozen=True, slots=True)
class FlywheelRun:
    run_id: str
    name: str
    status: str
    created_at: float  # epoch seconds
    updated_at: float
    spec: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None  # the flywheel.yaml it was read from
    outcome: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FlywheelStep:
    run_id: str
    name: str
    kind: str
    position: int
    status: str
    started_at: float
    finished_at: float | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def check_run(run: FlywheelRun) -> None:
    """What every backend checks before writing a run (``ValueError`` otherwise)."""
    if run.status not in FLYWHEEL_STATUSES:
        raise ValueError(f"unknown flywheel run status {run.status!r}; use one of {', '.join(FLYWHEEL_STATUSES)}")
    if run.outcome is not None and run.outcome not in OUTCOMES:
        raise ValueError(f"unknown flywheel outcome {run.outcome!r}; use one of {', '.join(OUTCOMES)} or None")


def check_step(step: FlywheelStep) -> None:
    if step.status not in STEP_STATUSES:
        raise ValueError(f"unknown flywheel step status {step.status!r}; use one of {', '.join(STEP_STATUSES)}")


@runtime_checkable
class FlywheelStore(Protocol):
    def put_flywheel_run(self, run: FlywheelRun) -> None:
        """Create or replace the run ``run.run_id``. ``ValueError`` for an unknown status or outcome."""
        ...

    def get_flywheel_run(self, run_id: str) -> FlywheelRun | None:
        """The run, or ``None``."""
        ...

    def list_flywheel_runs(self, *, name: str | None = None, limit: int = 50, offset: int = 0) -> list[FlywheelRun]:
        """Runs newest first (by ``created_at``, then id), optionally of one flywheel."""
        ...

    def put_flywheel_step(self, step: FlywheelStep) -> None:
        """Create or replace the step ``(step.run_id, step.name)``. ``KeyError`` if the run does not
        exist; ``ValueError`` for an unknown status."""
        ...

    def flywheel_steps(self, run_id: str) -> list[FlywheelStep]:
        """The run's steps by position (empty for an unknown run)."""
        ...
