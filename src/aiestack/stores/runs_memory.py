"""Agent runs in memory (mixed into :class:`MemoryExchangeStore`).

Behaves like the SQL implementation (:mod:`aiestack.stores.runs_sql`) wherever a caller could
tell: both pass the same conformance tests.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from aiestack.stores.runs import RunRecord, check_run_status


def _copy(value: Any) -> Any:
    """A JSON round trip: what a SQL store would give back (and no aliasing of the caller's dicts)."""
    return json.loads(json.dumps(value))


class MemoryRunsMixin:
    """The run methods; the host calls :meth:`_init_runs` in its ``__init__``."""

    _lock: threading.Lock

    def _init_runs(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._run_steps: dict[str, list[dict[str, Any]]] = {}

    def put_run(self, record: RunRecord, steps: Sequence[Mapping[str, Any]] = ()) -> None:
        check_run_status(record.status)
        copied = [_copy(dict(s)) for s in steps]
        pending = None if record.pending is None else _copy(dict(record.pending))
        with self._lock:
            existing = self._runs.get(record.run_id)
            if existing is not None and existing.tenant != record.tenant:
                raise ValueError(f"run {record.run_id!r} belongs to another tenant")
            self._runs[record.run_id] = dataclasses.replace(record, pending=pending)
            self._run_steps.setdefault(record.run_id, []).extend(copied)

    def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        with self._lock:
            record = self._runs.get(run_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        return dataclasses.replace(record, pending=None if record.pending is None else _copy(dict(record.pending)))

    def list_runs(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        with self._lock:
            records = list(self._runs.values())
        chosen = [
            dataclasses.replace(r, pending=None)
            for r in records
            if (tenant is None or r.tenant == tenant)
            and (agent is None or r.agent == agent)
            and (status is None or r.status == status)
        ]
        chosen.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return chosen[offset : offset + limit]

    def run_steps(self, run_id: str, *, tenant: str | None = None) -> list[dict[str, Any]]:
        if self.get_run(run_id, tenant=tenant) is None:
            return []
        with self._lock:
            steps: list[dict[str, Any]] = _copy(self._run_steps.get(run_id, []))
        return steps

    def request_cancel(self, run_id: str, *, tenant: str | None = None, reason: str) -> RunRecord | None:
        with self._lock:
            record = self._runs.get(run_id)
            if record is None or (tenant is not None and record.tenant != tenant) or record.status != "running":
                return None
            asked = dataclasses.replace(record, status="cancelling", detail=reason)
            self._runs[run_id] = asked
        return dataclasses.replace(asked, pending=None if asked.pending is None else _copy(dict(asked.pending)))

    def touch_run(self, run_id: str, *, at: float) -> bool:
        with self._lock:
            record = self._runs.get(run_id)
            if record is None or record.status not in ("running", "cancelling"):
                return False
            self._runs[run_id] = dataclasses.replace(record, updated_at=at)
        return True

    def claim_run(self, run_id: str, *, tenant: str | None = None, at: float) -> RunRecord | None:
        with self._lock:
            record = self._runs.get(run_id)
            if record is None or (tenant is not None and record.tenant != tenant) or record.status != "waiting":
                return None
            self._runs[run_id] = dataclasses.replace(record, status="running", updated_at=at)
        return dataclasses.replace(record, pending=None if record.pending is None else _copy(dict(record.pending)))
