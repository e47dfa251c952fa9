"""The portable metadata filter grammar: parsed once, compiled to a Python predicate or to SQL.

A filter is a condition ``{"field": "lang", "op": "eq", "value": "en"}`` or a combination
``{"and": [f, ...]}``, ``{"or": [f, ...]}``, ``{"not": f}``. ``field`` names a key of the chunk
metadata; ``source`` and ``document_id`` always exist (they come from the document, not from the
metadata). Values are strings, numbers or booleans.

The semantics are the same on every backend (the conformance tests pin them):

- ``eq``/``ne``: equal / not equal. A field compares equal only to a value of the same kind
  (``1`` never equals ``"1"``, ``True`` never equals ``1``). ``ne`` is ``not eq``: it matches
  chunks without the field.
- ``gt``/``gte``/``lt``/``lte``: order comparisons between numbers, or between strings (by code
  point); a field of another kind, or a missing field, never matches.
- ``in``/``nin``: ``value`` is a non-empty list; ``nin`` is ``not in`` (it matches a missing field).
- ``contains``: the field is a list holding ``value``, or a string holding ``value`` (a string)
  as a substring.
- ``not`` negates exactly: every condition is true or false, never unknown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from aiestack.errors import InvalidRequest

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains"]
OPS: tuple[str, ...] = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains")
#: Fields every chunk has, whatever its metadata: they come from its document.
BUILTIN_FIELDS: tuple[str, ...] = ("source", "document_id")

Scalar = str | int | float | bool
_FIELD_RE = re.compile(r'^[^"\\\x00-\x1f]{1,200}$')
_HINT = (
    'Write a condition as {"field": "lang", "op": "eq", "value": "en"} (ops: '
    + ", ".join(OPS)
    + '), and combine conditions with {"and": [...]}, {"or": [...]} or {"not": {...}}.'
)


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Node = Condition | And | Or | Not


def parse_filter(spec: Mapping[str, Any]) -> Node:
    """The filter as a tree; raises :class:`InvalidRequest` saying what is wrong and where."""
    return _parse(spec, "filter")


def _bad(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid filter at {path}: {problem}.", hint=_HINT)


def _parse(spec: Any, path: str) -> Node:
    if not isinstance(spec, Mapping):
        raise _bad(path, f"expected an object, got {type(spec).__name__}")
    keys = set(spec)
    for combinator in ("and", "or"):
        if combinator in keys:
            if keys != {combinator}:
                raise _bad(path, f"'{combinator}' must be the only key, got {sorted(keys)}")
            items = spec[combinator]
            if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
                raise _bad(path, f"'{combinator}' needs a non-empty list of filters")
            children = tuple(_parse(item, f"{path}.{combinator}[{i}]") for i, item in enumerate(items))
            return And(children) if combinator == "and" else Or(children)
    if "not" in keys:
        if keys != {"not"}:
            raise _bad(path, f"'not' must be the only key, got {sorted(keys)}")
        return Not(_parse(spec["not"], f"{path}.not"))
    if keys != {"field", "op", "value"}:
        missing = sorted({"field", "op", "value"} - keys)
        extra = sorted(keys - {"field", "op", "value"})
        problem = f"a condition has exactly the keys field, op and value (missing {missing}, unexpected {extra})"
        raise _bad(path, problem)
    field, op, value = spec["field"], spec["op"], spec["value"]
    if not isinstance(field, str) or not _FIELD_RE.match(field):
        raise _bad(path, f"field must be a non-empty name without quotes or backslashes, got {field!r}")
    if op not in OPS:
        raise _bad(path, f"unknown op {op!r}; use one of {', '.join(OPS)}")
    if op in ("in", "nin"):
        if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
            raise _bad(path, f"'{op}' needs a non-empty list of values, got {value!r}")
        return Condition(field, op, tuple(_scalar(v, path) for v in value))
    scalar = _scalar(value, path)
    if op in ("gt", "gte", "lt", "lte") and isinstance(scalar, bool):
        raise _bad(path, f"'{op}' compares numbers or strings, not booleans")
    if op == "contains" and isinstance(scalar, bool):
        raise _bad(path, "'contains' needs a string or a number")
    return Condition(field, op, scalar)


def _scalar(value: Any, path: str) -> Scalar:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _bad(path, f"value must be a finite number, got {value!r}")
        return value
    raise _bad(path, f"a value must be a string, number or boolean, got {type(value).__name__} {value!r}")


# --------------------------------------------------------------------------- Python predicate


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    return "other"


def _equal(left: Any, right: Scalar) -> bool:
    return _kind(left) == _kind(right) and left == right


def _holds(fields: Mapping[str, Any], cond: Condition) -> bool:
    present = cond.field in fields
    left: Any = fields.get(cond.field)
    op = cond.op
    value: Any = cond.value
    if op == "eq":
        return present and _equal(left, value)
    if op == "ne":
        return not (present and _equal(left, value))
    if op == "in":
        return present and any(_equal(left, v) for v in value)
    if op == "nin":
        return not (present and any(_equal(left, v) for v in value))
    if op == "contains":
        if isinstance(left, list | tuple):
            return any(_equal(item, value) for item in left)
        return isinstance(left, str) and isinstance(value, str) and value in left
    if not present or _kind(left) != _kind(value) or _kind(left) not in ("number", "string"):
        return False
    if op == "gt":
        return bool(left > value)
    if op == "gte":
        return bool(left >= value)
    if op == "lt":
        return bool(left < value)
    return bool(left <= value)


def evaluate(node: Node, fields: Mapping[str, Any]) -> bool:
    """Whether a chunk with these fields (metadata plus source and document_id) matches."""
    if isinstance(node, Condition):
        return _holds(fields, node)
    if isinstance(node, And):
        return all(evaluate(child, fields) for child in node.children)
    if isinstance(node, Or):
        return any(evaluate(child, fields) for child in node.children)
    return not evaluate(node.child, fields)


def predicate(spec: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """Parse ``spec`` once and return a function telling whether a chunk's fields match."""
    node = parse_filter(spec)
    return lambda fields: evaluate(node, fields)


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True, slots=True)
class SqlTarget:
    """Where the compiled SQL reads fields from: a JSON metadata column plus plain columns."""

    metadata: ColumnElement[Any]
    columns: Mapping[str, ColumnElement[Any]]
    dialect: Literal["sqlite", "postgresql"]


