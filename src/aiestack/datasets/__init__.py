"""Datasets as versioned objects (AI Engineering, ch. 8): built, stored, diffed and exported.

A dataset version is immutable and content-hashed, and each of its rows keeps its lineage (the
exchange and feedback it came from, the file line, the eval example, the generator): see
:mod:`aiestack.stores.datasets` for the store contract, :mod:`aiestack.datasets.sources` for where
rows come from, :mod:`aiestack.datasets.export` for the output formats. ``aiestack datasets`` is the
command line; docs/datasets.md the guide.
"""

from __future__ import annotations

import time

from aiestack.datasets.export import (
    EXPORT_FORMATS,
    DatasetDiff,
    diff_versions,
    export_dataset,
    iter_rows,
    resolve,
)
from aiestack.datasets.rows import RowError, normalise
from aiestack.datasets.sources import (
    Built,
    ExchangeSelection,
    from_conversations,
    from_exchanges,
    from_file,
    from_suite,
)
from aiestack.stores.datasets import DatasetRow, DatasetStore, DatasetVersion, content_hash

__all__ = [
    "EXPORT_FORMATS",
    "Built",
    "DatasetDiff",
    "DatasetRow",
    "DatasetStore",
    "DatasetVersion",
    "ExchangeSelection",
    "RowError",
    "build_dataset",
    "diff_versions",
    "export_dataset",
    "from_conversations",
    "from_exchanges",
    "from_file",
    "from_suite",
    "iter_rows",
    "normalise",
    "resolve",
]


def build_dataset(
    store: DatasetStore, name: str, built: Built, *, message: str | None = None, parent: str | None = None
) -> tuple[DatasetVersion, bool]:
    """Push ``built`` as the next version of ``name``, or return an existing version with ``False``
    when nothing changed: the content equals the newest version's, or that of a version of ``name``
    the newest was derived from (curated from, in a chain of parents). So building again the rows
    the newest version was curated from adds nothing (a flywheel re-run on the same traffic made
    two new versions equal to the first two). The version's ``source`` records how the rows were
    chosen and what was left out."""
    origin = _derived_from(store, name, content_hash(built.kind, [r.id for r in built.rows]), built.kind)
    if origin is not None:
        return origin, False
    source = {**built.source, "skipped": dict(built.skipped)} if built.skipped else dict(built.source)
    return store.push_dataset(name, built.kind, built.rows, created_at=time.time(), source=source, parent=parent, message=message)


def _derived_from(store: DatasetStore, name: str, digest: str, kind: str) -> DatasetVersion | None:
    """The version of ``name`` holding ``digest`` among the newest version's ancestors in the same
    dataset (the newest itself excluded: the store's push already returns it)."""
    latest = store.get_dataset(name)
    seen: set[int] = set()
    while latest is not None and latest.kind == kind and latest.parent and latest.version not in seen:
        seen.add(latest.version)
        parent_name, _, number = latest.parent.rpartition("@")
        if parent_name != name or not number.isdigit():
            return None
        latest = store.get_dataset(name, int(number))
        if latest is not None and latest.content_hash == digest:
            return latest
    return None
