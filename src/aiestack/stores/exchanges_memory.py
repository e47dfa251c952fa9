"""An in-memory ExchangeStore, EmbeddingCacheStore, KeyStore and UsageStore, for tests and throwaway sessions.

It behaves like the SQL store wherever a caller could tell the difference, so that tests written
against it hold for the real thing (both pass :mod:`aiestack.testing.conformance`): JSON fields go
through a JSON round trip (tuples come back as lists, a caller's later mutation does not leak in),
embeddings are rounded to float32, and ordering ties break the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aiestack.stores.base import (
    EvalResultRecord,
    ExchangeRecord,
    KeyRecord,
    UsageGroup,
    UsageRow,
    check_usage_groups,
    sort_usage,
)
from aiestack.stores.datasets_memory import MemoryDatasetsMixin
from aiestack.stores.feedback_memory import MemoryFeedbackMixin
from aiestack.stores.flywheel_memory import MemoryFlywheelMixin
from aiestack.stores.runs_memory import MemoryRunsMixin
from aiestack.types import EvalRun, SpanRecord

_FLOAT32_LE = np.dtype("<f4")


def _json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """What a JSON column would give back: a fresh dict of JSON values (fails as the database would)."""
    copied: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return copied


class MemoryExchangeStore(MemoryFeedbackMixin, MemoryDatasetsMixin, MemoryRunsMixin, MemoryFlywheelMixin):
    """Exchanges, spans, cached embeddings and virtual keys in dictionaries, guarded by one lock."""

    url = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchanges: dict[str, ExchangeRecord] = {}
        self._spans: dict[tuple[str, str], SpanRecord] = {}
        self._embeddings: dict[tuple[str, str], list[float]] = {}
        self._keys: dict[str, KeyRecord] = {}
        self._key_ids_by_hash: dict[str, str] = {}
        self._eval_runs: dict[str, EvalRun] = {}
        self._eval_results: dict[tuple[str, str, str], EvalResultRecord] = {}
        self._init_feedback()
        self._init_datasets()
        self._init_runs()
        self._init_flywheel()

    def __repr__(self) -> str:
        return "MemoryExchangeStore()"

    def migrate(self) -> None:
        """Nothing to migrate: the schema is the dataclasses."""

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release; the data stays readable until the store is dropped."""

    # ------------------------------------------------------------------ exchanges

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        copies = [
            dataclasses.replace(r, request=_json_copy(r.request), attributes=_json_copy(r.attributes))
            for r in records
        ]
        with self._lock:
            for record in copies:
                self._exchanges[record.id] = record

    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None:
        with self._lock:
            record = self._exchanges.get(exchange_id)
        return _fresh_exchange(record) if record is not None else None

    def list_exchanges(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        model: str | None = None,
        tenant: str | None = None,
    ) -> list[ExchangeRecord]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._lock:
            records = list(self._exchanges.values())
        chosen = [
            r
            for r in records
            if (before is None or r.created_at < before)
            and (model is None or r.model == model)
            and (tenant is None or r.tenant == tenant)
        ]
        chosen.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return [_fresh_exchange(r) for r in chosen[:limit]]

    # ------------------------------------------------------------------ spans

    def write_spans(self, spans: Sequence[SpanRecord]) -> None:
        copies = [dataclasses.replace(s, attributes=_json_copy(s.attributes)) for s in spans]
        with self._lock:
            for span in copies:
                self._spans.setdefault((span.trace_id, span.span_id), span)

    def spans(self, *, trace_id: str | None = None, exchange_id: str | None = None) -> list[SpanRecord]:
        if trace_id is None and exchange_id is None:
            raise ValueError("spans() needs a trace_id or an exchange_id")
        with self._lock:
            records = list(self._spans.values())
        chosen = [
            s
            for s in records
            if (trace_id is None or s.trace_id == trace_id)
            and (exchange_id is None or s.exchange_id == exchange_id)
        ]
        chosen.sort(key=lambda s: (s.start_ns, s.span_id))
        return [dataclasses.replace(s, attributes=_json_copy(s.attributes)) for s in chosen]

    # ------------------------------------------------------------------ embedding cache

    def get_embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, list[float]]:
        with self._lock:
            return {h: list(self._embeddings[model, h]) for h in hashes if (model, h) in self._embeddings}

    def put_embeddings(self, model: str, items: Mapping[str, Sequence[float]]) -> None:
        rounded = {h: list(np.asarray(v, dtype=_FLOAT32_LE).tolist()) for h, v in items.items()}
        with self._lock:
            for text_hash, vector in rounded.items():
                self._embeddings[model, text_hash] = vector

    # ------------------------------------------------------------------ usage

    def usage_summary(
        self,
        *,
        by: Sequence[UsageGroup] = ("key",),
        since: float | None = None,
        until: float | None = None,
    ) -> list[UsageRow]:
        groups = check_usage_groups(by)
        with self._lock:
            records = list(self._exchanges.values())
        totals: dict[tuple[str | None, ...], list[Any]] = {}
        for r in records:
            if (since is not None and r.created_at < since) or (until is not None and r.created_at >= until):
                continue
            values = {"key": r.key_id, "tenant": r.tenant, "model": r.model, "day": _utc_day(r.created_at)}
            total = totals.setdefault(tuple(values[g] for g in groups), [0, 0, 0, 0.0, 0])
            total[0] += 1
            total[1] += r.input_tokens
            total[2] += r.output_tokens
            total[3] += r.cost_usd or 0.0
            total[4] += r.outcome == "error"
        rows = [
            UsageRow(
                requests=requests,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost,
                errors=errors,
                **{("key_id" if g == "key" else g): v for g, v in zip(groups, group, strict=True)},
            )
            for group, (requests, input_tokens, output_tokens, cost, errors) in totals.items()
        ]
        return sort_usage(rows, groups)

    def spend(self, key_id: str, since: float) -> float:
        with self._lock:
            records = list(self._exchanges.values())
        return float(sum(r.cost_usd or 0.0 for r in records if r.key_id == key_id and r.created_at >= since))

    # ------------------------------------------------------------------ virtual keys

    def add_key(self, record: KeyRecord) -> None:
        record = dataclasses.replace(record, models=tuple(record.models))
        with self._lock:
            if record.id in self._keys or record.secret_hash in self._key_ids_by_hash:
                raise ValueError(f"a key with id {record.id!r} or the same secret already exists")
            self._keys[record.id] = record
            self._key_ids_by_hash[record.secret_hash] = record.id

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            return self._keys.get(key_id)

    def find_key(self, secret_hash: str) -> KeyRecord | None:
        with self._lock:
            key_id = self._key_ids_by_hash.get(secret_hash)
            return self._keys[key_id] if key_id is not None else None

    def list_keys(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        with self._lock:
            keys = list(self._keys.values())
        chosen = [
            k
            for k in keys
            if (tenant is None or k.tenant == tenant) and (include_revoked or k.revoked_at is None)
        ]
        return sorted(chosen, key=lambda k: (k.created_at, k.id))

    def revoke_key(self, key_id: str, *, at: float) -> KeyRecord | None:
        with self._lock:
            key = self._keys.get(key_id)
            if key is not None and key.revoked_at is None:
                key = self._keys[key_id] = dataclasses.replace(key, revoked_at=at)
            return key

    def has_keys(self) -> bool:
        with self._lock:
            return bool(self._keys)

    # ------------------------------------------------------------------ evaluation runs

    def write_eval_run(self, run: EvalRun) -> None:
        copy = dataclasses.replace(run, systems=tuple(run.systems), summary=_json_copy(run.summary))
        with self._lock:
            self._eval_runs[run.id] = copy

    def get_eval_run(self, run_id: str) -> EvalRun | None:
        with self._lock:
            run = self._eval_runs.get(run_id)
        return dataclasses.replace(run, summary=_json_copy(run.summary)) if run is not None else None

    def list_eval_runs(self, *, limit: int = 50, suite: str | None = None) -> list[EvalRun]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._lock:
            runs = [r for r in self._eval_runs.values() if suite is None or r.suite == suite]
        runs.sort(key=lambda r: (r.started_at, r.id), reverse=True)
        return [dataclasses.replace(r, summary=_json_copy(r.summary)) for r in runs[:limit]]

    def write_eval_results(self, results: Sequence[EvalResultRecord]) -> None:
        copies = [
            dataclasses.replace(r, scores=_json_copy(r.scores), details=_json_copy(r.details)) for r in results
        ]
        with self._lock:
            for r in copies:
                self._eval_results[(r.run_id, r.example_id, r.system)] = r

    def eval_results(self, run_id: str, *, system: str | None = None) -> list[EvalResultRecord]:
        with self._lock:
            found = [
                r
                for (rid, _, sys_name), r in self._eval_results.items()
                if rid == run_id and (system is None or sys_name == system)
            ]
        found.sort(key=lambda r: (r.system, r.example_id))
        return [dataclasses.replace(r, scores=_json_copy(r.scores), details=_json_copy(r.details)) for r in found]


def _utc_day(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d")


def _fresh_exchange(record: ExchangeRecord) -> ExchangeRecord:
    return dataclasses.replace(
        record, request=_json_copy(record.request), attributes=_json_copy(record.attributes)
    )
