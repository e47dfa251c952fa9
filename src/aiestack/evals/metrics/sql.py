"""Text-to-SQL by execution: the produced query and the reference query run against the same database.

Two queries are equivalent for this metric when they return the same rows (as a multiset; in order
with ``ordered: true``, for questions that ask for a ranking). Comparing results rather than SQL
text accepts every correct formulation (aliases, join order, ``IN`` vs a join) and rejects a query
that parses but answers another question.

The database is a SQLite file (opened read-only) or a ``.sql`` script (run once into an in-memory
database), given by the ``database`` option relative to the suite file. Whatever the model wrote, it
can only read: the connection is ``query_only``, an authorizer refuses every action but reading
(no ``ATTACH``, no writes, no ``PRAGMA``), one statement is run per answer, a query is stopped after
``timeout_s`` and at most ``max_rows`` rows are fetched. The queries run on a worker thread, never on
the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from aiestack.errors import ConfigError
from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import ReferenceOptions, reference_texts
from aiestack.evals.metrics.structured import strip_fences

#: What a query may do: read tables and call functions (authorizer action codes).
_ALLOWED = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})


class SqlOptions(ReferenceOptions):
    """``database``: a SQLite file or a ``.sql`` script, relative to the suite file."""

    database: str = Field(min_length=1)
    ordered: bool = False
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    max_rows: int = Field(default=10_000, ge=1, le=1_000_000)


class _Database:
    """One read-only connection, used by one query at a time (a lock; sqlite3 objects are not thread-safe)."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        if path.suffix == ".sql":
            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.executescript(path.read_text(encoding="utf-8"))
        else:
            db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        db.execute("PRAGMA query_only = ON")
        db.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY)
        self._db = db
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def rows(self, query: str, max_rows: int) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement; raises ``sqlite3.Error`` (or ValueError: too many rows)."""
        with self._lock:
            deadline = time.monotonic() + self._timeout_s
            self._db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                cursor = self._db.execute(query)
                rows = cursor.fetchmany(max_rows + 1)
            finally:
                self._db.set_progress_handler(None, 0)
        if len(rows) > max_rows:
            raise ValueError(f"more than {max_rows} rows")
        return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


class SqlExecution:
    """1.0 when the output's SQL returns the same rows as the reference SQL on the suite's database."""

    higher_is_better = True

    def __init__(self, name: str, opts: SqlOptions, base_dir: Path) -> None:
        self.name = name
        self._opts = opts
        path = Path(opts.database).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ConfigError(
                f"metrics.{name}.database", f"{path} does not exist", "give a SQLite file or a .sql script"
            )
        try:
            self._db = _Database(path, opts.timeout_s)
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"metrics.{name}.database", f"{path} cannot be opened: {exc}", "give a SQLite file or a .sql script"
            ) from None

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._opts.reference_key)
        if not refs:
            return Score(None, error="the example has no reference SQL")
        try:
            gold = await asyncio.to_thread(self._db.rows, refs[0], self._opts.max_rows)
        except (sqlite3.Error, ValueError) as exc:
            return Score(None, error=f"the reference SQL fails: {exc}")
        query = _statement(sample.output)
        try:
            got = await asyncio.to_thread(self._db.rows, query, self._opts.max_rows)
        except (sqlite3.Error, ValueError) as exc:
            return Score(0.0, {"reason": f"the query fails: {exc}", "query": query[:500]})
        same = got == gold if self._opts.ordered else Counter(got) == Counter(gold)
        detail: dict[str, Any] = {"rows": len(got), "reference_rows": len(gold)}
        if not same:
            detail["reason"] = "different rows" + (" or order" if self._opts.ordered else "")
            detail["query"] = query[:500]
        return Score(float(same), detail)


def _statement(output: str) -> str:
    """The SQL of an answer: inside a code fence if there is one, without a trailing semicolon."""
    text = strip_fences(output)
    if "```" in text:  # prose around a fenced block
        text = strip_fences(text[text.index("```") :].split("```", 2)[1].removeprefix("sql"))
    return text.strip().rstrip(";").strip()