def to_sql(spec: Mapping[str, Any], target: SqlTarget) -> ColumnElement[bool]:
    """Parse ``spec`` and compile it to a boolean SQL expression (never NULL) on ``target``."""
    return node_to_sql(parse_filter(spec), target)


def node_to_sql(node: Node, target: SqlTarget) -> ColumnElement[bool]:
    if isinstance(node, And):
        return sa.and_(*(node_to_sql(child, target) for child in node.children))
    if isinstance(node, Or):
        return sa.or_(*(node_to_sql(child, target) for child in node.children))
    if isinstance(node, Not):
        return sa.not_(node_to_sql(node.child, target))
    return sa.func.coalesce(_condition(node, target), sa.false())


def _condition(cond: Condition, target: SqlTarget) -> ColumnElement[bool]:
    if cond.field in target.columns:
        return _column_condition(cond, target.columns[cond.field], target.dialect)
    if target.dialect == "sqlite":
        return _sqlite_condition(cond, target.metadata)
    return _pg_condition(cond, target.metadata)


def _column_condition(cond: Condition, column: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    """Built-in fields are strings: values of another kind never match."""
    op, value = cond.op, cond.value
    values = value if isinstance(value, tuple) else (value,)
    strings = [v for v in values if isinstance(v, str)]
    if op in ("eq", "in"):
        return column.in_(strings) if strings else sa.false()
    if op in ("ne", "nin"):
        return sa.not_(column.in_(strings)) if strings else sa.true()
    if not strings:
        return sa.false()
    text = strings[0]
    if op == "contains":
        return (sa.func.instr if dialect == "sqlite" else sa.func.strpos)(column, text) > 0
    return _compare(column if dialect == "sqlite" else column.collate("C"), op, sa.literal(text))


def _compare(left: ColumnElement[Any], op: str, right: ColumnElement[Any]) -> ColumnElement[bool]:
    if op == "gt":
        return left > right
    if op == "gte":
        return left >= right
    if op == "lt":
        return left < right
    return left <= right


def _sqlite_kinds(value: Scalar) -> tuple[str, ...]:
    if isinstance(value, bool):
        return ("true",) if value else ("false",)
    if isinstance(value, int | float):
        return ("integer", "real")
    return ("text",)


def _sqlite_condition(cond: Condition, metadata: ColumnElement[Any]) -> ColumnElement[bool]:
    path = sa.literal(f'$."{cond.field}"')
    kind = sa.func.json_type(metadata, path)
    extracted = sa.func.json_extract(metadata, path)
    op, value = cond.op, cond.value

    def equal(v: Scalar) -> ColumnElement[bool]:
        if isinstance(v, bool):
            return kind == ("true" if v else "false")
        return sa.and_(kind.in_(_sqlite_kinds(v)), extracted == sa.literal(v))

    if op in ("eq", "ne", "in", "nin"):
        values = value if isinstance(value, tuple) else (value,)
        matched = sa.or_(*(sa.func.coalesce(equal(v), sa.false()) for v in values))
        return sa.not_(matched) if op in ("ne", "nin") else matched
    assert not isinstance(value, tuple)
    if op == "contains":
        each = sa.func.json_each(metadata, path).table_valued("value", "type")
        element = sa.exists(
            sa.select(sa.literal(1))
            .select_from(each)
            .where(each.c.type.in_(_sqlite_kinds(value)), each.c.value == sa.literal(value))
        )
        in_list = sa.and_(kind == "array", element)
        if isinstance(value, str):
            return sa.or_(in_list, sa.and_(kind == "text", sa.func.instr(extracted, value) > 0))
        return in_list
    return sa.and_(kind.in_(_sqlite_kinds(value)), _compare(extracted, op, sa.literal(value)))


def _pg_condition(cond: Condition, metadata: ColumnElement[Any]) -> ColumnElement[bool]:
    from sqlalchemy.dialects import postgresql

    element = metadata.op("->")(sa.literal(cond.field, sa.Text))
    kind = sa.func.jsonb_typeof(element)
    op, value = cond.op, cond.value

    def as_jsonb(v: Scalar) -> ColumnElement[Any]:
        return sa.cast(sa.literal(v, sa.JSON), postgresql.JSONB)

    def equal(v: Scalar) -> ColumnElement[bool]:
        return element == as_jsonb(v)

    if op in ("eq", "ne", "in", "nin"):
        values = value if isinstance(value, tuple) else (value,)
        matched = sa.or_(*(sa.func.coalesce(equal(v), sa.false()) for v in values))
        return sa.not_(matched) if op in ("ne", "nin") else matched
    assert not isinstance(value, tuple)
    if op == "contains":
        in_list = sa.and_(kind == "array", element.op("@>")(as_jsonb(value)))
        if isinstance(value, str):
            text = metadata.op("->>", return_type=sa.Text)(sa.literal(cond.field, sa.Text))
            return sa.or_(in_list, sa.and_(kind == "string", sa.func.strpos(text, value) > 0))
        return in_list
    if isinstance(value, str):
        text = metadata.op("->>", return_type=sa.Text)(sa.literal(cond.field, sa.Text))
        return sa.and_(kind == "string", _compare(text.collate("C"), op, sa.literal(value)))
    number = sa.cast(metadata.op("->>", return_type=sa.Text)(sa.literal(cond.field, sa.Text)), sa.Double)
    return sa.and_(kind == "number", _compare(sa.case((kind == "number", number)), op, sa.literal(value)))
