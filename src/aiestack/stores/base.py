"""Storage protocols: one per capability, not per backend (ARCHITECTURE.md §4).

Every backend passes the same conformance tests (:mod:`aiestack.testing.conformance`).
Stores are synchronous: the background writer calls them from its own thread, and read paths
(CLI, console) call them directly or from a thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from aiestack.types import EvalRun, SpanRecord


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    """An exchange as stored: flat, queryable columns plus JSON for the rest.

    ``request`` always holds the model and parameters; it holds the messages only when content
    tracing is on. ``response`` is the answer's text, likewise only with content tracing.
    """

    id: str
    created_at: float  # epoch seconds
    model: str
    outcome: str  # ok | error | blocked | cached
    tenant: str = "default"
    key_id: str | None = None
    route: str | None = None
    provider: str | None = None
    stream: bool = False
    finish_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    queue_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    total_ms: float | None = None
    cost_usd: float | None = None
    cached: bool = False
    trace_id: str | None = None
    request: Mapping[str, Any] = field(default_factory=dict)
    response: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: The strongest action a guardrail took (block > redact > flag), ``None`` when none acted;
    #: a column so that the console can filter on it with an index.
    guard_action: str | None = None


@runtime_checkable
class ExchangeStore(Protocol):
    """Exchanges and their spans (and, in later migrations, feedback, eval runs, prompts, keys).

    ``url`` says where it lives (without a password): the other capabilities beside it (the
    response cache) are opened at that URL (:func:`aiestack.stores.open.open_store`).
    """

    @property
    def url(self) -> str: ...

    def migrate(self) -> None:
        """Bring the schema to the latest version. Safe to run again, and after a crash."""
        ...

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        """Insert records; a record whose id exists replaces the old one (idempotent retries)."""
        ...

    def write_spans(self, spans: Sequence[SpanRecord]) -> None: ...

    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None: ...

    def list_exchanges(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        model: str | None = None,
        tenant: str | None = None,
    ) -> list[ExchangeRecord]:
        """Newest first; ``before`` (epoch seconds, exclusive) pages backwards."""
        ...

    def spans(self, *, trace_id: str | None = None, exchange_id: str | None = None) -> list[SpanRecord]:
        """Spans of one trace or exchange, ordered by start time."""
        ...

    def ping(self) -> None:
        """Raise :class:`aiestack.errors.StoreError` if the store cannot be reached."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EmbeddingCacheStore(Protocol):
    """Vectors keyed by (model, sha256 of the text)."""

    def get_embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, list[float]]: ...

    def put_embeddings(self, model: str, items: Mapping[str, Sequence[float]]) -> None: ...


# --------------------------------------------------------------------------- virtual keys and usage


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual API key as stored. The secret itself is never stored, only its SHA-256.

    ``prefix`` is the start of the secret (``aie-`` and a few characters), kept so that people can
    tell their keys apart in listings and error messages. A limit or budget of ``None`` means
    none; an empty ``models`` allows every model and route.
    """

    id: str
    tenant: str
    secret_hash: str  # sha256 hex of the secret
    prefix: str
    created_at: float  # epoch seconds
    name: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_day_usd: float | None = None
    budget_month_usd: float | None = None
    models: tuple[str, ...] = ()
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@runtime_checkable
class KeyStore(Protocol):
    """Virtual keys: created, found by the hash of their secret, listed, revoked (never deleted).

    Keys are never deleted so that exchanges keep naming a key that can still be looked up, and
    so that a revoked secret can never be issued again (``secret_hash`` is unique).
    """

    def add_key(self, record: KeyRecord) -> None:
        """Insert a new key. Raises ``ValueError`` if its id or secret hash already exists."""
        ...

    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def find_key(self, secret_hash: str) -> KeyRecord | None:
        """The key (revoked or not) whose secret hashes to ``secret_hash``."""
        ...

    def list_keys(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        """Oldest first, ``id`` breaking ties."""
        ...

    def revoke_key(self, key_id: str, *, at: float) -> KeyRecord | None:
        """Mark the key revoked at ``at`` (a key revoked before keeps its first time); None if unknown."""
        ...

    def has_keys(self) -> bool:
        """Whether any key was ever created (revoked ones count: revoking the last key must not
        switch authentication off)."""
        ...


UsageGroup = Literal["key", "tenant", "model", "day"]
USAGE_GROUPS: tuple[UsageGroup, ...] = ("key", "tenant", "model", "day")


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Totals over the exchanges of one group. A field not grouped by is ``None``.

    ``day`` is the UTC date (``YYYY-MM-DD``). ``cost_usd`` sums the known costs (an exchange whose
    price is unknown adds nothing); ``errors`` counts exchanges whose outcome is ``error``.
    """

    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    errors: int
    key_id: str | None = None
    tenant: str | None = None
    model: str | None = None
    day: str | None = None

    def group_value(self, group: UsageGroup) -> str | None:
        """This row's value for ``group`` (``"key"`` is the ``key_id`` field)."""
        value: str | None = getattr(self, "key_id" if group == "key" else group)
        return value


