"""Feedback, conversation turns and prompts in memory (mixed into :class:`MemoryExchangeStore`).

Behaves like the SQL implementation (:mod:`aiestack.stores.feedback_sql`) wherever a caller could
tell: both pass the same conformance tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import (
    FeedbackGroup,
    FeedbackRate,
    FeedbackRecord,
    FeedbackSource,
    PendingFeedback,
    TurnRecord,
    check_feedback_groups,
    rate_from_values,
    sort_rates,
)
from aiestack.stores.prompts import (
    PROMPT_NAME_ATTR,
    PROMPT_VERSION_ATTR,
    PromptLabel,
    PromptSummary,
    PromptVersion,
)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


class MemoryFeedbackMixin:
    """The feedback and prompt methods; the host calls :meth:`_init_feedback` in its ``__init__``."""

    _lock: threading.Lock
    _exchanges: dict[str, ExchangeRecord]

    def _init_feedback(self) -> None:
        self._feedback: dict[str, FeedbackRecord] = {}
        self._turns: dict[str, TurnRecord] = {}
        self._pending: dict[str, PendingFeedback] = {}
        self._prompts: dict[str, list[PromptVersion]] = {}
        self._labels: dict[tuple[str, str], PromptLabel] = {}

    # ------------------------------------------------------------------ feedback

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        copies = [
            dataclasses.replace(r, tags=tuple(_json(list(r.tags))), detail=_json(dict(r.detail))) for r in records
        ]
        with self._lock:
            for r in copies:
                self._feedback[r.id] = r

    def write_pending_feedback(self, items: Sequence[PendingFeedback]) -> None:
        copies = [dataclasses.replace(i, body=_json(dict(i.body))) for i in items]
        with self._lock:
            for i in copies:
                self._pending[i.id] = i

    def list_pending_feedback(self, *, limit: int = 1000) -> list[PendingFeedback]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._lock:
            items = sorted(self._pending.values(), key=lambda i: (i.created_at, i.id))[:limit]
        return [dataclasses.replace(i, body=_json(dict(i.body))) for i in items]

    def settle_pending_feedback(self, records: Sequence[FeedbackRecord], drop: Sequence[str]) -> None:
        copies = [
            dataclasses.replace(r, tags=tuple(_json(list(r.tags))), detail=_json(dict(r.detail))) for r in records
        ]
        with self._lock:
            for r in copies:
                self._feedback[r.id] = r
            for done in (*(r.id for r in copies), *drop):
                self._pending.pop(done, None)

    def get_feedback(self, feedback_id: str) -> FeedbackRecord | None:
        with self._lock:
            record = self._feedback.get(feedback_id)
        return dataclasses.replace(record, detail=_json(dict(record.detail))) if record is not None else None

    def list_feedback(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        exchange_id: str | None = None,
        tenant: str | None = None,
        route: str | None = None,
        prompt: str | None = None,
        prompt_version: int | None = None,
        source: FeedbackSource | None = None,
        kind: str | None = None,
        since: float | None = None,
    ) -> list[FeedbackRecord]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        wanted = {
            "exchange_id": exchange_id,
            "tenant": tenant,
            "route": route,
            "prompt": prompt,
            "prompt_version": prompt_version,
            "source": source,
            "kind": kind,
        }
        with self._lock:
            records = list(self._feedback.values())
        chosen = [
            r
            for r in records
            if all(v is None or getattr(r, k) == v for k, v in wanted.items())
            and (before is None or r.created_at < before)
            and (since is None or r.created_at >= since)
        ]
        chosen.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return [dataclasses.replace(r, detail=_json(dict(r.detail))) for r in chosen[:limit]]

    def feedback_summary(
        self,
        *,
        by: Sequence[FeedbackGroup] = ("route",),
        since: float | None = None,
        until: float | None = None,
        tenant: str | None = None,
        source: FeedbackSource | None = None,
    ) -> list[FeedbackRate]:
        groups = check_feedback_groups(by)
        with self._lock:
            records = list(self._feedback.values())
        buckets: dict[tuple[Any, ...], list[tuple[float | None, bool, bool]]] = {}
        for r in records:
            if (since is not None and r.created_at < since) or (until is not None and r.created_at >= until):
                continue
            if (tenant is not None and r.tenant != tenant) or (source is not None and r.source != source):
                continue
            key = tuple(_group_value(r, g) for g in groups)
            buckets.setdefault(key, []).append((r.value, r.correction is not None, r.source == "implicit"))
        rates = [
            rate_from_values(values, **dict(zip(groups, key, strict=True))) for key, values in buckets.items()
        ]
        return sort_rates(rates, groups)

    def feedback_counts(self, exchange_ids: Sequence[str]) -> dict[str, FeedbackRate]:
        wanted = set(exchange_ids)
        with self._lock:
            records = [r for r in self._feedback.values() if r.exchange_id in wanted]
        buckets: dict[str, list[tuple[float | None, bool, bool]]] = {}
        for r in records:
            buckets.setdefault(r.exchange_id, []).append((r.value, r.correction is not None, r.source == "implicit"))
        return {exchange_id: rate_from_values(values) for exchange_id, values in buckets.items()}

    # ------------------------------------------------------------------ conversation turns

    def write_turns(self, turns: Sequence[TurnRecord]) -> None:
        with self._lock:
            for t in turns:
                self._turns[t.exchange_id] = t

    def find_turns(
        self,
        *,
        conversation: str | None = None,
        turn: str | None = None,
        since: float | None = None,
        limit: int = 10,
    ) -> list[TurnRecord]:
        if conversation is None and turn is None:
            raise ValueError("find_turns() needs a conversation or a turn hash")
        with self._lock:
            turns = list(self._turns.values())
        chosen = [
            t
            for t in turns
            if (conversation is None or t.conversation == conversation)
            and (turn is None or t.turn == turn)
            and (since is None or t.created_at >= since)
        ]
        chosen.sort(key=lambda t: (t.created_at, t.exchange_id), reverse=True)
        return chosen[:limit]

    def prune_turns(self, before: float) -> int:
        with self._lock:
            old = [k for k, t in self._turns.items() if t.created_at < before]
            for k in old:
                del self._turns[k]
        return len(old)

    # ------------------------------------------------------------------ prompts

    def push_prompt(
        self,
        name: str,
        template: str,
        *,
        variables: Sequence[str] = (),
        created_at: float,
        message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[PromptVersion, bool]:
        content_hash = hashlib.sha256(template.encode()).hexdigest()
        with self._lock:
            versions = self._prompts.setdefault(name, [])
            if versions and versions[-1].content_hash == content_hash:
                return versions[-1], False
            version = PromptVersion(
                name=name,
                version=len(versions) + 1,
                template=template,
                content_hash=content_hash,
                created_at=created_at,
                variables=tuple(variables),
                message=message,
                metadata=_json(dict(metadata or {})),
            )
            versions.append(version)
        return version, True

    def get_prompt(self, name: str, version: int | None = None) -> PromptVersion | None:
        with self._lock:
            versions = list(self._prompts.get(name, ()))
        if not versions:
            return None
        if version is None:
            return versions[-1]
        return versions[version - 1] if 1 <= version <= len(versions) else None

    def prompt_versions(self, name: str) -> list[PromptVersion]:
        with self._lock:
            return list(self._prompts.get(name, ()))

    def list_prompts(self) -> list[PromptSummary]:
        with self._lock:
            prompts = {name: list(v) for name, v in self._prompts.items() if v}
            labels = list(self._labels.values())
        return [
            PromptSummary(
                name=name,
                latest_version=versions[-1].version,
                created_at=versions[0].created_at,
                updated_at=max(v.created_at for v in versions),
                labels={lb.label: lb.version for lb in sorted(labels, key=lambda x: x.label) if lb.name == name},
            )
            for name, versions in sorted(prompts.items())
        ]

    def set_label(self, name: str, label: str, version: int, *, at: float) -> PromptLabel:
        if self.get_prompt(name, version) is None:
            raise KeyError(f"prompt {name!r} has no version {version}")
        record = PromptLabel(name=name, label=label, version=version, updated_at=at)
        with self._lock:
            self._labels[name, label] = record
        return record

    def prompt_labels(self, name: str) -> list[PromptLabel]:
        with self._lock:
            labels = [lb for (n, _), lb in self._labels.items() if n == name]
        return sorted(labels, key=lambda lb: lb.label)

    def resolve_label(self, name: str, label: str) -> PromptVersion | None:
        if label == "latest":
            return self.get_prompt(name)
        with self._lock:
            record = self._labels.get((name, label))
        return self.get_prompt(name, record.version) if record is not None else None

    def prompt_usage(self, name: str, *, since: float | None = None) -> dict[int, int]:
        return self.prompt_usage_all(since=since).get(name, {})

    def prompt_usage_all(self, *, since: float | None = None) -> dict[str, dict[int, int]]:
        with self._lock:
            records = list(self._exchanges.values())
        usage: dict[str, dict[int, int]] = {}
        for r in records:
            name = r.attributes.get(PROMPT_NAME_ATTR)
            version = r.attributes.get(PROMPT_VERSION_ATTR)
            if not isinstance(name, str) or not isinstance(version, int) or (since is not None and r.created_at < since):
                continue
            counts = usage.setdefault(name, {})
            counts[version] = counts.get(version, 0) + 1
        return usage


def _group_value(record: FeedbackRecord, group: FeedbackGroup) -> Any:
    if group == "day":
        return dt.datetime.fromtimestamp(record.created_at, tz=dt.UTC).strftime("%Y-%m-%d")
    return getattr(record, group)
