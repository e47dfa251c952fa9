"""Datasets on the SQL store (mixed into :class:`SqlExchangeStore`).

Implements :class:`~aiestack.stores.datasets.DatasetStore`; see the protocol for the contract. A
version and all its rows are inserted in one transaction, so a failed push leaves nothing behind,
and the ``(name, version)`` primary key makes two concurrent pushes take different numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from aiestack.stores.datasets import (
    DatasetKind,
    DatasetRow,
    DatasetVersion,
    check_push,
    content_hash,
)
from aiestack.stores.sql.engine import store_errors, write_transaction
from aiestack.stores.sql.tables import dataset_rows, dataset_versions

_INSERT_BATCH = 1000


class SqlDatasetsMixin:
    """The dataset methods; the host class provides ``_engine`` and ``_url``."""

    _engine: sa.Engine
    _url: URL

    def push_dataset(
        self,
        name: str,
        kind: DatasetKind,
        rows: Sequence[DatasetRow],
        *,
        created_at: float,
        source: Mapping[str, Any] | None = None,
        parent: str | None = None,
        message: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        check_push(name, kind)
        ids = [row.id for row in rows]
        digest = content_hash(kind, ids)
        for _ in range(5):  # a concurrent push took the number: read the newest again and retry
            latest = self.get_dataset(name)
            if latest is not None and latest.kind != kind:
                raise ValueError(f"dataset {name!r} holds {latest.kind} rows, not {kind}; build it under another name")
            if latest is not None and latest.content_hash == digest:
                return latest, False
            version = DatasetVersion(
                name=name,
                version=(latest.version if latest is not None else 0) + 1,
                kind=kind,
                content_hash=digest,
                rows=len(rows),
                created_at=created_at,
                source=dict(source or {}),
                parent=parent,
                message=message,
            )
            head = {
                "name": name,
                "version": version.version,
                "kind": kind,
                "content_hash": digest,
                "rows": len(rows),
                "created_at": created_at,
                "source": dict(version.source),
                "parent": parent,
                "message": message,
            }
            body = [
                {
                    "name": name,
                    "version": version.version,
                    "position": i,
                    "row_id": rid,
                    "data": dict(row.data),
                    "lineage": dict(row.lineage),
                }
                for i, (rid, row) in enumerate(zip(ids, rows, strict=True))
            ]
            try:
                with store_errors(self._url, "write a dataset to"), write_transaction(self._engine) as connection:
                    connection.execute(sa.insert(dataset_versions), head)
                    for start in range(0, len(body), _INSERT_BATCH):
                        connection.execute(sa.insert(dataset_rows), body[start : start + _INSERT_BATCH])
            except sa.exc.IntegrityError:
                continue
            return version, True
        raise RuntimeError(f"could not number a new version of dataset {name!r}: too many concurrent pushes")

    def get_dataset(self, name: str, version: int | None = None) -> DatasetVersion | None:
        c = dataset_versions.c
        query = sa.select(dataset_versions).where(c.name == name)
        query = query.where(c.version == version) if version is not None else query.order_by(c.version.desc())
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(query.limit(1)).mappings().first()
        return _version(row) if row is not None else None

    def dataset_versions(self, name: str) -> list[DatasetVersion]:
        c = dataset_versions.c
        query = sa.select(dataset_versions).where(c.name == name).order_by(c.version)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            return [_version(row) for row in connection.execute(query).mappings()]

    def list_datasets(self) -> list[DatasetVersion]:
        c = dataset_versions.c
        newest = sa.select(c.name, sa.func.max(c.version).label("version")).group_by(c.name).subquery()
        query = (
            sa.select(dataset_versions)
            .join(newest, sa.and_(c.name == newest.c.name, c.version == newest.c.version))
            .order_by(c.name)
        )
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            return [_version(row) for row in connection.execute(query).mappings()]

    def dataset_rows(self, name: str, version: int, *, offset: int = 0, limit: int | None = None) -> list[DatasetRow]:
        c = dataset_rows.c
        query = (
            sa.select(c.data, c.lineage)
            .where(c.name == name, c.version == version, c.position >= offset)
            .order_by(c.position)
        )
        if limit is not None:
            query = query.limit(limit)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            return [DatasetRow(data=row.data, lineage=row.lineage) for row in connection.execute(query)]


def _version(row: sa.RowMapping) -> DatasetVersion:
    return DatasetVersion(
        name=row["name"],
        version=row["version"],
        kind=row["kind"],
        content_hash=row["content_hash"],
        rows=row["rows"],
        created_at=row["created_at"],
        source=row["source"],
        parent=row["parent"],
        message=row["message"],
    )
