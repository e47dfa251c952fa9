"""The DatasetStore protocol: immutable, content-hashed dataset versions whose rows keep their lineage.

Every backend (SQL, memory) implements it and passes
:class:`aiestack.testing.datasets_conformance.DatasetStoreConformance`. The datasets wing
(:mod:`aiestack.datasets`) builds rows from exchanges, files and eval suites, diffs and exports them.

- A dataset is a name (``[a-z0-9][a-z0-9_.-]*``) with versions 1, 2, 3, ... of one kind (``chat``
  or ``preference``). Versions are immutable: :meth:`DatasetStore.push_dataset` numbers a new one,
  unless its content hash equals the newest version's (then it is a no-op returning that version).
- A row is its ``data`` (what a trainer reads: ``{"messages": [...]}`` for chat,
  ``{"prompt", "chosen", "rejected"}`` for preference) and its ``lineage`` (where it came from:
  ``exchange_id``, ``feedback_ids``, ``file``/``line``, ``suite``/``example_id``, ``generator``...).
  Its id is the sha256 of its canonical data, so the same example has the same id in every version
  and dataset; lineage does not change the id.
- A version's ``content_hash`` is the sha256 of its kind and its row ids in order: two versions
  with the same rows in the same order have the same hash, whatever their lineage.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

DatasetKind = Literal["chat", "preference"]
DATASET_KINDS: tuple[DatasetKind, ...] = ("chat", "preference")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")


def check_dataset_name(name: str) -> str:
    """``name`` if it is a valid dataset name, else ``ValueError`` saying what one looks like."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid dataset name {name!r}: use lower-case letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (at most 128 characters)"
        )
    return name


def check_push(name: str, kind: str) -> None:
    """What every backend checks before a push: a valid name and a known kind (``ValueError`` otherwise)."""
    check_dataset_name(name)
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASET_KINDS)}")


def canonical_json(value: Any) -> str:
    """The one serialisation that ids and hashes are computed over (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_id(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def content_hash(kind: str, row_ids: Sequence[str]) -> str:
    digest = hashlib.sha256(kind.encode())
    for rid in row_ids:
        digest.update(b"\n" + rid.encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class DatasetRow:
    """One example: ``data`` for the trainer, ``lineage`` for the people asking where it came from."""

    data: Mapping[str, Any]
    lineage: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return row_id(self.data)


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One immutable version of a dataset.

    ``source`` says how it was built (``{"from": "exchanges", "filters": {...}}``, a file, a suite,
    a curation step); ``parent`` names the version it was derived from (``"name@version"``), if any.
    """

    name: str
    version: int
    kind: DatasetKind
    content_hash: str
    rows: int
    created_at: float  # epoch seconds
    source: Mapping[str, Any] = field(default_factory=dict)
    parent: str | None = None
    message: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@runtime_checkable
class DatasetStore(Protocol):
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
        """Store a new version numbered one past the newest (1 for a new dataset) with ``rows`` in
        order, and return it with ``True``; if its content hash equals the newest version's, store
        nothing and return that version with ``False``. All rows are written or none (a failed push
        leaves no partial version). Raises ``ValueError`` for an invalid name or kind, or a kind
        other than the dataset's existing one."""
        ...

    def get_dataset(self, name: str, version: int | None = None) -> DatasetVersion | None:
        """A version (``None``: the newest); ``None`` if the dataset or version does not exist."""
        ...

    def dataset_versions(self, name: str) -> list[DatasetVersion]:
        """Every version of ``name``, oldest first (empty for an unknown dataset)."""
        ...

    def list_datasets(self) -> list[DatasetVersion]:
        """The newest version of every dataset, by name."""
        ...

    def dataset_rows(self, name: str, version: int, *, offset: int = 0, limit: int | None = None) -> list[DatasetRow]:
        """Rows of one version in their stored order, from ``offset`` (at most ``limit``); empty for
        an unknown version."""
        ...
