"""The filter grammar: parsing errors, and the SQL compilation agreeing with the Python predicate."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import sqlalchemy as sa

from aiestack.errors import InvalidRequest
from aiestack.stores.filters import OPS, SqlTarget, evaluate, parse_filter, predicate, to_sql

pytestmark = pytest.mark.unit

_VALUES: tuple[Any, ...] = ("en", "de", "fr", "b.md", "", "Ünï", 0, 1, 2, 2.5, -3, True, False)
_FIELDS = ("lang", "year", "flag", "tags", "source", "document_id", "absent")


def _random_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.15:
        return [rng.choice(_VALUES) for _ in range(rng.randint(0, 3))]
    return rng.choice(_VALUES)


def _random_record(rng: random.Random) -> dict[str, Any]:
    metadata = {field: _random_value(rng) for field in ("lang", "year", "flag", "tags") if rng.random() < 0.8}
    return {"source": rng.choice(["a.md", "b.md", "c.txt"]), "document_id": rng.choice(["d1", "d2"]), "metadata": metadata}


def _random_condition(rng: random.Random) -> dict[str, Any]:
    op = rng.choice(OPS)
    value: Any
    if op in ("in", "nin"):
        value = [rng.choice(_VALUES) for _ in range(rng.randint(1, 3))]
    elif op in ("gt", "gte", "lt", "lte", "contains"):
        value = rng.choice([v for v in _VALUES if not isinstance(v, bool)])
    else:
        value = rng.choice(_VALUES)
    return {"field": rng.choice(_FIELDS), "op": op, "value": value}


def _random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 2 or roll < 0.5:
        return _random_condition(rng)
    if roll < 0.7:
        return {"not": _random_filter(rng, depth + 1)}
    return {rng.choice(["and", "or"]): [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


def test_sqlite_sql_agrees_with_the_python_predicate_on_random_filters() -> None:
    rng = random.Random(7)
    records = [_random_record(rng) for _ in range(60)]
    engine = sa.create_engine("sqlite://")
    meta = sa.MetaData()
    table = sa.Table(
        "rows",
        meta,
        sa.Column("key", sa.Integer, primary_key=True),
        sa.Column("source", sa.String),
        sa.Column("document_id", sa.String),
        sa.Column("metadata", sa.JSON),
    )
    meta.create_all(engine)
    target = SqlTarget(
        metadata=table.c.metadata, columns={"source": table.c.source, "document_id": table.c.document_id}, dialect="sqlite"
    )
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"key": i, **r} for i, r in enumerate(records)])
        checked = 0
        for _ in range(400):
            spec = _random_filter(rng)
            test = predicate(spec)
            expected = {
                i for i, r in enumerate(records) if test({**r["metadata"], "source": r["source"], "document_id": r["document_id"]})
            }
            got = set(connection.scalars(sa.select(table.c.key).where(to_sql(spec, target))))
            assert got == expected, json.dumps(spec)
            checked += bool(expected) and len(expected) < len(records)
    assert checked > 100  # most filters select some but not all rows: the comparison is informative


def test_kinds_never_mix() -> None:
    assert evaluate(parse_filter({"field": "n", "op": "eq", "value": 1}), {"n": True}) is False
    assert evaluate(parse_filter({"field": "n", "op": "eq", "value": True}), {"n": 1}) is False
    assert evaluate(parse_filter({"field": "n", "op": "eq", "value": 1}), {"n": 1.0}) is True
    assert evaluate(parse_filter({"field": "n", "op": "gt", "value": 1}), {"n": "2"}) is False
    assert evaluate(parse_filter({"field": "n", "op": "ne", "value": 1}), {}) is True
    assert evaluate(parse_filter({"field": "n", "op": "contains", "value": 1}), {"n": [0, 1]}) is True
    assert evaluate(parse_filter({"field": "n", "op": "contains", "value": "1"}), {"n": [0, 1]}) is False


@pytest.mark.parametrize(
    ("spec", "where", "problem"),
    [
        ({"and": [{"field": "a", "op": "eq", "value": 1}, {"field": "b", "op": "??", "value": 1}]}, "filter.and[1]", "unknown op"),
        ({"not": {"or": [{"field": "a", "op": "in", "value": 3}]}}, "filter.not.or[0]", "non-empty list"),
        ({"field": "a", "op": "eq", "value": float("nan")}, "filter", "finite number"),
        ({"field": 'a"b', "op": "eq", "value": 1}, "filter", "without quotes"),
    ],
)
def test_errors_name_the_place_and_show_the_grammar(spec: dict[str, Any], where: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(spec)
    message = str(caught.value)
    assert f"Invalid filter at {where}:" in message
    assert problem in message
    assert '{"and": [...]}' in message
