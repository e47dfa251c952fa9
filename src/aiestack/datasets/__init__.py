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
from aiestack.stores.datasets import DatasetRow, DatasetStore, DatasetVersion

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
    """Push ``built`` as the next version of ``name`` (a no-op returning the newest version when the
    content is unchanged). The version's ``source`` records how the rows were chosen and what was
    left out."""
    source = {**built.source, "skipped": dict(built.skipped)} if built.skipped else dict(built.source)
    return store.push_dataset(name, built.kind, built.rows, created_at=time.time(), source=source, parent=parent, message=message)
