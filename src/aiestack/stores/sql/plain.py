"""One INSERT compiled once for SQLite, run with plain tuples: the background writers' fast path.

SQLAlchemy's per-row work in ``executemany`` (parameter dicts, bind processors, statement cache
lookups) costs several times what SQLite itself does, and the writer threads hold the GIL the
server's event loop needs. The stores use this on SQLite for their per-request rows (exchanges,
spans, conversation turns).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa


class PlainInsert:
    """An INSERT compiled for the engine's dialect once, with the rows it takes as tuples.

    Each value is what SQLAlchemy would have bound: JSON columns are serialised as its JSON type
    does on SQLite (``json.dumps``, ``None`` as JSON ``null``), other values go to the driver as
    they are (``sqlite3`` stores ``bool`` as 0/1, as SQLAlchemy's ``Boolean`` does).
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
            values[i] = json.dumps(plain(values[i]))
        return tuple(values)


def plain(value: Any) -> Any:
    """Mappings as plain dicts: JSON serialisers do not accept ``MappingProxyType`` and friends."""
    return dict(value) if isinstance(value, Mapping) else value
