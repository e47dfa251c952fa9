"""The contextual-retrieval cache protocol: situating contexts keyed by (model, ``document_hash:chunk_hash``).

Implementations: :mod:`~aiestack.stores.context_cache_memory` (in process) and
:mod:`~aiestack.stores.context_cache_sql` (SQLite, PostgreSQL); open one with
``open_store(url, "context_cache")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class ContextCache(Protocol):
    """Situating contexts keyed by (model, key); keys are ``document_hash:chunk_hash``."""

    def get_contexts(self, model: str, keys: Sequence[str]) -> dict[str, str]: ...

    def put_contexts(self, model: str, items: Mapping[str, str]) -> None: ...

    def close(self) -> None: ...
