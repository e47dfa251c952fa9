"""Feedback, conversation turns and prompts on the SQL store (mixed into :class:`SqlExchangeStore`).

Implements :class:`~aiestack.stores.feedback.FeedbackStore` and
:class:`~aiestack.stores.prompts.PromptStore`; see those protocols for the contracts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from aiestack.stores.feedback import (
    FeedbackGroup,
    FeedbackRate,
    FeedbackRecord,
    FeedbackSource,
    PendingFeedback,
    TurnRecord,
    check_feedback_groups,
    sort_rates,
)
from aiestack.stores.prompts import (
    PROMPT_NAME_ATTR,
    PROMPT_VERSION_ATTR,
    PromptLabel,
    PromptSummary,
    PromptVersion,
)
from aiestack.stores.sql.engine import store_errors, write_transaction
from aiestack.stores.sql.plain import PlainInsert
from aiestack.stores.sql.tables import (
    conversation_turns,
    exchanges,
    feedback,
    pending_feedback,
    prompt_labels,
    prompt_versions,
)

_FEEDBACK_FIELDS = tuple(f.name for f in dataclasses.fields(FeedbackRecord))
_TURN_FIELDS = tuple(f.name for f in dataclasses.fields(TurnRecord))
_IN_CHUNK = 500


def _insert(engine: sa.Engine, table: sa.Table) -> Any:
    return postgresql.insert(table) if engine.dialect.name == "postgresql" else sqlite.insert(table)


def _utc_day(engine: sa.Engine, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    if engine.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", sa.func.to_timestamp(column)), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column, "unixepoch")


class SqlFeedbackMixin:
    """The feedback and prompt methods; the host class provides ``_engine`` and ``_url``."""

    _engine: sa.Engine
    _url: URL
    _turn_insert: PlainInsert | None = None  # built on the first write of turns (SQLite)

    # ------------------------------------------------------------------ feedback

    def write_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        latest = {r.id: r for r in records}
        if not latest:
            return
        rows = [_feedback_row(r) for r in latest.values()]
        insert = _insert(self._engine, feedback)
        statement = insert.on_conflict_do_update(
            index_elements=[feedback.c.id],
            set_={name: insert.excluded[name] for name in _FEEDBACK_FIELDS if name != "id"},
        )
        with store_errors(self._url, "write feedback to"), write_transaction(self._engine) as connection:
            connection.execute(statement, rows)

    def write_pending_feedback(self, items: Sequence[PendingFeedback]) -> None:
        latest = {i.id: i for i in items}
        if not latest:
            return
        rows = [{**dataclasses.asdict(i), "body": dict(i.body)} for i in latest.values()]
        insert = _insert(self._engine, pending_feedback)
        statement = insert.on_conflict_do_update(
            index_elements=[pending_feedback.c.id],
            set_={name: insert.excluded[name] for name in rows[0] if name != "id"},
        )
        with store_errors(self._url, "write pending feedback to"), write_transaction(self._engine) as connection:
            connection.execute(statement, rows)

    def list_pending_feedback(self, *, limit: int = 1000) -> list[PendingFeedback]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        c = pending_feedback.c
        query = sa.select(pending_feedback).order_by(c.created_at, c.id).limit(limit)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [PendingFeedback(**{**dict(row), "body": row["body"] or {}}) for row in rows]

    def settle_pending_feedback(self, records: Sequence[FeedbackRecord], drop: Sequence[str]) -> None:
        latest = {r.id: r for r in records}
        done = sorted({*latest, *drop})
        if not done:
            return
        with store_errors(self._url, "settle pending feedback in"), write_transaction(self._engine) as connection:
            if latest:
                insert = _insert(self._engine, feedback)
                connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=[feedback.c.id],
                        set_={name: insert.excluded[name] for name in _FEEDBACK_FIELDS if name != "id"},
                    ),
                    [_feedback_row(r) for r in latest.values()],
                )
            for start in range(0, len(done), _IN_CHUNK):
                chunk = done[start : start + _IN_CHUNK]
                connection.execute(sa.delete(pending_feedback).where(pending_feedback.c.id.in_(chunk)))

    def get_feedback(self, feedback_id: str) -> FeedbackRecord | None:
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(sa.select(feedback).where(feedback.c.id == feedback_id)).mappings().first()
        return _feedback_record(row) if row is not None else None

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
        c = feedback.c
        query = sa.select(feedback)
        conditions: list[tuple[Any, sa.ColumnElement[Any]]] = [
            (exchange_id, c.exchange_id),
            (tenant, c.tenant),
            (route, c.route),
            (prompt, c.prompt),
            (prompt_version, c.prompt_version),
            (source, c.source),
            (kind, c.kind),
        ]
        for value, column in conditions:
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            query = query.where(c.created_at < before)
        if since is not None:
            query = query.where(c.created_at >= since)
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_feedback_record(row) for row in rows]

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
        c = feedback.c
        columns = {
            g: (_utc_day(self._engine, c.created_at) if g == "day" else c[g]).label(f"g_{g}") for g in groups
        }
        query = sa.select(*columns.values(), *_rate_columns())
        if since is not None:
            query = query.where(c.created_at >= since)
        if until is not None:
            query = query.where(c.created_at < until)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        if source is not None:
            query = query.where(c.source == source)
        if columns:
            query = query.group_by(*columns.values())
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        rates = [_rate(row, {g: row[f"g_{g}"] for g in groups}) for row in rows if row["count"]]
        return sort_rates(rates, groups)

    def feedback_counts(self, exchange_ids: Sequence[str]) -> dict[str, FeedbackRate]:
        wanted = list(dict.fromkeys(exchange_ids))
        out: dict[str, FeedbackRate] = {}
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                query = (
                    sa.select(feedback.c.exchange_id, *_rate_columns())
                    .where(feedback.c.exchange_id.in_(chunk))
                    .group_by(feedback.c.exchange_id)
                )
                for row in connection.execute(query).mappings():
                    out[row["exchange_id"]] = _rate(row, {})
        return out

    # ------------------------------------------------------------------ conversation turns

    def write_turns(self, turns: Sequence[TurnRecord]) -> None:
        latest = {t.exchange_id: t for t in turns}
        if not latest:
            return
        # One turn a chat answer, written by the implicit-feedback thread: on SQLite the upsert is
        # compiled once and run with plain tuples (see PlainInsert), elsewhere through SQLAlchemy.
        if self._engine.dialect.name == "sqlite":
            if self._turn_insert is None:
                self._turn_insert = PlainInsert(self._engine, self._turn_upsert(), conversation_turns)
            rows: list[Any] = [self._turn_insert.row(t) for t in latest.values()]
            with store_errors(self._url, "write conversation turns to"), write_transaction(self._engine) as connection:
                connection.exec_driver_sql(self._turn_insert.sql, rows)
            return
        rows = [{name: getattr(t, name) for name in _TURN_FIELDS} for t in latest.values()]
        with store_errors(self._url, "write conversation turns to"), write_transaction(self._engine) as connection:
            connection.execute(self._turn_upsert(), rows)

    def _turn_upsert(self) -> Any:
        insert = _insert(self._engine, conversation_turns)
        return insert.on_conflict_do_update(
            index_elements=[conversation_turns.c.exchange_id],
            set_={name: insert.excluded[name] for name in _TURN_FIELDS if name != "exchange_id"},
        )

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
        c = conversation_turns.c
        query = sa.select(conversation_turns)
        if conversation is not None:
            query = query.where(c.conversation == conversation)
        if turn is not None:
            query = query.where(c.turn == turn)
        if since is not None:
            query = query.where(c.created_at >= since)
        query = query.order_by(c.created_at.desc(), c.exchange_id.desc()).limit(limit)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [TurnRecord(**row) for row in rows]

    def prune_turns(self, before: float) -> int:
        statement = sa.delete(conversation_turns).where(conversation_turns.c.created_at < before)
        with store_errors(self._url, "prune conversation turns in"), write_transaction(self._engine) as connection:
            return int(connection.execute(statement).rowcount or 0)

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
        for _ in range(5):  # a concurrent push took the number: read the newest again and retry
            latest = self.get_prompt(name)
            if latest is not None and latest.content_hash == content_hash:
                return latest, False
            version = PromptVersion(
                name=name,
                version=(latest.version if latest is not None else 0) + 1,
                template=template,
                content_hash=content_hash,
                created_at=created_at,
                variables=tuple(variables),
                message=message,
                metadata=dict(metadata or {}),
            )
            row = {
                "name": name,
                "version": version.version,
                "template": template,
                "content_hash": content_hash,
                "created_at": created_at,
                "variables": list(version.variables),
                "message": message,
                "metadata": dict(version.metadata),
            }
            try:
                with store_errors(self._url, "write a prompt to"), write_transaction(self._engine) as connection:
                    connection.execute(sa.insert(prompt_versions), row)
            except sa.exc.IntegrityError:
                continue
            return version, True
        raise RuntimeError(f"could not number a new version of prompt {name!r}: too many concurrent pushes")

    def get_prompt(self, name: str, version: int | None = None) -> PromptVersion | None:
        c = prompt_versions.c
        query = sa.select(prompt_versions).where(c.name == name)
        query = query.where(c.version == version) if version is not None else query.order_by(c.version.desc())
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(query.limit(1)).mappings().first()
        return _prompt_version(row) if row is not None else None

    def prompt_versions(self, name: str) -> list[PromptVersion]:
        c = prompt_versions.c
        query = sa.select(prompt_versions).where(c.name == name).order_by(c.version)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_prompt_version(row) for row in rows]

    def list_prompts(self) -> list[PromptSummary]:
        c = prompt_versions.c
        query = sa.select(
            c.name,
            sa.func.max(c.version).label("latest"),
            sa.func.min(c.created_at).label("created_at"),
            sa.func.max(c.created_at).label("updated_at"),
        ).group_by(c.name)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            labels: dict[str, dict[str, int]] = {}
            for name, label, version in connection.execute(
                sa.select(prompt_labels.c.name, prompt_labels.c.label, prompt_labels.c.version)
            ):
                labels.setdefault(name, {})[label] = version
        summaries = [
            PromptSummary(
                name=row["name"],
                latest_version=int(row["latest"]),
                created_at=float(row["created_at"]),
                updated_at=float(row["updated_at"]),
                labels=dict(sorted(labels.get(row["name"], {}).items())),
            )
            for row in rows
        ]
        return sorted(summaries, key=lambda s: s.name)

    def set_label(self, name: str, label: str, version: int, *, at: float) -> PromptLabel:
        if self.get_prompt(name, version) is None:
            raise KeyError(f"prompt {name!r} has no version {version}")
        row = {"name": name, "label": label, "version": version, "updated_at": at}
        insert = _insert(self._engine, prompt_labels)
        statement = insert.on_conflict_do_update(
            index_elements=[prompt_labels.c.name, prompt_labels.c.label],
            set_={"version": insert.excluded.version, "updated_at": insert.excluded.updated_at},
        )
        with store_errors(self._url, "write a prompt label to"), write_transaction(self._engine) as connection:
            connection.execute(statement, row)
        return PromptLabel(name=name, label=label, version=version, updated_at=at)

    def prompt_labels(self, name: str) -> list[PromptLabel]:
        c = prompt_labels.c
        query = sa.select(prompt_labels).where(c.name == name).order_by(c.label)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [PromptLabel(**row) for row in rows]

    def resolve_label(self, name: str, label: str) -> PromptVersion | None:
        if label == "latest":
            return self.get_prompt(name)
        pv, pl = prompt_versions.c, prompt_labels.c
        query = (
            sa.select(prompt_versions)
            .join(prompt_labels, sa.and_(pl.name == pv.name, pl.version == pv.version))
            .where(pl.name == name, pl.label == label)
        )
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _prompt_version(row) if row is not None else None

    def prompt_usage(self, name: str, *, since: float | None = None) -> dict[int, int]:
        return self._prompt_usage(name, since).get(name, {})

    def prompt_usage_all(self, *, since: float | None = None) -> dict[str, dict[int, int]]:
        return self._prompt_usage(None, since)

    def _prompt_usage(self, name: str | None, since: float | None) -> dict[str, dict[int, int]]:
        attrs = exchanges.c.attributes
        prompt = attrs[PROMPT_NAME_ATTR].as_string()
        version = attrs[PROMPT_VERSION_ATTR].as_integer()
        query = sa.select(prompt.label("prompt"), version.label("version"), sa.func.count().label("n"))
        query = query.where(prompt == name) if name is not None else query.where(prompt.is_not(None))
        if since is not None:
            query = query.where(exchanges.c.created_at >= since)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query.group_by(prompt, version)).all()
        usage: dict[str, dict[int, int]] = {}
        for p, v, n in rows:
            if p is not None and v is not None:
                usage.setdefault(str(p), {})[int(v)] = int(n)
        return usage


def _rate_columns() -> list[sa.ColumnElement[Any]]:
    c = feedback.c
    return [
        sa.func.count().label("count"),
        sa.func.coalesce(sa.func.sum(sa.case((c.value >= 0.5, 1), else_=0)), 0).label("positive"),
        sa.func.coalesce(sa.func.sum(sa.case((c.value < 0.5, 1), else_=0)), 0).label("negative"),
        sa.func.avg(c.value).label("mean_value"),
        sa.func.coalesce(sa.func.sum(sa.case((c.correction.is_not(None), 1), else_=0)), 0).label("corrections"),
        sa.func.coalesce(sa.func.sum(sa.case((c.source == "implicit", 1), else_=0)), 0).label("implicit"),
    ]


def _rate(row: sa.RowMapping, groups: Mapping[str, Any]) -> FeedbackRate:
    mean = row["mean_value"]
    group_fields: dict[str, Any] = {g: (int(v) if g == "prompt_version" and v is not None else v) for g, v in groups.items()}
    return FeedbackRate(
        count=int(row["count"]),
        positive=int(row["positive"]),
        negative=int(row["negative"]),
        mean_value=float(mean) if mean is not None else None,
        corrections=int(row["corrections"]),
        implicit=int(row["implicit"]),
        **group_fields,
    )


def _feedback_row(record: FeedbackRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _FEEDBACK_FIELDS}
    row["tags"] = list(record.tags)
    row["detail"] = dict(record.detail)
    return row


def _feedback_record(row: sa.RowMapping) -> FeedbackRecord:
    values = dict(row)
    values["tags"] = tuple(values["tags"] or ())
    values["detail"] = values["detail"] or {}
    return FeedbackRecord(**values)


def _prompt_version(row: sa.RowMapping) -> PromptVersion:
    values = dict(row)
    values["variables"] = tuple(values["variables"] or ())
    values["metadata"] = values["metadata"] or {}
    return PromptVersion(**values)
