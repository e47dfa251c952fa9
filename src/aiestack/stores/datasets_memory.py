"""Datasets in memory (mixed into :class:`MemoryExchangeStore`).

Behaves like the SQL implementation (:mod:`aiestack.stores.datasets_sql`) wherever a caller could
tell: both pass the same conformance tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from aiestack.stores.datasets import (
    DatasetKind,
    DatasetRow,
    DatasetVersion,
    check_push,
    content_hash,
)


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip: what a SQL store would give back (and no aliasing of the caller's dicts)."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return copied


class MemoryDatasetsMixin:
    """The dataset methods; the host calls :meth:`_init_datasets` in its ``__init__``."""

    _lock: threading.Lock

    def _init_datasets(self) -> None:
        self._datasets: dict[str, list[tuple[DatasetVersion, list[DatasetRow]]]] = {}

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
        copies = [DatasetRow(data=_copy(r.data), lineage=_copy(r.lineage)) for r in rows]
        digest = content_hash(kind, [r.id for r in copies])
        with self._lock:
            versions = self._datasets.setdefault(name, [])
            latest = versions[-1][0] if versions else None
            if latest is not None and latest.kind != kind:
                raise ValueError(f"dataset {name!r} holds {latest.kind} rows, not {kind}; build it under another name")
            if latest is not None and latest.content_hash == digest:
                return latest, False
            version = DatasetVersion(
                name=name,
                version=(latest.version if latest is not None else 0) + 1,
                kind=kind,
                content_hash=digest,
                rows=len(copies),
                created_at=created_at,
                source=_copy(source or {}),
                parent=parent,
                message=message,
            )
            versions.append((version, copies))
            return version, True

    def get_dataset(self, name: str, version: int | None = None) -> DatasetVersion | None:
        with self._lock:
            versions = self._datasets.get(name, [])
            if version is None:
                return versions[-1][0] if versions else None
            return next((v for v, _ in versions if v.version == version), None)

    def dataset_versions(self, name: str) -> list[DatasetVersion]:
        with self._lock:
            return [v for v, _ in self._datasets.get(name, [])]

    def list_datasets(self) -> list[DatasetVersion]:
        with self._lock:
            return [versions[-1][0] for _, versions in sorted(self._datasets.items()) if versions]

    def dataset_rows(self, name: str, version: int, *, offset: int = 0, limit: int | None = None) -> list[DatasetRow]:
        with self._lock:
            rows = next((r for v, r in self._datasets.get(name, []) if v.version == version), [])
            end = None if limit is None else offset + limit
            return [DatasetRow(data=_copy(r.data), lineage=_copy(r.lineage)) for r in rows[offset:end]]