@runtime_checkable
class SpendSource(Protocol):
    """What a key has spent: the ground truth that budget counters are seeded from."""

    def spend(self, key_id: str, since: float) -> float:
        """USD spent by ``key_id`` on exchanges created at or after ``since`` (epoch seconds)."""
        ...


@runtime_checkable
class UsageStore(SpendSource, Protocol):
    """Usage summaries over the stored exchanges (implemented by the exchange stores)."""

    def usage_summary(
        self,
        *,
        by: Sequence[UsageGroup] = ("key",),
        since: float | None = None,
        until: float | None = None,
    ) -> list[UsageRow]:
        """Totals grouped by ``by`` over exchanges with ``since <= created_at < until``.

        Rows are ordered by their group values (``None`` first); ``by=()`` gives one total row
        (none when there are no exchanges). Raises ``ValueError`` for an unknown group.
        """
        ...


def check_usage_groups(by: Sequence[str]) -> tuple[UsageGroup, ...]:
    """``by`` validated (each a known group, none twice), in the caller's order (which is the sort order)."""
    known: dict[str, UsageGroup] = {g: g for g in USAGE_GROUPS}
    unknown = [g for g in by if g not in known]
    if unknown:
        raise ValueError(f"unknown usage group(s) {unknown}; group by any of {', '.join(USAGE_GROUPS)}")
    if len(set(by)) != len(by):
        raise ValueError(f"usage groups must not repeat, got {list(by)}")
    return tuple(known[g] for g in by)


def sort_usage(rows: Sequence[UsageRow], groups: Sequence[UsageGroup]) -> list[UsageRow]:
    """``rows`` ordered by their values for ``groups`` in turn, ``None`` before any value.

    Done in Python rather than SQL because SQLite and PostgreSQL put NULLs at opposite ends.
    """

    def key(row: UsageRow) -> tuple[tuple[bool, str], ...]:
        return tuple((row.group_value(g) is not None, row.group_value(g) or "") for g in groups)

    return sorted(rows, key=key)


# --------------------------------------------------------------------------- evaluation runs


@dataclass(frozen=True, slots=True)
class EvalResultRecord:
    """One system's scored answer to one example in one evaluation run.

    Keyed by ``(run_id, example_id, system)``: writing it again replaces it, so a resumed run can
    retry an example whose call failed. ``scores`` maps metric names to values (``None``: not
    applicable); ``details`` holds per-metric detail such as a judge's reasoning. ``exchange_id``
    links to the exchange that produced ``output`` (for a cached answer, the original exchange).
    """

    run_id: str
    example_id: str
    system: str
    output: str
    scores: Mapping[str, float | None] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    exchange_id: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    cached: bool = False
    created_at: float = 0.0


@runtime_checkable
class EvalStore(Protocol):
    """Evaluation runs (:class:`aiestack.types.EvalRun`) and their per-example results."""

    def write_eval_run(self, run: EvalRun) -> None:
        """Insert or replace a run (its summary and ``finished_at`` are written when it ends)."""
        ...

    def get_eval_run(self, run_id: str) -> EvalRun | None: ...

    def list_eval_runs(self, *, limit: int = 50, suite: str | None = None) -> list[EvalRun]:
        """Newest first (by ``started_at``, then id)."""
        ...

    def write_eval_results(self, results: Sequence[EvalResultRecord]) -> None:
        """Insert or replace results by ``(run_id, example_id, system)``."""
        ...

    def eval_results(self, run_id: str, *, system: str | None = None) -> list[EvalResultRecord]:
        """A run's results ordered by system, then example id."""
        ...
