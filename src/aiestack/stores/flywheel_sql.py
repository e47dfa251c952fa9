"""Flywheel runs on the SQL store (mixed into :class:`SqlExchangeStore`).

Implements :class:`~aiestack.stores.flywheel.FlywheelStore`; see the protocol for the contract. Each
write is one short transaction; a step is keyed by ``(run_id, name)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from aiestack.stores.flywheel import FlywheelRun, FlywheelStep, check_run, check_step
from aiestack.stores.sql.engine import store_errors, write_transaction
from aiestack.stores.sql.tables import flywheel_runs, flywheel_steps

_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(FlywheelRun))
_STEP_FIELDS = tuple(f.name for f in dataclasses.fields(FlywheelStep))


class SqlFlywheelMixin:
    """The flywheel methods; the host class provides ``_engine`` and ``_url``."""

    _engine: sa.Engine
    _url: URL

    def put_flywheel_run(self, run: FlywheelRun) -> None:
        check_run(run)
        row = {name: getattr(run, name) for name in _RUN_FIELDS}
        row["spec"] = dict(run.spec)
        c = flywheel_runs.c
        with store_errors(self._url, "write a flywheel run to"), write_transaction(self._engine) as connection:
            updated = connection.execute(sa.update(flywheel_runs).where(c.run_id == run.run_id).values(row))
            if updated.rowcount == 0:
                connection.execute(sa.insert(flywheel_runs), row)

    def get_flywheel_run(self, run_id: str) -> FlywheelRun | None:
        query = sa.select(flywheel_runs).where(flywheel_runs.c.run_id == run_id)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else FlywheelRun(**{name: row[name] for name in _RUN_FIELDS})

    def list_flywheel_runs(self, *, name: str | None = None, limit: int = 50, offset: int = 0) -> list[FlywheelRun]:
        c = flywheel_runs.c
        query = sa.select(flywheel_runs)
        if name is not None:
            query = query.where(c.name == name)
        query = query.order_by(c.created_at.desc(), c.run_id.desc()).limit(limit).offset(offset)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [FlywheelRun(**{n: row[n] for n in _RUN_FIELDS}) for row in rows]

    def put_flywheel_step(self, step: FlywheelStep) -> None:
        check_step(step)
        row: dict[str, Any] = {name: getattr(step, name) for name in _STEP_FIELDS}
        row["inputs"], row["outputs"] = dict(step.inputs), dict(step.outputs)
        s = flywheel_steps.c
        where = (s.run_id == step.run_id, s.name == step.name)
        with store_errors(self._url, "write a flywheel step to"), write_transaction(self._engine) as connection:
            # Write first (SQLite takes the write lock at the first write, so nothing read can go stale).
            values = {k: v for k, v in row.items() if k != "position"}
            if connection.execute(sa.update(flywheel_steps).where(*where).values(values)).rowcount:
                return
            known = connection.execute(sa.select(flywheel_runs.c.run_id).where(flywheel_runs.c.run_id == step.run_id)).first()
            if known is None:
                raise KeyError(f"there is no flywheel run {step.run_id!r}")
            connection.execute(sa.insert(flywheel_steps), row)

    def flywheel_steps(self, run_id: str) -> list[FlywheelStep]:
        s = flywheel_steps.c
        query = sa.select(flywheel_steps).where(s.run_id == run_id).order_by(s.position)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [FlywheelStep(**{n: row[n] for n in _STEP_FIELDS}) for row in rows]
