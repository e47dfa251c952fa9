"""The on-disk cache of model calls made by evaluations.

Re-running a suite with unchanged inputs must make no model calls: the cache maps a hash of
(model or route name, what that name resolves to now, rendered messages, parameters) to the completion that call produced (text,
usage, timing, cost, logprobs and the id of the exchange that made it, so cached results still
link to their trace). It is a single SQLite file in the data directory, read in batches of keys
(one query for a whole run's lookups) and written in batches, because a cached re-run of
thousands of examples must take seconds, not minutes.

Only successful completions are cached: an error is retried on the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiestack.types import ChatRequest, Completion, Message, Timing, TokenLogprob, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""
#: Keys per ``IN (...)`` query: below SQLite's bound-parameter limit on every version.
_CHUNK = 500


def _plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses and tuples become dicts and lists, mappings become dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def call_key(request: ChatRequest, fingerprint: str = "") -> str:
    """The cache key of a call: sha256 of the model, messages and parameters (canonical JSON).

    ``fingerprint`` is what the model name resolves to (a route's configuration, its prompt and
    collection versions): a change there changes the answer, so it changes the key.
    """
    document = {
        "model": request.model,
        "resolves_to": fingerprint,
        "messages": _plain(request.messages),
        "params": _plain(request.params),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedCall:
    """A stored completion and the exchange that produced it."""

    completion: Completion
    exchange_id: str | None
    contexts: tuple[str, ...] = ()  # the passages the pipeline retrieved, for RAG metrics

    def encode(self) -> str:
        c = self.completion
        return json.dumps(
            {
                "text": c.text,
                "model": c.model,
                "provider": c.provider,
                "finish_reason": c.finish_reason,
                "usage": _plain(c.usage),
                "timing": _plain(c.timing),
                "cost_usd": c.cost_usd,
                "logprobs": [[lp.token, lp.logprob, [list(t) for t in lp.top]] for lp in c.logprobs],
                "exchange_id": self.exchange_id,
                "contexts": list(self.contexts),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def decode(cls, raw: str) -> CachedCall:
        d = json.loads(raw)
        completion = Completion(
            message=Message(role="assistant", content=d["text"]),
            model=d["model"],
            provider=d["provider"],
            finish_reason=d["finish_reason"],
            usage=Usage(**d["usage"]),
            timing=Timing(**d["timing"]),
            cost_usd=d["cost_usd"],
            cached=True,
            logprobs=tuple(
                TokenLogprob(token, logprob, tuple((t, lp) for t, lp in top))
                for token, logprob, top in d["logprobs"]
            ),
        )
        return cls(completion, d["exchange_id"], tuple(d.get("contexts", ())))


class CallCache:
    """A SQLite file of cached calls. Used from one event loop; close it when done."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedCall]:
        """The cached calls among ``keys`` (damaged entries count as misses)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedCall] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, raw in self._db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                try:
                    found[key] = CachedCall.decode(raw)
                except (ValueError, KeyError, TypeError):
                    continue
        return found

    def get(self, key: str) -> CachedCall | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Sequence[tuple[str, CachedCall]]) -> None:
        """Store calls in one transaction (a later call with the same key replaces the earlier)."""
        if not items:
            return
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO calls (key, value, created_at) VALUES (?, ?, ?)",
                [(key, call.encode(), now) for key, call in items],
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        self._db.close()
