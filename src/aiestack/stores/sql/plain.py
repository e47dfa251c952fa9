"""One INSERT compiled once for SQLite, run with plain tuples: the background writers' fast path.

SQLAlchemy's per-row work in ``executemany`` (parameter dicts, bind processors, statement cache
lookups) costs several times what SQLite itself does, and the writer threads hold the GIL the
server's event loop needs. The stores use this on SQLite for their per-request rows (exchanges,
spans, conversation turns).

JSON columns are serialised by orjson: the standard library's ``json.dumps`` was over half of the
trace writer's CPU (each exchange and span has one to three JSON columns). The text differs only in
spacing and in that non-ASCII characters are kept as UTF-8 instead of ``\\u`` escapes; readers parse
it as before, except that a float NaN or infinity is stored as ``null`` (``json.dumps`` wrote ``NaN``,
which is not JSON). What orjson does not take (an integer past 64 bits) goes through ``json.dumps``.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa


class PlainInsert:
    """An INSERT compiled for the engine's dialect once, with the rows it takes as tuples.

    Each value is what SQLAlchemy would have bound: JSON columns hold JSON text that reads back as
    the text its JSON type would have written on SQLite (:func:`json_text`; ``None`` as JSON ``null``),
    other values go to the driver as they are (``sqlite3`` stores ``bool`` as 0/1, as SQLAlchemy's
    ``Boolean`` does).
    """

    __slots__ = ("_get", "_json", "sql")

    def __init__(self, engine: sa.Engine, statement: Any, table: sa.Table) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        names = compiled.positiontup
        if not names:  # a dialect with named parameters: not this fast path
            raise ValueError(f"{engine.dialect.name} does not use positional parameters")
        self.sql = str(compiled)
        self._get = operator.attrgetter(*names)
        self._json = tuple(i for i, name in enumerate(names) if isinstance(table.c[name].type, sa.JSON))

    def row(self, record: Any) -> tuple[Any, ...]:
        values = list(self._get(record))
        for i in self._json:
            values[i] = json_text(values[i])
        return tuple(values)


def plain(value: Any) -> Any:
    """Mappings as plain dicts: JSON serialisers do not accept ``MappingProxyType`` and friends."""
    return dict(value) if isinstance(value, Mapping) else value


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _mapping(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_text(value: Any) -> str:
    """``value`` as JSON text, read back by ``json.loads`` as ``json.dumps(plain(value))`` would be.

    Mappings of any kind become objects, tuples arrays, non-string keys strings (as ``json.dumps``
    makes them); a value neither takes raises ``TypeError``.
    """
    try:
        return orjson.dumps(value, default=_mapping, option=_JSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(plain(value))
