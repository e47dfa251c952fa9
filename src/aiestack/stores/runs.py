"""The RunStore protocol: agent runs and their steps, tenant-scoped.

Every backend (SQL, memory) implements it and passes
:class:`aiestack.testing.runs_conformance.RunStoreConformance`. The agents wing
(:mod:`aiestack.agents.runs`) turns a :class:`~aiestack.agents.events.RunResult` into a record and
its steps under the content-tracing rules, and resumes waiting runs from here.

- A run is a :class:`RunRecord` (who ran which agent, its status, why it stopped, what it used) and
  its steps in order: the JSON of its events (``{"type": "model_call", ...}``), appended as the run
  goes on (a resumed run appends after the steps it had).
- ``pending`` is the state a ``waiting`` run resumes from (its conversation and the calls waiting
  for approval). :meth:`RunStore.claim_run` takes it atomically: of two approvals of one run only
  one gets it, so a tool is never run twice.
- ``tenant=None`` on a read means every tenant (the admin's view); a tenant sees only its runs.
- :meth:`RunStore.request_cancel` asks a ``running`` run to stop, from any process: it becomes
  ``cancelling``, and the process running it (which watches its status) stops it and stores it
  ``stopped`` / ``cancelled``. While a run is in flight its process beats :meth:`RunStore.touch_run`
  (``updated_at``), so a run whose process died can be told from a slow one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The statuses a stored run may have (the loop's, ``running`` while a run is in flight, and
#: ``cancelling`` once someone asked a running run to stop: the process running it stops it).
RUN_STATUSES = ("running", "cancelling", "waiting", "finished", "stopped", "failed")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One agent run as stored. ``task`` and ``answer`` are content (see :mod:`aiestack.agents.runs`)."""

    run_id: str
    tenant: str
    agent: str
    model: str
    status: str
    created_at: float  # epoch seconds
    updated_at: float
    stop_reason: str | None = None
    key_id: str | None = None
    task: str = ""
    answer: str | None = None
    detail: str = ""
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    pending: Mapping[str, Any] | None = field(default=None, compare=True)


def check_run_status(status: str) -> str:
    if status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}")
    return status


@runtime_checkable
class RunStore(Protocol):
    def put_run(self, record: RunRecord, steps: Sequence[Mapping[str, Any]] = ()) -> None:
        """Create or replace the run ``record.run_id`` and append ``steps`` after the steps it has,
        in one transaction. Replacing a run of another tenant is refused with ``ValueError``
        (run ids are unique across tenants)."""
        ...

    def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        """The run, or ``None`` when it does not exist or belongs to a tenant other than ``tenant``."""
        ...

    def list_runs(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs newest first (by ``created_at``, then id), filtered; ``pending`` is left out (``None``)."""
        ...

    def run_steps(self, run_id: str, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """The run's steps in the order they were appended (empty for an unknown or foreign run)."""
        ...

    def claim_run(self, run_id: str, *, tenant: str | None = None, at: float) -> RunRecord | None:
        """If the run is ``waiting``, set it ``running`` (``updated_at=at``) and return it as it was,
        ``pending`` included; else ``None``. Atomic: of concurrent claims, exactly one succeeds."""
        ...

    def request_cancel(self, run_id: str, *, tenant: str | None = None, reason: str) -> RunRecord | None:
        """If the run is ``running``, set it ``cancelling`` (``detail=reason``; ``updated_at``, its last
        heartbeat, is kept) and return it so; else ``None``. The process running it sees the status
        and stops the run. Atomic, like :meth:`claim_run`."""
        ...

    def touch_run(self, run_id: str, *, at: float) -> bool:
        """The heartbeat of a run in flight: if the run is ``running`` or ``cancelling``, set its
        ``updated_at`` to ``at`` and return True; else False (nothing changes)."""
        ...
