"""Agent runs on the SQL store (mixed into :class:`SqlExchangeStore`).

Implements :class:`~aiestack.stores.runs.RunStore`; see the protocol for the contract. A run's row
and the steps appended with it are written in one transaction; :meth:`claim_run` is one
conditional ``UPDATE ... WHERE status = 'waiting'``, so only one of concurrent claims changes a row;
:meth:`request_cancel` is one ``UPDATE ... WHERE status = 'running'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from aiestack.stores.runs import RunRecord, check_run_status
from aiestack.stores.sql.engine import store_errors, write_transaction
from aiestack.stores.sql.tables import agent_run_steps, agent_runs

_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))


class SqlRunsMixin:
    """The run methods; the host class provides ``_engine`` and ``_url``."""

    _engine: sa.Engine
    _url: URL

    def put_run(self, record: RunRecord, steps: Sequence[Mapping[str, Any]] = ()) -> None:
        check_run_status(record.status)
        row = {name: getattr(record, name) for name in _FIELDS}
        row["pending"] = None if record.pending is None else dict(record.pending)
        c = agent_runs.c
        with store_errors(self._url, "write an agent run to"), write_transaction(self._engine) as connection:
            owner = connection.execute(sa.select(c.tenant).where(c.run_id == record.run_id)).scalar()
            if owner is None:
                connection.execute(sa.insert(agent_runs), row)
            elif owner != record.tenant:
                raise ValueError(f"run {record.run_id!r} belongs to another tenant")
            else:
                connection.execute(sa.update(agent_runs).where(c.run_id == record.run_id).values(row))
            if steps:
                s = agent_run_steps.c
                start = connection.execute(
                    sa.select(sa.func.coalesce(sa.func.max(s.position) + 1, 0)).where(s.run_id == record.run_id)
                ).scalar_one()
                connection.execute(
                    sa.insert(agent_run_steps),
                    [
                        {"run_id": record.run_id, "position": start + i, "type": str(step.get("type", "")), "data": dict(step)}
                        for i, step in enumerate(steps)
                    ],
                )

    def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        c = agent_runs.c
        query = sa.select(agent_runs).where(c.run_id == run_id)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _record(row) if row is not None else None

    def list_runs(
        self,
        *,
        tenant: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        c = agent_runs.c
        query = sa.select(*(col for col in agent_runs.c if col.name != "pending"))
        for column, value in ((c.tenant, tenant), (c.agent, agent), (c.status, status)):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(c.created_at.desc(), c.run_id.desc()).limit(limit).offset(offset)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def run_steps(self, run_id: str, *, tenant: str | None = None) -> list[dict[str, Any]]:
        s = agent_run_steps.c
        query = sa.select(s.data).where(s.run_id == run_id).order_by(s.position)
        if tenant is not None:
            owned = sa.select(agent_runs.c.run_id).where(agent_runs.c.run_id == run_id, agent_runs.c.tenant == tenant)
            query = query.where(s.run_id.in_(owned))
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            return [dict(data) for data in connection.execute(query).scalars()]

    def claim_run(self, run_id: str, *, tenant: str | None = None, at: float) -> RunRecord | None:
        c = agent_runs.c
        where = [c.run_id == run_id, c.status == "waiting"]
        if tenant is not None:
            where.append(c.tenant == tenant)
        with store_errors(self._url, "write an agent run to"), write_transaction(self._engine) as connection:
            row = connection.execute(sa.select(agent_runs).where(*where)).mappings().first()
            if row is None:
                return None
            claimed = connection.execute(sa.update(agent_runs).where(*where).values(status="running", updated_at=at))
            if claimed.rowcount != 1:
                return None
        return _record(row)


    def request_cancel(self, run_id: str, *, tenant: str | None = None, reason: str) -> RunRecord | None:
        c = agent_runs.c
        where = [c.run_id == run_id, c.status == "running"]
        if tenant is not None:
            where.append(c.tenant == tenant)
        with store_errors(self._url, "write an agent run to"), write_transaction(self._engine) as connection:
            asked = connection.execute(
                sa.update(agent_runs).where(*where).values(status="cancelling", detail=reason)
            )
            if asked.rowcount != 1:
                return None
            row = connection.execute(sa.select(agent_runs).where(c.run_id == run_id)).mappings().first()
        return _record(row) if row is not None else None


    def touch_run(self, run_id: str, *, at: float) -> bool:
        c = agent_runs.c
        with store_errors(self._url, "write an agent run to"), write_transaction(self._engine) as connection:
            done = connection.execute(
                sa.update(agent_runs)
                .where(c.run_id == run_id, c.status.in_(("running", "cancelling")))
                .values(updated_at=at)
            )
        return bool(done.rowcount == 1)


def _record(row: sa.RowMapping) -> RunRecord:
    values = {name: row[name] for name in _FIELDS if name in row}
    return RunRecord(**values)
